"""Races: producers against finalize, concurrent barriers and batches, delayed jobs due during finalize.

Every test counts outcomes exactly (no job may be accepted and then dropped),
synchronises with barriers and events only, and joins each thread it starts
with a timeout, so a lost wake-up fails the test instead of hanging it.
"""

from __future__ import annotations

import gc
import itertools
import linecache
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, DispatcherError, PoolConfig, PoolFull, _threads

WAIT = 10.0  # seconds to wait for a state that should come at once; the test fails after that

_names = itertools.count()


def unique(prefix: str) -> str:
    """A dispatcher name no other test uses, so its threads can be found by name."""
    return f"test-{prefix}-{next(_names)}"


class Counter:
    """A thread-safe count of calls that sets ``reached`` at ``threshold``; dispatchable as a job."""

    def __init__(self, threshold: int = 0) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.threshold = threshold
        self.reached = threading.Event()

    def __call__(self) -> None:
        with self._lock:
            self.value += 1
            if self.value >= self.threshold:
                self.reached.set()


def run_threads(targets: list[Callable[[], None]], name: str) -> None:
    """Run each target on its own thread, join all within WAIT, and re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(t), name=f"{name}-{i}") for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not [t.name for t in threads if t.is_alive()], "a thread is still blocked"
    if errors:
        raise errors[0]


def assert_threads_gone(prefix: str) -> None:
    """Every thread whose name starts with ``prefix`` ends within WAIT."""
    for thread in threading.enumerate():
        if thread.name.startswith(prefix):
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} still runs"


@pytest.fixture
def made() -> Iterator[list[Dispatcher]]:
    """Dispatchers made by a test, finalized (cancelling what is left) afterwards."""
    dispatchers: list[Dispatcher] = []
    yield dispatchers
    for d in dispatchers:
        d.finalize(cancel_pending=True, timeout=WAIT)


class Tally:
    """Per-producer outcome counts, merged under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts = 0
        self.accepted = 0
        self.refused = 0

    def add(self, attempts: int, accepted: int, refused: int) -> None:
        with self._lock:
            self.attempts += attempts
            self.accepted += accepted
            self.refused += refused


class TestProducersVersusFinalize:
    @pytest.mark.parametrize("cancel", [False, True], ids=["drain", "cancel"])
    @pytest.mark.parametrize("mode", ["dispatch", "later", "batch"])
    @pytest.mark.parametrize("queue_size", [0, 3, 1024])
    def test_every_dispatch_ran_or_was_refused(
        self, made: list[Dispatcher], cancel: bool, mode: str, queue_size: int
    ) -> None:
        """Producers racing finalize: every attempt ran (or was cancelled) or raised DispatcherClosed."""
        for _ in range(3):
            self._producers_round(made, cancel, mode, queue_size)

    def _producers_round(self, made: list[Dispatcher], cancel: bool, mode: str, queue_size: int) -> None:
        name = unique("race-pf")
        d = Dispatcher([PoolConfig(0, 2, queue_size), PoolConfig(1, 1, queue_size)], name=name)
        made.append(d)
        ran = Counter(threshold=60)
        tally = Tally()
        refusals: list[DispatcherClosed] = []
        producers = 5
        start = threading.Barrier(producers + 1, timeout=WAIT)

        def produce(index: int) -> None:
            attempts = accepted = 0
            batch = d.batch().__enter__() if mode == "batch" else None
            start.wait()
            try:
                while True:
                    attempts += 1
                    try:
                        if mode == "later":
                            d.dispatch_later(0.0005 * (attempts % 3), ran, priority=index % 2)
                        elif batch is not None:
                            batch.dispatch(ran, priority=index % 2, timeout=WAIT)
                        else:
                            d.dispatch(ran, priority=index % 2, timeout=WAIT)
                    except DispatcherClosed:
                        break
                    accepted += 1
            finally:
                tally.add(attempts, accepted, 1)
            if batch is not None:
                try:
                    batch.__exit__(None, None, None)
                except DispatcherClosed as error:  # some of its jobs were cancelled
                    refusals.append(error)

        threads = [threading.Thread(target=produce, args=(i,), name=f"test-producer-{i}") for i in range(producers)]
        for thread in threads:
            thread.start()
        start.wait()
        assert ran.reached.wait(WAIT)
        d.finalize(cancel_pending=cancel, timeout=WAIT)
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive()
        assert_threads_gone(f"{name}-")

        stats = d.stats()
        completed = sum(s.completed for s in stats.values())
        cancelled = sum(s.cancelled for s in stats.values())
        assert all((s.busy, s.queued, s.delayed, s.failed) == (0, 0, 0, 0) for s in stats.values())
        assert tally.refused == producers
        assert tally.attempts == tally.accepted + tally.refused
        assert tally.accepted == completed + cancelled
        assert ran.value == completed
        if not cancel:
            assert cancelled == 0
            assert refusals == []
        assert all(str(e).endswith("jobs in the batch were cancelled") for e in refusals)

    def test_producers_blocked_on_full_pool_are_released(self, made: list[Dispatcher]) -> None:
        """Producers blocked on a full pool when finalize begins either get their job run or DispatcherClosed."""
        for _ in range(5):
            self._blocked_round(made)

    def _blocked_round(self, made: list[Dispatcher]) -> None:
        name = unique("race-full")
        d = Dispatcher([PoolConfig(0, 1, 0)], name=name)
        made.append(d)
        gate = threading.Event()
        started = threading.Event()

        def hold() -> None:
            started.set()
            gate.wait(WAIT)

        d.dispatch(hold)
        assert started.wait(WAIT)
        ran = Counter()
        tally = Tally()
        blocked = threading.Barrier(5, timeout=WAIT)

        def produce() -> None:
            blocked.wait()
            try:
                d.dispatch(ran, timeout=WAIT)  # blocks: the only place is held by `hold`
            except DispatcherClosed:
                tally.add(1, 0, 1)
            else:
                tally.add(1, 1, 0)

        threads = [threading.Thread(target=produce, name=f"test-blocked-{i}") for i in range(4)]
        for thread in threads:
            thread.start()
        blocked.wait()
        closer = threading.Thread(target=lambda: d.finalize(timeout=WAIT), name="test-closer")
        closer.start()
        gate.set()
        closer.join(WAIT)
        for thread in threads:
            thread.join(WAIT)
        assert not closer.is_alive()
        assert not any(t.is_alive() for t in threads)
        assert tally.attempts == 4
        assert tally.accepted == ran.value == d.stats(0).completed - 1
        assert tally.refused == 4 - tally.accepted

    def test_finalize_from_several_threads(self, made: list[Dispatcher]) -> None:
        """finalize called from several threads at once (drain and cancel mixed) returns in each; nothing lost."""
        for _ in range(5):
            self._finalizers_round(made)

    def _finalizers_round(self, made: list[Dispatcher]) -> None:
        name = unique("race-fin")
        d = Dispatcher({0: 3, 1: 1}, name=name)
        made.append(d)
        ran = Counter()
        for i in range(200):
            d.dispatch(ran, priority=i % 2)
        for i in range(20):
            d.dispatch_later(0.0001 * i, ran, priority=i % 2)
        start = threading.Barrier(4, timeout=WAIT)

        def close(cancel: bool) -> None:
            start.wait()
            d.finalize(cancel_pending=cancel, timeout=WAIT)

        run_threads([lambda c=i % 2 == 0: close(c) for i in range(4)], "test-finalizer")
        assert_threads_gone(f"{name}-")
        stats = d.stats()
        assert sum(s.completed + s.cancelled for s in stats.values()) == 220
        assert ran.value == sum(s.completed for s in stats.values())

    def test_wait_racing_finalize_returns(self, made: list[Dispatcher]) -> None:
        """wait() called while another thread finalizes returns (True) instead of hanging."""
        for _ in range(5):
            self._wait_finalize_round(made)

    def _wait_finalize_round(self, made: list[Dispatcher]) -> None:
        name = unique("race-waitfin")
        d = Dispatcher({0: 2}, name=name)
        made.append(d)
        ran = Counter()
        for _ in range(100):
            d.dispatch(ran)
        d.dispatch_later(0.001, ran)
        results: list[bool] = []
        start = threading.Barrier(4, timeout=WAIT)

        def wait() -> None:
            start.wait()
            results.append(d.wait(WAIT))

        def close() -> None:
            start.wait()
            d.finalize(timeout=WAIT)

        run_threads([wait, wait, wait, close], "test-waiter")
        assert results == [True, True, True]
        assert ran.value == 101


class _QueueHeldForOneTake:
    """Stands for a pool's job queue: the worker waits for ``may_take`` before its first take.

    Once ``armed``, the next ``qsize()`` (finalize counting what waits) lets
    the worker take a job and waits until it has run it or dropped it
    (``took``), so the worker reads its job's cancel flag at the worst time:
    after the job was counted as waiting.
    """

    def __init__(self, real: Any, took: threading.Event) -> None:
        self._real = real
        self._took = took
        self._may_take = threading.Event()
        self._first = True
        self.armed = False
        self.worker_waits = threading.Event()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._first:
            self._first = False
            self.worker_waits.set()
            assert self._may_take.wait(WAIT), "finalize never counted the queue"
        return self._real.get(block, timeout)

    def qsize(self) -> int:
        size: int = self._real.qsize()
        if self.armed:
            self.armed = False
            self._may_take.set()
            assert self._took.wait(WAIT), "the worker neither ran nor dropped the job it took"
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class TestCancelWhileAWorkerTakesAJob:
    def test_a_job_counted_as_waiting_is_dropped_not_run(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """finalize(cancel_pending=True): a job counted as waiting is dropped, though a worker takes it at once."""
        d = Dispatcher([PoolConfig(0, 1, 4)], name=unique("race-take"))
        made.append(d)
        took = threading.Event()
        pool = d._pools[0]
        queue = _QueueHeldForOneTake(pool._jobs, took)
        pool._jobs = queue  # type: ignore[assignment]  # before the worker starts and binds its get
        tell_cancelled = _threads.tell_cancelled

        def dropped(fn: Callable[[], object]) -> None:
            took.set()
            tell_cancelled(fn)

        monkeypatch.setattr(_threads, "tell_cancelled", dropped)
        ran = Counter()

        def job() -> None:
            ran()
            took.set()

        d.dispatch(job)  # starts the worker, which waits before it takes the job
        assert queue.worker_waits.wait(WAIT)
        queue.armed = True
        d.finalize(cancel_pending=True, timeout=WAIT)
        s = d.stats(0)
        assert (ran.value, s.completed, s.cancelled) == (0, 0, 1), s


class TestConcurrentBarriers:
    def test_waits_from_several_threads_are_exact(self, made: list[Dispatcher]) -> None:
        """wait() in several threads at once: each returns only after every job dispatched before it ran."""
        d = Dispatcher({0: 3, 1: 2}, name=unique("race-wait"))
        made.append(d)
        lock = threading.Lock()
        dispatched: set[int] = set()
        done: set[int] = set()
        ids = itertools.count()

        def job_for(n: int) -> Callable[[], None]:
            def job() -> None:
                with lock:
                    done.add(n)

            return job

        def worker(index: int) -> None:
            for round_ in range(40):
                for k in range(4):
                    n = next(ids)
                    if k == 3:
                        d.dispatch_later(0.0002 * (round_ % 3), job_for(n), priority=index % 2)
                    else:
                        d.dispatch(job_for(n), priority=(index + k) % 2, timeout=WAIT)
                    with lock:
                        dispatched.add(n)
                with lock:
                    before = set(dispatched)
                assert d.wait(WAIT)
                with lock:
                    missing = before - done
                assert not missing, f"wait() returned before jobs {sorted(missing)[:5]} ran"

        run_threads([lambda i=i: worker(i) for i in range(4)], "test-waiter")
        assert d.wait(WAIT)
        assert len(done) == len(dispatched) == 4 * 40 * 4

    def test_batches_entered_and_left_concurrently(self, made: list[Dispatcher]) -> None:
        """Batches on several threads (nested ones too) each wait for, and report, exactly their own jobs."""
        d = Dispatcher({0: 3, 1: 2}, name=unique("race-batch"))
        made.append(d)

        def failing() -> None:
            raise ValueError("batch job failed on purpose")

        def worker(index: int) -> None:
            for round_ in range(30):
                ran = Counter()
                inner_ran = Counter()
                fails = (index + round_) % 3
                group: BaseExceptionGroup[BaseException] | None = None
                try:
                    with d.batch() as outer:
                        for k in range(6):
                            outer.dispatch(ran, priority=k % 2, timeout=WAIT)
                        outer.dispatch_later(0.0002, ran, priority=index % 2)
                        with d.batch() as inner:  # overlapping batch on the same thread
                            for _ in range(3):
                                inner.dispatch(inner_ran, priority=1, timeout=WAIT)
                        assert inner_ran.value == 3
                        assert (inner.done, inner.total) == (3, 3)
                        for _ in range(fails):
                            outer.dispatch(failing, priority=0, timeout=WAIT)
                except BaseExceptionGroup as error:
                    group = error
                assert ran.value == 7
                assert (outer.done, outer.total) == (7 + fails, 7 + fails)
                if fails:
                    assert group is not None
                    assert len(group.exceptions) == fails
                    assert str(group).startswith(f"{fails} of {7 + fails} jobs in the batch failed")
                else:
                    assert group is None

        run_threads([lambda i=i: worker(i) for i in range(4)], "test-batcher")
        assert d.wait(WAIT)
        stats = d.stats()
        assert sum(s.failed for s in stats.values()) == sum((i + r) % 3 for i in range(4) for r in range(30))

    def test_stats_consistent_under_load(self, made: list[Dispatcher]) -> None:
        """stats() and repr() read from other threads under load always show a possible state."""
        config = [PoolConfig(0, 3, 2), PoolConfig(1, 1, 0)]
        d = Dispatcher(config, name=unique("race-stats"))
        made.append(d)
        stop = threading.Event()
        accepted = Tally()

        def produce(index: int) -> None:
            for i in range(400):
                if i % 10 == 0:
                    d.dispatch_later(0.0001, lambda: None, priority=index % 2)
                else:
                    d.dispatch(lambda: None, priority=index % 2, timeout=WAIT)
                accepted.add(1, 1, 0)

        def poll() -> None:
            while not stop.is_set():
                for c in config:
                    s = d.stats(c.priority)
                    assert 0 <= s.busy <= c.workers
                    assert s.queued >= 0
                    assert s.delayed >= 0
                    assert s.busy + s.queued <= c.workers + c.queue_size
                repr(d)

        poller = threading.Thread(target=poll, name="test-poller")
        poller.start()
        try:
            run_threads([lambda i=i: produce(i) for i in range(3)], "test-producer")
        finally:
            stop.set()
            poller.join(WAIT)
        assert not poller.is_alive()
        assert d.wait(WAIT)
        assert sum(s.completed for s in d.stats().values()) == accepted.accepted == 1200


class TestDelayedDuringFinalize:
    @pytest.mark.parametrize("cancel", [False, True], ids=["drain", "cancel"])
    def test_delayed_jobs_due_while_finalizing(self, cancel: bool) -> None:
        """Delayed jobs whose time comes during finalize run (or are counted cancelled), none is lost."""
        for round_ in range(20):
            name = unique("race-late")
            d = Dispatcher([PoolConfig(0, 2, 1), PoolConfig(1, 1, 0)], name=name)
            ran = Counter()
            for i in range(30):
                d.dispatch_later(0.0001 * ((i + round_) % 7), ran, priority=i % 2)
            for _ in range(3):
                d.dispatch(ran, priority=0, timeout=WAIT)  # keeps the small pools busy as jobs fall due
            d.finalize(cancel_pending=cancel, timeout=WAIT)
            assert_threads_gone(f"{name}-")
            stats = d.stats()
            assert all((s.busy, s.queued, s.delayed) == (0, 0, 0) for s in stats.values())
            assert sum(s.completed + s.cancelled for s in stats.values()) == 33
            assert ran.value == sum(s.completed for s in stats.values())
            if not cancel:
                assert ran.value == 33

    def test_delayed_batch_jobs_cancelled_by_finalize(self) -> None:
        """A batch whose delayed jobs are cancelled by finalize reports them as DispatcherClosed on exit."""
        for _ in range(10):
            name = unique("race-late-batch")
            d = Dispatcher({0: 1}, name=name)
            ran = Counter()
            batch = d.batch().__enter__()
            for i in range(10):
                batch.dispatch_later(0.0002 * i, ran)
            d.finalize(cancel_pending=True, timeout=WAIT)
            cancelled = d.stats(0).cancelled
            assert ran.value + cancelled == 10
            if cancelled:
                with pytest.raises(DispatcherClosed, match=rf"^{cancelled} of 10 jobs in the batch were cancelled$"):
                    batch.__exit__(None, None, None)
            else:
                batch.__exit__(None, None, None)
            assert_threads_gone(f"{name}-")


class TestPlaceFreedBeforeBarrier:
    def test_place_is_free_once_wait_returns(self, made: list[Dispatcher]) -> None:
        """Once wait() returned, the places of the jobs it waited for are free again."""
        d = Dispatcher([PoolConfig(0, 1, 0)], name=unique("race-place"))
        made.append(d)
        # The worker frees a job's place and ends its generation in one
        # hold of the pool's lock, the place first: a wait() that the
        # job's end wakes finds the place free.
        gate = threading.Event()
        main = threading.get_ident()

        def open_gate_once_main_waits() -> None:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                frame = sys._current_frames().get(main)
                files = []
                while frame is not None:
                    files.append(frame.f_code.co_filename)
                    frame = frame.f_back
                if files and files[0].endswith("threading.py") and any("_dispatcher" in f for f in files):
                    break
                time.sleep(0.001)  # polling for a state (main blocked in wait), not guessing a duration
            gate.set()

        opener = threading.Thread(target=open_gate_once_main_waits, name="test-opener")
        try:
            d.dispatch(lambda: gate.wait(WAIT) and None, timeout=WAIT)
            opener.start()
            assert d.wait(WAIT)
            try:
                d.dispatch(lambda: None, timeout=0)
            except PoolFull:
                pytest.fail("PoolFull right after wait() returned, on an empty pool")
        finally:
            gate.set()
            opener.join(WAIT)


class TestBatchExitInterleaving:
    def test_dispatch_during_batch_exit_is_refused_or_awaited(self, made: list[Dispatcher]) -> None:
        """A batch.dispatch racing the batch's exit is refused, or the exit waits for it and reports its failure."""
        d = Dispatcher({0: 2}, name=unique("race-bexit"))
        made.append(d)

        exited = threading.Event()

        def failing() -> None:
            # Still running when a buggy exit returns; a correct exit waits the 0.2 s out.
            exited.wait(0.2)
            raise ValueError("late batch job failed")

        problems: list[str] = []
        point = 0
        while True:
            point += 1
            batch = d.batch().__enter__()
            batch.dispatch(lambda: None, timeout=WAIT)
            outcome: list[str] = []
            helpers: list[threading.Thread] = []
            calls = 0

            def other(batch: Any = batch, outcome: list[str] = outcome) -> None:
                try:
                    batch.dispatch(failing, timeout=WAIT)
                except DispatcherError:
                    outcome.append("refused")
                else:
                    outcome.append("accepted")

            owns_lock = getattr(getattr(batch, "_condition", None), "_is_owned", None)
            if owns_lock is None:
                pytest.skip("Batch no longer guards its state with a threading.Condition")

            # Let another thread dispatch through the batch, to the end, at the k-th function
            # entry of the exiting thread: a deterministic walk over the interleavings a GIL
            # switch allows. Points where the exiting thread holds the batch's lock are
            # skipped: there the other thread would only run once the lock is released.
            def tracer(
                frame: Any,
                event: str,
                arg: Any,
                point: int = point,
                helpers: list[Any] = helpers,
                owns: Any = owns_lock,
            ) -> None:
                nonlocal calls
                if event == "call" and "jobdispatch" in frame.f_code.co_filename:
                    calls += 1
                    if calls == point:
                        helper = threading.Thread(target=other, name="test-late-dispatch")
                        helpers.append(helper)
                        if not owns():
                            helper.start()
                            helper.join(WAIT)

            group: BaseExceptionGroup[BaseException] | None = None
            exited.clear()
            previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(tracer)
            try:
                batch.__exit__(None, None, None)
            except BaseExceptionGroup as error:
                group = error
            finally:
                sys.settrace(previous_trace)
                exited.set()
            for helper in helpers:
                if helper.ident is not None:
                    helper.join(WAIT)
            assert d.wait(WAIT)
            if not helpers:
                break
            if outcome == ["accepted"] and (group is None or len(group.exceptions) != 1):
                problems.append(f"point {point}: accepted, exit raised {group!r}, done {batch.done}/{batch.total}")
        assert point > 1
        assert not problems, problems


class _SetChangedWhileScanned(set):  # type: ignore[type-arg]
    """A batch's set of waiting calls, seen changing while something scans it item by item.

    On a build without the GIL, a worker taking a call out of the set (the
    batch's ``_start``, which takes no lock) can run in the middle of a scan
    of the set by another thread. Here the scan itself makes the change, at
    its first item, so that the interleaving is certain on any build. A copy
    made in one step (``set.copy``) never sees it.
    """

    touched: threading.Event

    def copy(self) -> set[Any]:
        self.touched.set()
        return set.copy(self)

    def __iter__(self) -> Iterator[Any]:
        self.touched.set()
        items = set.__iter__(self)
        yield next(items)
        self.add(object())  # as a worker's remove would change the size
        yield from items


class TestBatchExitScansAtomically:
    def test_exit_is_not_broken_by_a_worker_changing_the_waiting_calls(self, made: list[Dispatcher]) -> None:
        """A batch's exit reads its waiting calls in one step: a worker taking one out meanwhile breaks nothing."""
        d = Dispatcher({0: 1}, name=unique("race-bscan"))
        made.append(d)
        gate = threading.Event()
        ran = Counter()
        opener: threading.Thread | None = None
        try:
            with d.batch() as batch:
                batch.dispatch(lambda: gate.wait(WAIT) and None)
                for _ in range(3):
                    batch.dispatch(ran)
                waiting = _SetChangedWhileScanned(batch._waiting)
                waiting.touched = threading.Event()
                batch._waiting = waiting
                # The jobs wait until the exit has read the set.
                opener = threading.Thread(target=lambda: waiting.touched.wait(WAIT) and gate.set(), name="test-opener")
                opener.start()
        finally:
            gate.set()
            if opener is not None:
                opener.join(WAIT)
        assert ran.value == 3
        assert (batch.total, batch.done) == (4, 4)


def _at_line_of(frame: Any, event: str, file: str, text: str) -> bool:
    """Whether a trace event is a line of ``file`` that contains ``text``."""
    name = frame.f_code.co_filename
    return event == "line" and name.endswith(file) and text in linecache.getline(name, frame.f_lineno)


class TestRegistryReadWhileADispatcherIsCollected:
    def test_exit_hook_lists_open_dispatchers_while_another_is_collected(self, made: list[Dispatcher]) -> None:
        """The exit hook's list of open dispatchers survives a dispatcher collected by another thread meanwhile.

        A thread that drops the last reference to a dispatcher may run the
        registry's clean-up while the exit hook reads the registry. Without
        the GIL the two run at once; here trace functions hold each thread at
        the worst moment: the collecting thread just before it changes the
        registry (after it checked that nobody reads it), the reading thread
        in the middle of its read.
        """
        from jobdispatch import _dispatcher

        kept = Dispatcher({0: 1}, name=unique("race-live-kept"))
        made.append(kept)
        doomed: list[Dispatcher] = [Dispatcher({0: 1}, name=unique("race-live-doomed"))]
        collector_moved = threading.Event()  # at its change of the registry, or done
        reading = threading.Event()  # the reader is in the middle of its read
        changed = threading.Event()

        def collector_trace(frame: Any, event: str, arg: Any) -> Any:
            if _at_line_of(frame, event, "_weakrefset.py", "self.data.discard(item)"):
                collector_moved.set()
                reading.wait(WAIT)
            return collector_trace

        def collect() -> None:
            previous = sys.gettrace()
            sys.settrace(collector_trace)
            try:
                doomed.clear()
                gc.collect()
            finally:
                sys.settrace(previous)
                changed.set()
                collector_moved.set()

        def reader_trace(frame: Any, event: str, arg: Any) -> Any:
            if _at_line_of(frame, event, "_weakrefset.py", "yield") and not reading.is_set():
                reading.set()
                changed.wait(WAIT)
            return reader_trace

        collector = threading.Thread(target=collect, name="test-collector")
        collector.start()
        assert collector_moved.wait(WAIT)
        previous = sys.gettrace()
        sys.settrace(reader_trace)
        try:
            live = _dispatcher._live()
        finally:
            sys.settrace(previous)
            reading.set()
            collector.join(WAIT)
        assert kept in live
