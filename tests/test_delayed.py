"""Dispatcher.dispatch_later: delays, the timer thread, full pools, cancellation, handles, bad input."""

from __future__ import annotations

import gc
import logging
import math
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from jobdispatch import DelayedJob, Dispatcher, DispatcherClosed, PoolConfig, UnknownPriority
from support import LONG, WAIT, Kit, gated, wait_for


class Stamp:
    """A job that records when and where it ran."""

    def __init__(self, priority: int = 0) -> None:
        self._priority = priority
        self.at: list[float] = []
        self.thread: list[str] = []
        self.done = threading.Event()

    def do(self) -> None:
        self.at.append(time.monotonic())
        self.thread.append(threading.current_thread().name)
        self.done.set()

    def priority(self) -> int:
        return self._priority

    def __repr__(self) -> str:
        return "<Stamp>"


class Payload:
    """Something a job refers to, whose collection a test can watch."""


class Holder:
    """A job that keeps a reference to ``target``."""

    def __init__(self, target: object) -> None:
        self.target = target

    def __call__(self) -> None:
        pass


class TestDispatchLater:
    def test_runs_no_earlier_than_its_delay(self, kit: Kit) -> None:
        """A delayed job does not run before its delay has passed."""
        d = kit.dispatcher(1)
        job = Stamp()
        before = time.monotonic()
        d.dispatch_later(0.1, job)
        assert job.done.wait(WAIT)
        assert job.at[0] - before >= 0.1

    def test_zero_delay_runs(self, kit: Kit) -> None:
        """delay=0 is valid (go-dispatcher refused it) and the job runs."""
        d = kit.dispatcher(1)
        job = Stamp()
        d.dispatch_later(0, job)
        assert job.done.wait(WAIT)

    def test_routing_like_dispatch(self, kit: Kit) -> None:
        """A delayed Job goes to its priority() pool; priority= overrides it; callables need priority=."""
        d = kit.dispatcher({0: 1, 1: 1}, name="test-dl")
        by_method, overridden = Stamp(1), Stamp(1)
        names: list[str] = []
        d.dispatch_later(0, by_method)
        d.dispatch_later(0, overridden, priority=0)
        d.dispatch_later(0, lambda: names.append(threading.current_thread().name), priority=1)
        assert d.wait(WAIT)
        assert by_method.thread[0].startswith("test-dl-p1-")
        assert overridden.thread[0].startswith("test-dl-p0-")
        assert names[0].startswith("test-dl-p1-")

    def test_counted_as_delayed_until_due(self, kit: Kit) -> None:
        """A job whose time has not come shows in stats().delayed, not queued or busy."""
        d = kit.dispatcher({0: 1, 1: 1})
        d.dispatch_later(LONG, lambda: None, priority=0)
        stats = d.stats(0)
        assert (stats.delayed, stats.queued, stats.busy) == (1, 0, 0)
        assert d.stats(1).delayed == 0
        assert "p0 0/1 busy, 1 delayed" in repr(d)

    def test_never_blocks_on_a_full_pool(self, kit: Kit) -> None:
        """dispatch_later returns at once even when the pool is full."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        for _ in range(100):
            d.dispatch_later(0, lambda: None)
        wait_for(lambda: d.stats(0).delayed == 100, "100 delayed jobs")
        gate.set()
        assert d.wait(WAIT)
        assert d.stats(0).completed == 101

    def test_long_delay_does_not_hold_up_short_one(self, kit: Kit) -> None:
        """A job delayed for a long time does not hold up a later, shorter one."""
        d = kit.dispatcher(1)
        slow, fast = Stamp(), Stamp()
        d.dispatch_later(LONG, slow)
        d.dispatch_later(0.01, fast)
        assert fast.done.wait(WAIT)
        assert not slow.done.is_set()
        assert d.stats(0).delayed == 1

    def test_long_delay_does_not_hold_up_other_work(self, kit: Kit) -> None:
        """A long-delayed job holds up neither plain dispatch to its pool nor another pool."""
        d = kit.dispatcher({0: 1, 1: 1})
        d.dispatch_later(LONG, Stamp(0))
        same, other, other_later = Stamp(0), Stamp(1), Stamp(1)
        d.dispatch(same)
        d.dispatch(other)
        d.dispatch_later(0, other_later)
        for job in (same, other, other_later):
            assert job.done.wait(WAIT)
        assert d.stats(0).delayed == 1

    def test_due_job_on_full_pool_does_not_stall_the_timer(self, kit: Kit) -> None:
        """A job that falls due on a full pool waits there; the timer goes on with other pools."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0), PoolConfig(1, 1)])
        gate = kit.gate()
        d.dispatch(gated(gate), priority=0)
        stuck, free = Stamp(0), Stamp(1)
        d.dispatch_later(0, stuck)
        d.dispatch_later(0.01, free)
        assert free.done.wait(WAIT)
        assert not stuck.done.is_set()
        assert d.stats(0).delayed == 1
        gate.set()
        assert stuck.done.wait(WAIT)
        assert d.stats(0).delayed == 0

    def test_due_job_goes_ahead_of_blocked_producers(self, kit: Kit) -> None:
        """When a full pool frees a place, a due delayed job takes it before a blocked producer."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0), PoolConfig(1, 1)])
        gate = kit.gate()
        d.dispatch(gated(gate), priority=0)
        order: list[str] = []
        marker = threading.Event()
        d.dispatch_later(0, lambda: order.append("delayed"), priority=0)
        # Released by the same timer after the job above: once it ran, the
        # delayed job is waiting in pool 0 for room.
        d.dispatch_later(0, marker.set, priority=1)
        assert marker.wait(WAIT)
        about_to = threading.Event()

        def produce() -> None:
            about_to.set()
            d.dispatch(lambda: order.append("producer"), priority=0)

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        assert about_to.wait(WAIT)
        producer.join(0.05)
        gate.set()
        producer.join(WAIT)
        assert not producer.is_alive()
        assert d.wait(WAIT)
        assert order == ["delayed", "producer"]

    def test_many_delayed_jobs_all_run(self, kit: Kit) -> None:
        """500 delayed jobs with mixed delays on two pools all run exactly once."""
        d = kit.dispatcher({0: 4, 1: 2})
        lock = threading.Lock()
        ran = {0: 0, 1: 0}

        def job(priority: int) -> Callable[[], None]:
            def run() -> None:
                with lock:
                    ran[priority] += 1

            return run

        for i in range(500):
            d.dispatch_later((i % 7) / 1000, job(i % 2), priority=i % 2)
        assert d.wait(WAIT)
        assert ran == {0: 250, 1: 250}
        assert d.stats(0).delayed == d.stats(1).delayed == 0

    def test_wait_includes_delayed_jobs(self, kit: Kit) -> None:
        """wait() returns only once the delayed jobs dispatched before it have run."""
        d = kit.dispatcher(1)
        job = Stamp()
        before = time.monotonic()
        d.dispatch_later(0.05, job)
        assert d.wait(WAIT)
        assert job.done.is_set()
        assert job.at[0] - before >= 0.05

    def test_one_named_daemon_timer_thread(self, kit: Kit) -> None:
        """Delayed jobs share one daemon timer thread named '<name>-timer'."""
        before = {t for t in threading.enumerate() if t.name == "test-tm-timer"}
        assert before == set()
        d = kit.dispatcher(1, name="test-tm")
        for _ in range(20):
            d.dispatch_later(LONG, lambda: None)
        timers = [t for t in threading.enumerate() if t.name == "test-tm-timer"]
        assert len(timers) == 1
        assert timers[0].daemon
        d.finalize(cancel_pending=True)
        assert not timers[0].is_alive()

    def test_no_timer_thread_without_delayed_jobs(self, kit: Kit) -> None:
        """A dispatcher that never delays a job starts no timer thread."""
        d = kit.dispatcher(1, name="test-nt")
        d.dispatch(lambda: None)
        assert d.wait(WAIT)
        assert not [t for t in threading.enumerate() if t.name == "test-nt-timer"]

    def test_failure_goes_to_on_error(self, kit: Kit) -> None:
        """A delayed job that raises goes to on_error and counts as failed."""
        seen: list[tuple[object, BaseException]] = []
        d = kit.dispatcher(1, on_error=lambda job, exc: seen.append((job, exc)))
        error = ValueError("late")

        def fail() -> None:
            raise error

        d.dispatch_later(0, fail)
        assert d.wait(WAIT)
        assert seen == [(fail, error)]
        assert d.stats(0).failed == 1

    def test_finalize_waits_for_delayed_jobs(self) -> None:
        """finalize() without cancel_pending runs the delayed jobs first."""
        d = Dispatcher(1)
        job = Stamp()
        d.dispatch_later(0.05, job)
        d.finalize()
        assert job.done.is_set()

    def test_finalize_cancel_pending_drops_delayed_jobs(self) -> None:
        """finalize(cancel_pending=True) cancels delayed jobs not yet due and counts them."""
        d = Dispatcher({0: 1, 1: 1})
        jobs = [Stamp(i % 2) for i in range(6)]
        for job in jobs:
            d.dispatch_later(LONG, job)
        d.finalize(cancel_pending=True)
        assert not any(job.done.is_set() for job in jobs)
        assert [(d.stats(p).cancelled, d.stats(p).delayed) for p in (0, 1)] == [(3, 0), (3, 0)]

    def test_finalize_cancel_pending_drops_due_jobs_waiting_for_room(self, kit: Kit) -> None:
        """finalize(cancel_pending=True) also cancels due delayed jobs that wait for room."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0), PoolConfig(1, 1)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started), priority=0)
        assert started.wait(WAIT)  # running, not queued: cancel_pending must not drop it
        stuck = Stamp(0)
        marker = threading.Event()
        d.dispatch_later(0, stuck)
        d.dispatch_later(0, marker.set, priority=1)
        assert marker.wait(WAIT)
        with pytest.raises(TimeoutError):
            d.finalize(cancel_pending=True, timeout=0.01)
        gate.set()
        d.finalize()
        assert not stuck.done.is_set()
        assert (d.stats(0).cancelled, d.stats(0).delayed, d.stats(0).completed) == (1, 0, 1)


class TestDispatchLaterErrors:
    @pytest.mark.parametrize(
        ("delay", "error", "message"),
        [
            (-1, ValueError, r"^delay must be >= 0, got -1$"),
            (-0.001, ValueError, r"^delay must be >= 0, got -0\.001$"),
            (math.nan, ValueError, r"^delay must be >= 0, got nan$"),
            (math.inf, ValueError, r"^delay must be a finite number of seconds >= 0, got inf$"),
            ("1", TypeError, r"^delay must be a number of seconds, got '1'$"),
            (True, TypeError, r"^delay must be a number of seconds, got True$"),
            ([1], TypeError, r"^delay must be a number of seconds, got \[1\]$"),
        ],
    )
    def test_bad_delay(self, kit: Kit, delay: object, error: type[Exception], message: str) -> None:
        """A bad delay is refused with a message naming it; nothing is scheduled."""
        d = kit.dispatcher(1, name="test-bd")
        with pytest.raises(error, match=message):
            d.dispatch_later(delay, lambda: None)  # type: ignore[arg-type]
        assert d.stats(0).delayed == 0
        assert not [t for t in threading.enumerate() if t.name == "test-bd-timer"]

    def test_none_delay_is_a_type_error(self, kit: Kit) -> None:
        """delay=None is not a number: TypeError whose message does not offer None as valid."""
        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=r"^delay must be a number of seconds, got None$"):
            d.dispatch_later(None, lambda: None)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("job", "message"),
        [
            (5, r"^job must be a Job or a callable, got 5$"),
            (None, r"^job must be a Job or a callable, got None$"),
        ],
    )
    def test_bad_job(self, kit: Kit, job: object, message: str) -> None:
        """A delayed job that is neither a Job nor callable is a TypeError."""
        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=message):
            d.dispatch_later(0, job)  # type: ignore[arg-type]
        assert d.stats(0).delayed == 0

    def test_bad_priority(self, kit: Kit) -> None:
        """A bad or unknown priority is refused at the call, not when the job falls due."""
        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(TypeError, match=r"^priority must be an int, got '1'$"):
            d.dispatch_later(0, lambda: None, priority="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^priority must be an int, got True$"):
            d.dispatch_later(0, lambda: None, priority=True)
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 9; the priorities are \(0, 1\)$"):
            d.dispatch_later(0, lambda: None, priority=9)
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 5; the priorities are \(0, 1\)$"):
            d.dispatch_later(0, Stamp(5))
        with pytest.raises(TypeError, match=r"^priority is required for <function .+>: the dispatcher has 2 pools"):
            d.dispatch_later(0, lambda: None)
        assert d.stats(0).delayed == d.stats(1).delayed == 0

    def test_priority_method_returning_non_int(self, kit: Kit) -> None:
        """A delayed Job whose priority() is not an int is a TypeError naming the job."""

        class Odd(Stamp):
            def priority(self) -> Any:
                return "high"

        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(TypeError, match=r"^<Stamp>\.priority\(\) must be an int, got 'high'$"):
            d.dispatch_later(0, Odd())

    def test_after_finalize(self) -> None:
        """dispatch_later after finalize raises DispatcherClosed."""
        d = Dispatcher(1)
        d.finalize()
        with pytest.raises(DispatcherClosed, match=r"^cannot dispatch after finalize\(\) was called$"):
            d.dispatch_later(0, lambda: None)

    def test_bad_delay_checked_before_closed(self) -> None:
        """A bad delay is reported as such even on a finalized dispatcher."""
        d = Dispatcher(1)
        d.finalize()
        with pytest.raises(ValueError, match=r"^delay must be >= 0, got -1$"):
            d.dispatch_later(-1, lambda: None)


class TestGarbageCollectedWithDelayed:
    def test_collected_dispatcher_cancels_delayed_with_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        """A dispatcher dropped without finalize cancels its delayed jobs, logs a warning, stops its threads."""
        job = Stamp()
        d = Dispatcher(1, name="test-gcd")
        d.dispatch(lambda: None)
        d.dispatch_later(LONG, job)
        threads = [t for t in threading.enumerate() if t.name.startswith("test-gcd-")]
        assert len(threads) == 2
        with caplog.at_level(logging.WARNING, logger="jobdispatch"):
            del d
            gc.collect()
        for thread in threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in threads)
        assert not job.done.is_set()
        messages = [r.getMessage() for r in caplog.records if r.name == "jobdispatch"]
        assert messages == ["a dispatcher was garbage-collected without finalize(): 1 delayed jobs cancelled"]


class TestDelayedJobHandle:
    def test_dispatch_later_returns_a_handle_with_its_due_time(self, kit: Kit) -> None:
        """dispatch_later returns a DelayedJob whose due is the monotonic time the job falls due."""
        d = kit.dispatcher(1)
        before = time.monotonic()
        handle = d.dispatch_later(LONG, lambda: None)
        after = time.monotonic()
        assert isinstance(handle, DelayedJob)
        assert before + LONG <= handle.due <= after + LONG
        assert not handle.done()
        assert not handle.cancelled()

    def test_repr_says_what_and_when(self, kit: Kit) -> None:
        """The repr names the job and says when it is due, or what became of it."""
        d = kit.dispatcher(1)
        gate, started = kit.gate(), threading.Event()

        def slow() -> None:
            started.set()
            gate.wait(WAIT)

        far = d.dispatch_later(LONG, Stamp())
        assert re.fullmatch(r"<jobdispatch\.DelayedJob Stamp object due in 60 s>", repr(far))
        running = d.dispatch_later(0, slow)
        assert started.wait(WAIT)
        assert repr(running) == f"<jobdispatch.DelayedJob {slow.__qualname__} running>"
        gate.set()
        assert far.cancel()
        assert repr(far) == "<jobdispatch.DelayedJob Stamp object cancelled>"
        assert d.wait(WAIT)
        assert repr(running) == f"<jobdispatch.DelayedJob {slow.__qualname__} done>"

    def test_cancel_before_due_counts_at_once(self, kit: Kit) -> None:
        """cancel() of a job not yet due returns True; it is counted cancelled and released by wait() at once."""
        d = kit.dispatcher(1)
        job = Stamp()
        handle = d.dispatch_later(LONG, job)
        assert handle.cancel() is True
        stats = d.stats(0)
        assert (stats.delayed, stats.cancelled) == (0, 1)
        assert d.wait(0)  # nothing left to wait for
        assert handle.cancelled()
        assert handle.done()
        assert not job.done.is_set()

    def test_cancel_twice_returns_false(self, kit: Kit) -> None:
        """A second cancel() returns False and counts nothing more."""
        d = kit.dispatcher(1)
        handle = d.dispatch_later(LONG, lambda: None)
        assert handle.cancel()
        assert not handle.cancel()
        assert d.stats(0).cancelled == 1

    def test_cancel_after_the_job_ran_returns_false(self, kit: Kit) -> None:
        """cancel() of a job that ran returns False; done() is True and cancelled() False."""
        d = kit.dispatcher(1)
        handle = d.dispatch_later(0, lambda: None)
        assert d.wait(WAIT)
        assert not handle.cancel()
        assert handle.done()
        assert not handle.cancelled()
        assert (d.stats(0).completed, d.stats(0).cancelled) == (1, 0)

    def test_cancel_while_running_returns_false(self, kit: Kit) -> None:
        """cancel() of a running job returns False and the job completes."""
        d = kit.dispatcher(1)
        gate, started = kit.gate(), threading.Event()
        handle = d.dispatch_later(0, gated(gate, started))
        assert started.wait(WAIT)
        assert not handle.cancel()
        assert not handle.done()
        gate.set()
        assert d.wait(WAIT)
        assert handle.done()
        assert d.stats(0).completed == 1

    def test_cancel_a_due_job_waiting_for_room(self, kit: Kit) -> None:
        """A due job waiting for room in a full pool is cancelled and counted at once, and never runs."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0), PoolConfig(1, 1)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started), priority=0)
        assert started.wait(WAIT)
        job, marker = Stamp(0), threading.Event()
        handle = d.dispatch_later(0, job)
        d.dispatch_later(0, marker.set, priority=1)  # released after the job above: it waits for room now
        assert marker.wait(WAIT)
        assert d.stats(0).delayed == 1
        assert handle.cancel()
        assert (d.stats(0).delayed, d.stats(0).cancelled) == (0, 1)
        gate.set()
        assert d.wait(WAIT)
        assert not job.done.is_set()
        assert d.stats(0).completed == 1

    def test_cancel_a_job_queued_in_its_pool(self, kit: Kit) -> None:
        """A due job in its pool's queue is cancelled: it never runs, and is counted when a worker reaches it."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=4)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        job = Stamp()
        handle = d.dispatch_later(0, job)
        wait_for(lambda: d.stats(0).queued == 1, "the due job to be queued")
        assert handle.cancel()
        assert handle.cancelled()
        gate.set()
        assert d.wait(WAIT)
        assert not job.done.is_set()
        assert (d.stats(0).cancelled, d.stats(0).completed) == (1, 1)

    def test_cancel_between_the_timer_taking_the_job_and_handing_it_over(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A cancel that comes as the timer hands the job over wins: the job never runs and is counted once."""
        d = kit.dispatcher(1)
        pool = d._pools[0]
        real = pool.submit_due
        handles: list[Any] = []
        known = threading.Event()
        outcomes: list[bool] = []

        def submit_due(item: Any) -> bool:
            # The timer may come here before dispatch_later has returned the handle (a loaded machine).
            assert known.wait(WAIT), "the test never got the handle"
            outcomes.append(handles[0].cancel())  # in the timer thread, between the pop and the hand-over
            return real(item)

        unpatched = type(pool).submit_due
        monkeypatch.setattr(
            type(pool), "submit_due", lambda self, item: submit_due(item) if self is pool else unpatched(self, item)
        )
        job = Stamp()
        handles.append(d.dispatch_later(0.01, job))
        known.set()
        assert d.wait(WAIT)
        assert outcomes == [True]
        assert not job.done.is_set()
        stats = d.stats(0)
        assert (stats.cancelled, stats.completed, stats.delayed) == (1, 0, 0)

    def test_cancel_races_the_timer_exactly_one_wins(self, kit: Kit) -> None:
        """Cancelling jobs as they fall due: each either runs or is cancelled, never both, never neither."""
        d = kit.dispatcher(2)
        lock = threading.Lock()
        ran: set[int] = set()

        def job(i: int) -> Callable[[], None]:
            def run() -> None:
                with lock:
                    ran.add(i)

            return run

        handles = [d.dispatch_later((i % 5) / 2000, job(i)) for i in range(400)]
        cancelled = {i for i, handle in enumerate(handles) if handle.cancel()}
        assert d.wait(WAIT)
        assert cancelled.isdisjoint(ran)
        assert cancelled | ran == set(range(400))
        stats = d.stats(0)
        assert (stats.cancelled, stats.completed, stats.delayed) == (len(cancelled), len(ran), 0)
        assert all(handle.done() for handle in handles)

    def test_cancel_through_a_batch_settles_the_batch(self, kit: Kit) -> None:
        """A batch job cancelled through its handle counts as cancelled in the batch, which ends at once."""
        d = kit.dispatcher(1)
        job = Stamp()
        with pytest.raises(DispatcherClosed, match=r"^1 of 2 jobs in the batch were cancelled$"), d.batch() as batch:
            handle = batch.dispatch_later(LONG, job)
            assert handle.cancel()
            assert (batch.done, batch.total) == (1, 1)
            batch.dispatch(lambda: None)
        assert not job.done.is_set()
        assert d.stats(0).cancelled == 1

    def test_finalize_cancel_pending_marks_handles_cancelled(self) -> None:
        """Jobs cancelled by finalize(cancel_pending=True) show as cancelled on their handles."""
        d = Dispatcher(1)
        handles = [d.dispatch_later(LONG, lambda: None) for _ in range(3)]
        d.finalize(cancel_pending=True, timeout=WAIT)
        assert all(handle.cancelled() for handle in handles)
        assert not any(handle.cancel() for handle in handles)

    def test_finalize_cancel_pending_marks_handed_over_jobs_cancelled_and_drops_them(self, kit: Kit) -> None:
        """Due jobs in the queue or waiting for room, dropped by finalize(cancel_pending=True), show as cancelled."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=1)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        payloads = [Payload(), Payload()]
        gone = [weakref.ref(payload) for payload in payloads]
        queued = d.dispatch_later(0, Holder(payloads[0]))
        wait_for(lambda: d.stats(0).queued == 1, "the first due job to be queued")
        waiting = d.dispatch_later(0, Holder(payloads.pop()))
        del payloads
        wait_for(lambda: d.stats(0).delayed == 1, "the second due job to wait for room")
        with pytest.raises(TimeoutError):
            d.finalize(cancel_pending=True, timeout=0.01)
        gate.set()
        d.finalize(timeout=WAIT)
        assert (d.stats(0).cancelled, d.stats(0).completed) == (2, 1)
        for handle in (queued, waiting):
            assert handle.cancelled()
            assert not handle.cancel()
        assert [ref() for ref in gone] == [None, None]

    def test_handle_after_fork_cannot_cancel(self, kit: Kit) -> None:
        """A handle inherited through fork() cancels nothing in the child."""
        d = kit.dispatcher(1)
        handle = d.dispatch_later(LONG, lambda: None)
        timer, thread = d._scheduler._condition, d._scheduler._thread
        assert thread is not None
        d._forget_after_fork()  # what the child's fork handler does
        try:
            assert handle.cancel() is False
        finally:
            # A child has no timer thread; this process does, waiting (or
            # about to wait) on the condition the fork handler replaced:
            # wake it until it leaves.
            deadline = time.monotonic() + WAIT
            while thread.is_alive() and time.monotonic() < deadline:
                with timer:
                    timer.notify_all()
                thread.join(0.05)


def in_or_called_by_jobdispatch(frame: Any) -> bool:
    """Whether a function entry is one of jobdispatch's, or of a function it calls (where Ctrl-C can strike)."""
    caller = frame.f_back
    return "jobdispatch" in frame.f_code.co_filename or (
        caller is not None and "jobdispatch" in caller.f_code.co_filename
    )


class TestCancelInterrupted:
    """Ctrl-C striking anywhere inside cancel() leaves the job either pending or cancelled, and counted right."""

    def test_interrupt_at_every_point_of_cancel(self, kit: Kit) -> None:
        """Interrupting cancel() at its 1st, 2nd, ... Python call never loses the job or stalls wait()."""
        point = 0
        while True:
            point += 1
            d = kit.dispatcher(1)
            job = Stamp()
            handle = d.dispatch_later(0.2, job)
            calls = 0
            struck: list[str] = []

            def tracer(frame: Any, event: str, arg: Any, point: int = point, struck: list[str] = struck) -> Any:
                nonlocal calls
                if event == "call" and in_or_called_by_jobdispatch(frame):
                    calls += 1
                    if calls == point:
                        struck.append(frame.f_code.co_name)
                        raise KeyboardInterrupt
                return None

            def cancel(handle: Any = handle, tracer: Any = tracer) -> None:
                previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
                sys.settrace(tracer)
                try:
                    handle.cancel()
                except KeyboardInterrupt:
                    pass
                finally:
                    sys.settrace(previous_trace)

            canceller = threading.Thread(target=cancel, name="test-canceller")
            canceller.start()
            canceller.join(WAIT)
            assert not canceller.is_alive()
            assert d.wait(WAIT), f"wait() stalls after an interrupt in {struck}"
            stats = d.stats(0)
            assert stats.delayed == 0
            assert stats.cancelled + stats.completed == 1
            assert job.done.is_set() == (stats.completed == 1)
            assert handle.cancelled() == (stats.cancelled == 1)
            d.finalize(timeout=WAIT)
            if not struck:
                break  # cancel() finished before this point: every point was tried
        assert point > 5  # the sweep went through cancel()'s calls


class TestCancelFromAProgressCallback:
    """A batch's progress callback may cancel the batch's delayed jobs, whatever thread calls it."""

    @pytest.mark.parametrize("caller", ["a worker", "the timer"])
    def test_cancel_in_a_progress_callback_counts_the_job_and_the_batch_ends(self, kit: Kit, caller: str) -> None:
        """cancel() in a progress callback run by a worker or by the timer returns, and the job is counted cancelled."""
        d = kit.dispatcher(2, name="test-progress-cancel")
        later: list[DelayedJob] = []
        outcomes: list[bool] = []
        callers: list[str] = []
        errors: list[BaseException] = []
        job = Stamp()

        def progress(done: int, total: int) -> None:
            callers.append(threading.current_thread().name)
            outcomes.extend(handle.cancel() for handle in later)

        def run_batch() -> None:
            try:
                with d.batch(progress=progress) as batch:
                    if caller == "a worker":
                        later.append(batch.dispatch_later(LONG, job.do))
                        batch.dispatch(lambda: None)  # its end calls progress on its worker
                    else:
                        first = batch.dispatch_later(LONG, job.do)
                        later.append(batch.dispatch_later(LONG, job.do))
                        assert first.cancel()  # the timer counts it, and calls progress
            except BaseException as error:
                errors.append(error)

        runner = threading.Thread(target=run_batch, name="test-batch-runner", daemon=True)
        runner.start()
        runner.join(WAIT)
        assert not runner.is_alive(), "the batch never ended: cancel() in its progress callback deadlocked"
        expected_thread = "test-progress-cancel-p0-" if caller == "a worker" else "test-progress-cancel-timer"
        assert callers[0].startswith(expected_thread)
        assert outcomes[0] is True
        assert not any(outcomes[1:])
        assert later[0].cancelled()
        cancelled = 1 if caller == "a worker" else 2
        assert [str(error) for error in errors] == [f"{cancelled} of 2 jobs in the batch were cancelled"]
        assert not job.done.is_set()
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.cancelled, stats.delayed) == (cancelled, 0)

    @pytest.mark.parametrize("call", ["wait", "finalize", "batch"])
    def test_a_barrier_in_a_progress_callback_on_the_timer_is_refused(self, kit: Kit, call: str) -> None:
        """wait(), finalize() or a batch from a progress callback the timer runs raise DispatcherError, not hang."""
        d = kit.dispatcher(2, name="test-timer-barrier")
        soon = Stamp()
        outcomes: list[str] = []
        callers: list[str] = []

        def progress(done: int, total: int) -> None:
            callers.append(threading.current_thread().name)
            try:
                if call == "wait":
                    d.wait(0.5)  # would wait for the delayed job that this thread holds up
                elif call == "finalize":
                    d.finalize(timeout=0.5)
                else:
                    d.batch()
            except Exception as error:
                outcomes.append(f"{type(error).__name__}: {error}")
            else:
                outcomes.append("returned")

        with pytest.raises(DispatcherClosed), d.batch(progress=progress) as batch:
            handle = batch.dispatch_later(LONG, lambda: None)
            d.dispatch_later(0.01, soon.do)
            assert handle.cancel()  # the timer counts it and calls progress
        assert callers == ["test-timer-barrier-timer"]
        action = {"wait": "wait", "finalize": "finalize", "batch": "open a batch"}[call]
        assert outcomes == [
            f"DispatcherError: cannot {action} from the dispatcher's timer thread "
            "(in a progress callback or on_error it calls): it would deadlock"
        ]
        assert soon.done.wait(WAIT)
        assert not d.closed


class TestHandleOfABatchJobDroppedByItsBatch:
    @pytest.mark.parametrize("engine", ["threads", "executor backend"])
    @pytest.mark.parametrize("where", ["waiting for room", "queued"])
    def test_the_handle_says_cancelled_and_keeps_nothing(self, kit: Kit, engine: str, where: str) -> None:
        """A due batch job dropped as its batch is left by an exception shows cancelled, and lets go of the job."""
        with ThreadPoolExecutor(1) as executor:
            backend = None if engine == "threads" else executor
            queue_size = 0 if where == "waiting for room" else 1
            d = kit.dispatcher([PoolConfig(0, 1, queue_size=queue_size, backend=backend)])
            gate, started = kit.gate(), threading.Event()
            d.dispatch(gated(gate, started))
            assert started.wait(WAIT)
            payload = Payload()
            gone = weakref.ref(payload)
            with pytest.raises(RuntimeError, match=r"^the block failed$"), d.batch() as batch:
                handle = batch.dispatch_later(0, Holder(payload))
                del payload
                if where == "waiting for room":
                    wait_for(lambda: len(d._pools[0]._due) == 1, "the due job to wait for room")
                else:
                    wait_for(lambda: d.stats(0).queued == 1, "the due job to be queued")
                raise RuntimeError("the block failed")
            gate.set()
            assert d.wait(WAIT)
            stats = d.stats(0)
            assert (stats.completed, stats.cancelled) == (1, 1)
            assert handle.cancelled()
            assert handle.done()
            assert not handle.cancel()
            gc.collect()
            assert gone() is None, "the handle keeps the dropped job"
            d.finalize(timeout=WAIT)
