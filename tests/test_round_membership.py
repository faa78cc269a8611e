"""Which jobs a barrier and finalize wait for, whatever thread runs them, and who may dispatch while finalize drains.

A job that the dispatching thread runs itself (its pool cannot start a
thread) belongs to a round while it runs, as a queued job does: `wait()`
and `finalize()` on other threads wait for it, and its follow-ups join its
round. While `finalize()` drains, only a thread that runs one of the
dispatcher's jobs right now may dispatch: anything else could come after
the drain found nothing pending, and be left in a queue no worker reads.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from types import FrameType

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, DispatcherError, PoolConfig
from support import WAIT, Kit, on_round_closed, refuse_thread_starts, wait_for


@pytest.fixture
def round_closed(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set each time a barrier has closed the current round."""
    closed = threading.Event()
    on_round_closed(monkeypatch, closed)
    return closed


def in_thread(target: Callable[[], None], name: str) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``target`` on a thread; the list gets what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, errors


class TestJobRunByTheDispatchingThread:
    """Pool 0 cannot start its thread: each dispatch to it runs the job in the dispatching thread."""

    @pytest.fixture
    def d(self, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> Dispatcher:
        refuse_thread_starts(monkeypatch, "test-inline-p0-")
        return kit.dispatcher([PoolConfig(0, 1, 4), PoolConfig(1, 1, 4)], name="test-inline")

    def test_wait_from_another_thread_waits_for_it(self, d: Dispatcher, kit: Kit) -> None:
        """wait() called while the dispatching thread runs the job does not report it done."""
        gate, started = kit.gate(), threading.Event()

        def job() -> None:
            started.set()
            assert gate.wait(WAIT)

        producer, errors = in_thread(lambda: d.dispatch(job, priority=0), "test-producer")
        try:
            assert started.wait(WAIT)
            assert d.wait(0) is False, "wait() saw nothing pending while a dispatched job still ran"
            assert d.stats(0).completed == 0
        finally:
            gate.set()
            producer.join(WAIT)
        assert not producer.is_alive()
        assert not errors, errors
        assert d.wait(WAIT)
        assert d.stats(0).completed == 1

    def test_finalize_accepts_its_follow_up_and_waits_for_both(self, d: Dispatcher) -> None:
        """finalize() drains the job and the follow-up it dispatches once the drain has begun."""
        started, ran, over = threading.Event(), threading.Event(), threading.Event()
        outcome: list[object] = []

        def job() -> None:
            started.set()
            wait_for(lambda: d.closed, "finalize to begin")
            try:
                d.dispatch(ran.set, priority=1)
            except DispatcherClosed as error:
                outcome.append(error)
            else:
                outcome.append("accepted")
            over.set()

        producer, errors = in_thread(lambda: d.dispatch(job, priority=0), "test-producer")
        over_when_finalized: list[bool] = []

        def finalize() -> None:
            d.finalize(timeout=WAIT)
            over_when_finalized.append(over.is_set())

        assert started.wait(WAIT)
        finalizer, finalize_errors = in_thread(finalize, "test-finalizer")
        producer.join(WAIT)
        finalizer.join(2 * WAIT)
        assert not producer.is_alive()
        assert not finalizer.is_alive()
        assert not errors, errors
        assert not finalize_errors, finalize_errors
        assert outcome == ["accepted"], f"a follow-up of a job run by the dispatching thread: {outcome}"
        assert ran.is_set()
        assert over_when_finalized == [True], "finalize() returned while a dispatched job still ran"
        assert (d.stats(0).completed, d.stats(1).completed) == (1, 1)

    def test_wait_inside_it_is_refused(self, d: Dispatcher) -> None:
        """wait() inside such a job raises DispatcherError: it would wait for itself."""
        outcome: list[object] = []

        def job() -> None:
            try:
                outcome.append(d.wait(0))
            except DispatcherError as error:
                outcome.append(error)

        d.dispatch(job, priority=0)
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], DispatcherError), outcome
        assert d.wait(WAIT)


class TestDispatchWhileFinalizeDrains:
    def test_dispatch_from_a_progress_callback_after_the_drain_is_refused(self, kit: Kit) -> None:
        """A batch's progress callback (on a worker, in no job) dispatching as the workers stop: refused, not lost."""
        d = kit.dispatcher([PoolConfig(0, 1, 4)], name="test-drain-progress")
        pool = d._pools[0]
        ran, in_callback = threading.Event(), threading.Event()
        outcome: list[object] = []

        def progress(done: int, total: int) -> None:
            in_callback.set()
            # The drain found nothing pending (this job is counted over) and stops the workers.
            wait_for(lambda: pool._stopping, "finalize to stop the workers")
            try:
                d.dispatch(ran.set)
            except DispatcherClosed as error:
                outcome.append(error)
            else:
                outcome.append("accepted")

        def leave_batch() -> None:
            with d.batch(progress=progress) as b:
                b.dispatch(lambda: None)

        batch_thread, errors = in_thread(leave_batch, "test-batch")
        assert in_callback.wait(WAIT)
        d.finalize(timeout=WAIT)
        batch_thread.join(WAIT)
        assert not batch_thread.is_alive()
        assert not errors, errors
        s = d.stats(0)
        assert (s.queued, s.busy) == (0, 0), f"a job accepted after the drain was never run: {s}"
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], DispatcherClosed), outcome
        assert not ran.is_set()
        assert s.completed == 1


class TestCtrlCAsTheDispatchingThreadCountsItsJob:
    @pytest.mark.parametrize("waits", ["wait", "wait_async"])
    def test_a_barrier_waiting_meanwhile_still_returns(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch, round_closed: threading.Event, waits: str
    ) -> None:
        """Ctrl-C as the main thread, done with a job it ran, wakes the barriers: one waiting elsewhere returns."""
        from jobdispatch import _rounds

        refuse_thread_starts(monkeypatch, "test-inline-ctrl-c-p0-")
        d = kit.dispatcher(1, name="test-inline-ctrl-c")
        results: list[bool] = []

        def barrier() -> None:
            if waits == "wait":
                results.append(d.wait(WAIT))
            else:
                results.append(asyncio.run(d.wait_async(WAIT)))

        def job() -> None:
            waiter, errors = in_thread(barrier, "test-waiter")
            waiters.append((waiter, errors))
            assert round_closed.wait(WAIT)  # the barrier waits for this job's round
            generations = d._open_generations(d._pools[0])
            wait_for(lambda: any(g.done is not None for g in generations), "the barrier to wait")

        waiters: list[tuple[threading.Thread, list[BaseException]]] = []
        code = _rounds.generation_done.__code__

        def tracer(frame: FrameType, event: str, arg: object) -> None:
            if event == "call" and frame.f_code is code:
                raise KeyboardInterrupt  # as Ctrl-C strikes at the call, before the event is set

        previous = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                d.dispatch(job)
        finally:
            sys.settrace(previous)
        assert d.stats(0).completed == 1
        ((waiter, errors),) = waiters
        waiter.join(WAIT + 1)
        assert not waiter.is_alive()
        assert not errors, errors
        assert results == [True], "wait() never saw the round end"

    def test_a_draining_finalize_does_not_reopen_pools_a_cancelling_one_closed(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """finalize() overtaken by finalize(cancel_pending=True): a running job's follow-ups are refused."""
        from jobdispatch._pool import Pool

        d = kit.dispatcher([PoolConfig(0, 1, 4)], name="test-drain-overtaken")
        gate, started = kit.gate(), threading.Event()
        outcome: list[object] = []

        def job() -> None:
            started.set()
            assert gate.wait(WAIT)
            try:
                outcome.append(d.dispatch_many([lambda: None, lambda: None]))
            except DispatcherClosed as error:
                outcome.append(error)

        d.dispatch(job)
        assert started.wait(WAIT)
        closed_to_all, closed_draining = threading.Event(), threading.Event()
        real_close = Pool.close

        def close(pool: Pool, *, draining: bool) -> None:
            if draining:  # the draining finalize closes the pools only once the cancelling one has
                assert closed_to_all.wait(WAIT)
            real_close(pool, draining=draining)
            (closed_draining if draining else closed_to_all).set()

        monkeypatch.setattr(Pool, "close", close)
        drainer, drain_errors = in_thread(lambda: d.finalize(timeout=WAIT), "test-drainer")
        wait_for(lambda: d.closed, "the draining finalize to begin")
        canceller, cancel_errors = in_thread(lambda: d.finalize(cancel_pending=True, timeout=WAIT), "test-canceller")
        assert closed_draining.wait(WAIT)
        gate.set()
        for thread in (drainer, canceller):
            thread.join(2 * WAIT)
            assert not thread.is_alive()
        assert not drain_errors, drain_errors
        assert not cancel_errors, cancel_errors
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], DispatcherClosed), f"follow-ups accepted while finalize cancels: {outcome}"
        s = d.stats(0)
        assert (s.completed, s.failed, s.cancelled, s.queued) == (1, 0, 0, 0), s


class TestCancelPendingAndTheDispatchingThread:
    def test_a_delayed_job_handed_over_after_the_cancel_never_runs(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """finalize(cancel_pending=True) as the timer hands a due job to a pool without a thread: dropped, not run."""
        from jobdispatch._pool import Pool

        refuse_thread_starts(monkeypatch, "test-cancel-due-p0-")
        d = kit.dispatcher(1, name="test-cancel-due")
        pool = d._pools[0]
        handing, ran = threading.Event(), threading.Event()
        real_submit_due = Pool.submit_due

        def submit_due(self: Pool, item: object) -> None:
            handing.set()  # the timer took the job from its heap: no cancel can reach it there
            wait_for(lambda: self._queue_cancelled, "finalize to cancel the pool's jobs")
            real_submit_due(self, item)  # type: ignore[arg-type]

        monkeypatch.setattr(Pool, "submit_due", submit_due)
        handle = d.dispatch_later(0, ran.set)
        assert handing.wait(WAIT)
        d.finalize(cancel_pending=True, timeout=WAIT)
        assert not ran.is_set(), "a job that had not started ran after finalize(cancel_pending=True)"
        s = pool.stats()
        assert (s.completed, s.cancelled, s.delayed) == (0, 1, 0), s
        assert handle.cancelled()

    def test_a_job_the_dispatching_thread_was_about_to_run_is_refused_once_finalize_returned(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A dispatch that found no thread, still on its way to run the job when finalize() ends: refused, not run."""
        from jobdispatch._pool import Pool

        refuse_thread_starts(monkeypatch, "test-late-inline-p0-")
        d = kit.dispatcher(1, name="test-late-inline")
        on_the_way, go, ran = threading.Event(), threading.Event(), threading.Event()
        real_pass_room_on = Pool.pass_room_on

        def pass_room_on(self: Pool) -> None:  # the step before the dispatching thread runs the job
            if threading.current_thread().name == "test-producer":
                on_the_way.set()
                assert go.wait(WAIT)
            real_pass_room_on(self)

        monkeypatch.setattr(Pool, "pass_room_on", pass_room_on)
        producer, errors = in_thread(lambda: d.dispatch(ran.set), "test-producer")
        assert on_the_way.wait(WAIT)
        d.finalize(timeout=WAIT)
        go.set()
        producer.join(WAIT)
        assert not producer.is_alive()
        assert not ran.is_set(), "a job ran after finalize() returned"
        assert len(errors) == 1, errors
        assert isinstance(errors[0], DispatcherClosed), errors
        s = d.stats(0)
        assert (s.completed, s.failed, s.cancelled) == (0, 0, 0), s
