"""Dispatcher.dispatch: jobs and callables, routing, bad input, backpressure, bulkheads, failures."""

from __future__ import annotations

import enum
import functools
import logging
import math
import threading
import time
from typing import Any

import pytest

from jobdispatch import (
    Dispatcher,
    DispatcherClosed,
    DispatcherError,
    Job,
    PoolConfig,
    PoolFull,
    UnknownPriority,
)
from support import WAIT, Counter, Kit, gated, wait_for


class Level(enum.IntEnum):
    LOW = 0
    HIGH = 1


class RecordingJob:
    """A Job that records the thread it ran on and each call of priority()."""

    def __init__(self, priority: object = 0) -> None:
        self._priority = priority
        self.priority_calls: list[str] = []
        self.ran_on: list[str] = []
        self.done = threading.Event()

    def do(self) -> None:
        self.ran_on.append(threading.current_thread().name)
        self.done.set()

    def priority(self) -> Any:
        self.priority_calls.append(threading.current_thread().name)
        return self._priority

    def __repr__(self) -> str:
        return "<J>"


class TestJobsAndCallables:
    def test_job_runs_on_its_priority_pool(self, kit: Kit) -> None:
        """A Job's do() runs once on a worker of the pool its priority() names."""
        d = kit.dispatcher({0: 2, 1: 2}, name="test-d")
        job = RecordingJob(1)
        d.dispatch(job)
        assert d.wait(WAIT)
        assert len(job.ran_on) == 1
        assert job.ran_on[0].startswith("test-d-p1-")

    def test_priority_called_once_in_dispatching_thread(self, kit: Kit) -> None:
        """priority() is called exactly once per dispatch, in the dispatching thread."""
        d = kit.dispatcher({0: 2, 1: 2})
        job = RecordingJob(0)
        d.dispatch(job)
        assert d.wait(WAIT)
        assert job.priority_calls == [threading.current_thread().name]

    def test_job_satisfies_protocol(self) -> None:
        """An object with do() and priority() is a Job; a plain function is not."""
        assert isinstance(RecordingJob(), Job)
        assert not isinstance(lambda: None, Job)

    def test_callable_on_single_pool_needs_no_priority(self, kit: Kit) -> None:
        """On a one-pool dispatcher a plain callable runs without priority=."""
        d = kit.dispatcher(2)
        counter = Counter()
        d.dispatch(counter)
        assert d.wait(WAIT)
        assert counter.value == 1

    def test_callable_with_priority(self, kit: Kit) -> None:
        """A plain callable runs in the pool named by priority=."""
        d = kit.dispatcher({0: 1, 1: 1}, name="test-d")
        names: list[str] = []
        d.dispatch(lambda: names.append(threading.current_thread().name), priority=1)
        assert d.wait(WAIT)
        assert names[0].startswith("test-d-p1-")

    def test_callable_kinds(self, kit: Kit) -> None:
        """Functions, lambdas, partials, bound methods and callable objects are all jobs."""
        d = kit.dispatcher(2)
        counter = Counter()
        results: list[int] = []

        def function() -> None:
            results.append(1)

        d.dispatch(function)
        d.dispatch(lambda: results.append(2))
        d.dispatch(functools.partial(results.append, 3))
        d.dispatch(counter.__call__)
        d.dispatch(counter)
        assert d.wait(WAIT)
        assert sorted(results) == [1, 2, 3]
        assert counter.value == 2

    def test_return_value_is_ignored(self, kit: Kit) -> None:
        """What a callable returns is ignored; the job counts as completed."""
        d = kit.dispatcher(1)
        d.dispatch(lambda: "ignored")
        assert d.wait(WAIT)
        assert d.stats(0).completed == 1

    def test_do_wins_over_call(self, kit: Kit) -> None:
        """An object that is callable and has do() runs do()."""
        calls: list[str] = []

        class Both:
            def do(self) -> None:
                calls.append("do")

            def priority(self) -> int:
                return 0

            def __call__(self) -> None:
                calls.append("call")

        d = kit.dispatcher(1)
        d.dispatch(Both())
        assert d.wait(WAIT)
        assert calls == ["do"]

    def test_priority_override(self, kit: Kit) -> None:
        """priority= overrides job.priority(), which is then not called."""
        d = kit.dispatcher({0: 1, 1: 1}, name="test-d")
        job = RecordingJob(0)
        d.dispatch(job, priority=1)
        assert d.wait(WAIT)
        assert job.priority_calls == []
        assert job.ran_on[0].startswith("test-d-p1-")

    def test_job_without_priority_method_on_single_pool(self, kit: Kit) -> None:
        """An object with only do() runs in the only pool of a one-pool dispatcher."""

        class OnlyDo:
            ran = False

            def do(self) -> None:
                OnlyDo.ran = True

        d = kit.dispatcher(1)
        d.dispatch(OnlyDo())  # type: ignore[arg-type]
        assert d.wait(WAIT)
        assert OnlyDo.ran

    def test_intenum_priorities(self, kit: Kit) -> None:
        """IntEnum members work as priority() results, priority= values and config keys."""
        d = kit.dispatcher({Level.LOW: 1, Level.HIGH: 1}, name="test-d")
        job = RecordingJob(Level.HIGH)
        names: list[str] = []
        d.dispatch(job)
        d.dispatch(lambda: names.append(threading.current_thread().name), priority=Level.LOW)
        assert d.wait(WAIT)
        assert job.ran_on[0].startswith("test-d-p1-")
        assert names[0].startswith("test-d-p0-")
        assert d.stats(Level.HIGH).completed == 1

    def test_intenum_priority_on_int_keyed_dispatcher(self, kit: Kit) -> None:
        """An IntEnum priority finds the pool configured with the equal int."""
        d = kit.dispatcher([PoolConfig(0, 1), PoolConfig(1, 1)])
        d.dispatch(RecordingJob(Level.HIGH))
        assert d.wait(WAIT)
        assert d.stats(1).completed == 1


class TestDispatchErrors:
    @pytest.mark.parametrize(
        ("job", "message"),
        [
            (5, r"^job must be a Job or a callable, got 5$"),
            (None, r"^job must be a Job or a callable, got None$"),
            ("run", r"^job must be a Job or a callable, got 'run'$"),
            ([1], r"^job must be a Job or a callable, got \[1\]$"),
        ],
    )
    def test_not_a_job(self, kit: Kit, job: object, message: str) -> None:
        """A job that is neither a Job nor callable is refused with TypeError naming it."""
        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(TypeError, match=message):
            d.dispatch(job, priority=0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):
            d.dispatch(job)  # type: ignore[arg-type]
        assert d.stats(0).completed + d.stats(0).queued + d.stats(0).busy == 0

    def test_not_a_job_with_failing_repr(self, kit: Kit) -> None:
        """The TypeError for a non-job still names it when its repr raises."""

        class BadRepr:
            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        d = kit.dispatcher(1)
        with pytest.raises(
            TypeError, match=r"^job must be a Job or a callable, got <.*BadRepr object at 0x[0-9a-f]+ \(repr failed\)>$"
        ):
            d.dispatch(BadRepr())  # type: ignore[arg-type]

    def test_non_callable_do(self, kit: Kit) -> None:
        """An object whose do is not callable, and that is not callable itself, is refused."""

        class NotRunnable:
            do = 5

            def __repr__(self) -> str:
                return "<NR>"

        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=r"^job must be a Job or a callable, got <NR>$"):
            d.dispatch(NotRunnable())  # type: ignore[arg-type]

    def test_callable_without_priority_on_multi_pool(self, kit: Kit) -> None:
        """A plain callable without priority= on a multi-pool dispatcher is a TypeError listing the pools."""
        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(
            TypeError, match=r"^priority is required for <function .+>: the dispatcher has 2 pools \(0, 1\)$"
        ):
            d.dispatch(lambda: None)

    def test_job_without_priority_method_on_multi_pool(self, kit: Kit) -> None:
        """An object with only do() needs priority= on a multi-pool dispatcher."""

        class OnlyDo:
            def do(self) -> None:
                pass

            def __repr__(self) -> str:
                return "<OnlyDo>"

        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(
            TypeError, match=r"^priority is required for <OnlyDo>: the dispatcher has 2 pools \(0, 1\)$"
        ):
            d.dispatch(OnlyDo())  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("priority", "message"),
        [
            ("1", r"^priority must be an int, got '1'$"),
            (1.5, r"^priority must be an int, got 1\.5$"),
            (1.0, r"^priority must be an int, got 1\.0$"),
            (True, r"^priority must be an int, got True$"),
            ([0], r"^priority must be an int, got \[0\]$"),
        ],
    )
    def test_bad_priority_type(self, kit: Kit, priority: object, message: str) -> None:
        """A priority= that is not an int (bools included) is a TypeError naming it."""
        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(TypeError, match=message):
            d.dispatch(lambda: None, priority=priority)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):
            d.dispatch(RecordingJob(0), priority=priority)  # type: ignore[arg-type]

    def test_unknown_priority(self, kit: Kit) -> None:
        """A priority with no pool raises UnknownPriority (a LookupError) listing the pools."""
        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 99; the priorities are \(0, 1\)$"):
            d.dispatch(lambda: None, priority=99)
        with pytest.raises(LookupError, match=r"^no pool has priority -1; the priorities are \(0, 1\)$"):
            d.dispatch(RecordingJob(-1))
        with pytest.raises(DispatcherError):
            d.dispatch(RecordingJob(0), priority=7)

    def test_unknown_priority_on_single_pool(self, kit: Kit) -> None:
        """A one-pool dispatcher refuses a Job whose priority() names another pool."""
        d = kit.dispatcher(1)
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 3; the priorities are \(0,\)$"):
            d.dispatch(RecordingJob(3))

    @pytest.mark.parametrize(
        ("value", "shown"),
        [("1", "'1'"), (1.5, r"1\.5"), (None, "None"), (True, "True")],
    )
    def test_priority_method_returning_non_int(self, kit: Kit, value: object, shown: str) -> None:
        """A priority() that returns a non-int is a TypeError naming the job and the value."""
        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(TypeError, match=rf"^<J>\.priority\(\) must be an int, got {shown}$"):
            d.dispatch(RecordingJob(value))

    def test_priority_method_raising_propagates(self, kit: Kit) -> None:
        """An exception from priority() propagates from dispatch and nothing is dispatched."""

        class Broken:
            def do(self) -> None:
                pass

            def priority(self) -> int:
                raise KeyError("no priority")

        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(KeyError, match=r"no priority"):
            d.dispatch(Broken())
        assert d.wait(0)

    @pytest.mark.parametrize(
        ("timeout", "error", "message"),
        [
            ("1", TypeError, r"^timeout must be a number of seconds or None, got '1'$"),
            (True, TypeError, r"^timeout must be a number of seconds or None, got True$"),
            ([1], TypeError, r"^timeout must be a number of seconds or None, got \[1\]$"),
            (-1, ValueError, r"^timeout must be >= 0, got -1$"),
            (-0.5, ValueError, r"^timeout must be >= 0, got -0\.5$"),
            (math.nan, ValueError, r"^timeout must be >= 0, got nan$"),
        ],
    )
    def test_bad_timeout(self, kit: Kit, timeout: object, error: type[Exception], message: str) -> None:
        """A bad timeout is refused, even when the pool has room, with a message naming it."""
        d = kit.dispatcher(1)
        with pytest.raises(error, match=message):
            d.dispatch(lambda: None, timeout=timeout)  # type: ignore[arg-type]
        assert d.wait(0)

    def test_infinite_timeout(self, kit: Kit) -> None:
        """timeout=inf on a full pool either waits like None or is refused up front with ValueError."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        outcome: list[BaseException | None] = []

        def produce() -> None:
            try:
                d.dispatch(lambda: None, timeout=math.inf)
            except BaseException as error:
                outcome.append(error)
            else:
                outcome.append(None)

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        producer.join(0.05)
        gate.set()
        producer.join(WAIT)
        assert len(outcome) == 1
        error = outcome[0]
        assert error is None or (isinstance(error, ValueError) and str(error).startswith("timeout")), repr(error)

    def test_dispatch_after_finalize(self) -> None:
        """dispatch after finalize raises DispatcherClosed, also a RuntimeError."""
        d = Dispatcher(1)
        d.finalize()
        with pytest.raises(DispatcherClosed, match=r"^cannot dispatch after finalize\(\) was called$"):
            d.dispatch(lambda: None)
        with pytest.raises(RuntimeError, match=r"^cannot dispatch after finalize\(\) was called$"):
            d.dispatch(RecordingJob(0), timeout=0)


class TestTimeoutAndBackpressure:
    def test_timeout_zero_on_full_pool(self, kit: Kit) -> None:
        """timeout=0 raises PoolFull at once when the pool has no room; the job never runs."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        refused = Counter()
        with pytest.raises(PoolFull, match=r"^pool 0 is full \(\d+ workers \+ queue_size \d+\)$"):
            d.dispatch(refused, timeout=0)
        gate.set()
        assert d.wait(WAIT)
        assert refused.value == 0
        assert d.stats(0).completed == 1

    def test_timeout_zero_with_room(self, kit: Kit) -> None:
        """timeout=0 dispatches normally when the pool has room."""
        d = kit.dispatcher(1)
        counter = Counter()
        d.dispatch(counter, timeout=0)
        assert d.wait(WAIT)
        assert counter.value == 1

    def test_positive_timeout_on_full_pool(self, kit: Kit) -> None:
        """timeout>0 raises PoolFull once the pool stayed full that long (never earlier)."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        started = time.monotonic()
        with pytest.raises(PoolFull, match=r"^pool 0 stayed full \(1 workers \+ queue_size 0\) for 0\.05 s$"):
            d.dispatch(lambda: None, timeout=0.05)
        assert time.monotonic() - started >= 0.045
        assert isinstance(PoolFull("x"), DispatcherError)

    def test_positive_timeout_succeeds_when_room_frees(self, kit: Kit) -> None:
        """A dispatch waiting with a timeout goes through when a place frees in time."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        counter = Counter()
        about_to = threading.Event()
        errors: list[BaseException] = []

        def produce() -> None:
            about_to.set()
            try:
                d.dispatch(counter, timeout=WAIT)
            except BaseException as error:
                errors.append(error)

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        assert about_to.wait(WAIT)
        producer.join(0.05)
        assert producer.is_alive()
        gate.set()
        producer.join(WAIT)
        assert not producer.is_alive()
        assert errors == []
        assert d.wait(WAIT)
        assert counter.value == 1

    def test_queue_size_bounds_accepted_jobs(self, kit: Kit) -> None:
        """A pool accepts workers + queue_size jobs; the next one is PoolFull."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=2)])
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started))
        d.dispatch(lambda: None, timeout=0)
        d.dispatch(lambda: None, timeout=0)
        with pytest.raises(PoolFull, match=r"^pool 0 is full \(\d+ workers \+ queue_size \d+\)$"):
            d.dispatch(lambda: None, timeout=0)
        assert started.wait(WAIT)
        stats = d.stats(0)
        assert (stats.busy, stats.queued) == (1, 2)
        assert d.queued_jobs(0) == 2
        gate.set()
        assert d.wait(WAIT)
        assert d.stats(0).completed == 3

    def test_queue_size_zero(self, kit: Kit) -> None:
        """With queue_size=0 a dispatch goes through only when a worker is free for the job."""
        d = kit.dispatcher([PoolConfig(0, 2, queue_size=0)])
        first, second = kit.gate(), kit.gate()
        d.dispatch(gated(first))
        d.dispatch(gated(second))
        with pytest.raises(PoolFull):
            d.dispatch(lambda: None, timeout=0)
        wait_for(lambda: d.stats(0).busy == 2, "both workers busy")
        assert d.stats(0).queued == 0
        first.set()
        wait_for(lambda: d.stats(0).completed == 1, "the first job to finish")
        third = kit.gate()  # held, so that its place stays taken (without the GIL a no-op ends at once)
        d.dispatch(gated(third), timeout=0)
        with pytest.raises(PoolFull):
            d.dispatch(lambda: None, timeout=0)
        second.set()
        third.set()
        assert d.wait(WAIT)
        assert d.stats(0).completed == 3

    def test_blocked_producer_released_when_slot_frees(self, kit: Kit) -> None:
        """A producer blocked in dispatch on a full pool goes on once a place frees."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        about_to = threading.Event()
        returned = threading.Event()
        job = Counter()

        def produce() -> None:
            about_to.set()
            d.dispatch(job)
            returned.set()

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        assert about_to.wait(WAIT)
        producer.join(0.05)
        assert producer.is_alive()
        assert not returned.is_set()
        assert job.value == 0
        assert d.stats(0).queued == 0
        gate.set()
        producer.join(WAIT)
        assert returned.is_set()
        assert d.wait(WAIT)
        assert job.value == 1

    def test_producer_stops_at_the_bound(self, kit: Kit) -> None:
        """A fast producer gets exactly workers + queue_size jobs in while the pool is stuck."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=2)])
        gate = kit.gate()
        accepted = Counter()

        def produce() -> None:
            d.dispatch(gated(gate))
            accepted()
            for _ in range(19):
                d.dispatch(lambda: None)
                accepted()

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        wait_for(lambda: accepted.value == 3, "three accepted jobs")
        producer.join(0.05)
        assert producer.is_alive()
        assert accepted.value == 3
        gate.set()
        producer.join(WAIT)
        assert not producer.is_alive()
        assert d.wait(WAIT)
        assert accepted.value == 20
        assert d.stats(0).completed == 20


class TestBulkhead:
    def test_saturated_pool_does_not_hold_up_another(self, kit: Kit) -> None:
        """While pool 0 is full and a producer is blocked on it, pool 1 runs all its jobs."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0), PoolConfig(1, 2)])
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started), priority=0)
        blocked = threading.Thread(target=lambda: d.dispatch(lambda: None, priority=0), name="test-blocked")
        blocked.start()
        assert started.wait(WAIT)
        counter = Counter()
        all_done = threading.Event()

        def job() -> None:
            counter()
            if counter.value == 50:
                all_done.set()

        for _ in range(50):
            d.dispatch(job, priority=1)
        assert all_done.wait(WAIT)
        wait_for(lambda: d.stats(1).completed == 50, "pool 1 to count its jobs")
        assert blocked.is_alive()
        stats0 = d.stats(0)
        assert (stats0.busy, stats0.completed) == (1, 0)
        gate.set()
        blocked.join(WAIT)
        assert not blocked.is_alive()

    def test_failing_pool_does_not_affect_another(self, kit: Kit) -> None:
        """Jobs failing in one pool leave the other pool's jobs and counters untouched."""
        d = kit.dispatcher({0: 2, 1: 2}, on_error=lambda job, exc: None)

        def fail() -> None:
            raise ValueError("boom")

        counter = Counter()
        for _ in range(20):
            d.dispatch(fail, priority=0)
            d.dispatch(counter, priority=1)
        assert d.wait(WAIT)
        assert counter.value == 20
        assert (d.stats(0).failed, d.stats(1).failed, d.stats(1).completed) == (20, 0, 20)

    def test_never_more_threads_than_workers(self, kit: Kit) -> None:
        """At most `workers` jobs of a pool run at once, on at most `workers` threads."""
        d = kit.dispatcher({0: 3}, name="test-limit")
        gate = kit.gate()
        lock = threading.Lock()
        running = 0
        high_water = 0
        names: set[str] = set()

        def job() -> None:
            nonlocal running, high_water
            with lock:
                running += 1
                high_water = max(high_water, running)
                names.add(threading.current_thread().name)
            gate.wait(3 * WAIT)
            with lock:
                running -= 1

        for _ in range(10):
            d.dispatch(job)
        wait_for(lambda: running == 3, "three parked jobs")
        stats = d.stats(0)
        assert (stats.busy, stats.idle, stats.queued) == (3, 0, 7)
        gate.set()
        assert d.wait(WAIT)
        assert high_water == 3
        assert len(names) == 3
        assert len([t for t in threading.enumerate() if t.name.startswith("test-limit-p0-")]) == 3

    def test_threads_start_on_demand(self, kit: Kit) -> None:
        """A large pool starts no thread until used, and reuses one for sequential jobs."""
        before = set(threading.enumerate())
        d = kit.dispatcher({0: 500}, name="test-demand")
        assert set(threading.enumerate()) == before
        for _ in range(5):
            d.dispatch(lambda: None)
            assert d.wait(WAIT)
        assert len([t for t in threading.enumerate() if t.name.startswith("test-demand-p0-")]) == 1


class TestInlineInOwnPool:
    def test_own_full_pool_runs_job_inline(self, kit: Kit) -> None:
        """A job dispatching into its own full pool runs the new job at once on its own thread."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        threads: dict[str, str] = {}
        ran_before_return: list[bool] = []
        inner_done = threading.Event()

        def inner() -> None:
            threads["inner"] = threading.current_thread().name
            inner_done.set()

        def outer() -> None:
            threads["outer"] = threading.current_thread().name
            d.dispatch(inner)
            ran_before_return.append(inner_done.is_set())

        d.dispatch(outer)
        assert d.wait(WAIT)
        assert ran_before_return == [True]
        assert threads["inner"] == threads["outer"]
        assert d.stats(0).completed == 2

    def test_inline_job_without_context_propagation(self, kit: Kit) -> None:
        """With propagate_context=False an inline job runs too, in the worker's own context."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)], propagate_context=False)
        counter = Counter()
        d.dispatch(lambda: d.dispatch(counter))
        assert d.wait(WAIT)
        assert counter.value == 1
        assert d.stats(0).completed == 2

    def test_own_full_pool_with_timeout_zero(self, kit: Kit) -> None:
        """With timeout=0 a job dispatching into its own full pool gets PoolFull."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        errors: list[BaseException] = []

        def outer() -> None:
            try:
                d.dispatch(lambda: None, timeout=0)
            except PoolFull as error:
                errors.append(error)

        d.dispatch(outer)
        assert d.wait(WAIT)
        assert len(errors) == 1
        assert str(errors[0]) == "pool 0 is full (1 workers + queue_size 0)"
        assert d.stats(0).completed == 1

    def test_own_pool_with_room_queues(self, kit: Kit) -> None:
        """A job dispatching into its own pool that has room queues the job for another worker."""
        d = kit.dispatcher([PoolConfig(0, 2, queue_size=0)])
        inner_started = threading.Event()
        threads: dict[str, str] = {}

        def inner() -> None:
            threads["inner"] = threading.current_thread().name
            inner_started.set()

        def outer() -> None:
            threads["outer"] = threading.current_thread().name
            d.dispatch(inner)
            inner_started.wait(WAIT)

        d.dispatch(outer)
        assert d.wait(WAIT)
        assert threads["inner"] != threads["outer"]

    def test_other_full_pool_is_not_inline(self, kit: Kit) -> None:
        """A job dispatching into another full pool of its dispatcher waits (PoolFull on timeout)."""
        d = kit.dispatcher([PoolConfig(0, 1), PoolConfig(1, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate), priority=1)
        errors: list[str] = []

        def outer() -> None:
            for timeout in (0, 0.05):
                try:
                    d.dispatch(lambda: None, priority=1, timeout=timeout)
                except PoolFull as error:
                    errors.append(str(error))

        d.dispatch(outer, priority=0)
        wait_for(lambda: d.stats(0).completed == 1, "the outer job")
        assert errors == [
            "pool 1 is full (1 workers + queue_size 0)",
            "pool 1 stayed full (1 workers + queue_size 0) for 0.05 s",
        ]

    def test_inline_failure_is_reported_and_counted(self, kit: Kit) -> None:
        """An inline job that raises goes to on_error and counts as failed."""
        seen: list[tuple[object, BaseException]] = []
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)], on_error=lambda job, exc: seen.append((job, exc)))
        error = ValueError("inline")

        def inner() -> None:
            raise error

        d.dispatch(lambda: d.dispatch(inner))
        assert d.wait(WAIT)
        assert seen == [(inner, error)]
        assert (d.stats(0).completed, d.stats(0).failed) == (1, 1)


class TestFailures:
    def test_on_error_receives_job_and_exception(self, kit: Kit) -> None:
        """on_error is called as on_error(job, exc) on the worker thread, with the job as dispatched."""
        seen: list[tuple[object, BaseException, str]] = []
        d = kit.dispatcher(
            1, name="test-err", on_error=lambda job, exc: seen.append((job, exc, threading.current_thread().name))
        )
        error = ValueError("boom")

        class Failing:
            def do(self) -> None:
                raise error

            def priority(self) -> int:
                return 0

        job = Failing()

        def function() -> None:
            raise error

        d.dispatch(job)
        d.dispatch(function)
        assert d.wait(WAIT)
        assert [(j, e) for j, e, _ in seen] == [(job, error), (function, error)]
        assert all(name.startswith("test-err-p0-") for _, _, name in seen)
        assert d.stats(0).failed == 2

    def test_failure_logged_without_on_error(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """Without on_error a failure is logged at ERROR on 'jobdispatch' with its traceback."""
        d = kit.dispatcher({0: 1, 3: 1})
        error = ValueError("boom")

        def fail() -> None:
            raise error

        job = RecordingJob(3)
        job.do = fail  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="jobdispatch"):
            d.dispatch(job)
            assert d.wait(WAIT)
        records = [r for r in caplog.records if r.name == "jobdispatch"]
        assert len(records) == 1
        assert records[0].levelno == logging.ERROR
        assert records[0].getMessage() == "job <J> failed in pool 3"
        assert records[0].exc_info is not None
        assert records[0].exc_info[1] is error
        assert d.stats(3).failed == 1

    def test_failure_of_job_with_failing_repr_is_logged(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """A failing job whose repr raises is still logged, with a plain description."""

        class Opaque:
            def __call__(self) -> None:
                raise ValueError("boom")

            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        d = kit.dispatcher(1)
        with caplog.at_level(logging.ERROR, logger="jobdispatch"):
            d.dispatch(Opaque())
            assert d.wait(WAIT)
        messages = [r.getMessage() for r in caplog.records if r.name == "jobdispatch"]
        assert len(messages) == 1
        assert "Opaque object at 0x" in messages[0]
        assert "(repr failed)" in messages[0]

    def test_on_error_raising_is_logged(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """An on_error that raises is logged with its own exception, then the job's failure too; the worker goes on."""
        hook_error = RuntimeError("hook broke")

        def on_error(job: object, exc: BaseException) -> None:
            raise hook_error

        d = kit.dispatcher(1, on_error=on_error)
        job = RecordingJob(0)
        job.do = lambda: 1 / 0  # type: ignore[method-assign, assignment]
        counter = Counter()
        with caplog.at_level(logging.ERROR, logger="jobdispatch"):
            d.dispatch(job)
            d.dispatch(counter)
            assert d.wait(WAIT)
        records = [r for r in caplog.records if r.name == "jobdispatch"]
        assert [r.getMessage() for r in records] == [
            "on_error raised while handling the failure of job <J> in pool 0",
            "job <J> failed in pool 0",
        ]
        assert records[0].exc_info is not None
        assert records[0].exc_info[1] is hook_error
        assert records[1].exc_info is not None
        assert isinstance(records[1].exc_info[1], ZeroDivisionError)
        assert counter.value == 1
        assert d.stats(0).failed == 1

    def test_raising_log_handler_is_swallowed(self, kit: Kit) -> None:
        """A logging handler that raises does not kill the worker; the failure is still counted."""

        class Exploding(logging.Handler):
            def handle(self, record: logging.LogRecord) -> bool:
                raise OSError("disk full")

        handler = Exploding()
        log = logging.getLogger("jobdispatch")
        log.addHandler(handler)
        try:
            d = kit.dispatcher(1)
            d.dispatch(lambda: 1 / 0)
            counter = Counter()
            d.dispatch(counter)
            assert d.wait(WAIT)
        finally:
            log.removeHandler(handler)
        assert counter.value == 1
        assert (d.stats(0).failed, d.stats(0).completed) == (1, 1)

    def test_base_exception_from_job_is_contained(self, kit: Kit) -> None:
        """A job raising a BaseException (not an Exception) is reported and the worker survives."""

        class Stop(BaseException):
            pass

        seen: list[BaseException] = []
        d = kit.dispatcher(1, on_error=lambda job, exc: seen.append(exc))

        def stop() -> None:
            raise Stop

        d.dispatch(stop)
        counter = Counter()
        d.dispatch(counter)
        assert d.wait(WAIT)
        assert len(seen) == 1
        assert isinstance(seen[0], Stop)
        assert counter.value == 1


class TestConcurrentProducers:
    def test_many_producers_exact_counts(self, kit: Kit) -> None:
        """8 threads x 2000 jobs over two pools: every job runs exactly once and is counted."""
        d = kit.dispatcher([PoolConfig(0, 4, queue_size=64), PoolConfig(1, 2, queue_size=16)])
        counters = {0: Counter(), 1: Counter()}
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def produce(n: int) -> None:
            try:
                start.wait(WAIT)
                for i in range(2000):
                    priority = (n + i) % 2
                    d.dispatch(counters[priority], priority=priority)
            except BaseException as error:
                errors.append(error)

        producers = [threading.Thread(target=produce, args=(n,), name=f"test-producer-{n}") for n in range(8)]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join(6 * WAIT)
        assert not any(p.is_alive() for p in producers)
        assert errors == []
        assert d.wait(WAIT)
        assert (counters[0].value, counters[1].value) == (8000, 8000)
        for priority in (0, 1):
            stats = d.stats(priority)
            assert (stats.completed, stats.failed, stats.busy, stats.queued) == (8000, 0, 0, 0)
