"""Barriers: Dispatcher.wait and Dispatcher.batch."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import pytest

from jobdispatch import Batch, Dispatcher, DispatcherClosed, DispatcherError, PoolConfig, PoolFull, UnknownPriority
from support import LONG, WAIT, Counter, Kit, gated, wait_for


def in_thread(target: Callable[[], object], name: str = "test-helper") -> tuple[threading.Thread, list[object]]:
    """Start ``target`` in a thread; the list receives its result or its exception."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, outcome


def exit_started(batch: Batch, queued: int) -> bool:
    """Whether the batch's exit began cancelling its ``queued`` not-started jobs.

    No public signal exists while cancelling is lazy (done on dequeue), so the
    private flag is read; an eager cancel shows in the public ``done`` count.
    """
    return bool(getattr(batch, "_cancelling", False)) or batch.done >= queued


class TestWait:
    def test_idle_dispatcher_returns_true(self, kit: Kit) -> None:
        """wait() on a dispatcher with nothing pending returns True at once, with any timeout."""
        d = kit.dispatcher({0: 1, 1: 1})
        assert d.wait() is True
        assert d.wait(0) is True
        assert d.wait(0.5) is True

    def test_waits_for_running_and_queued_jobs(self, kit: Kit) -> None:
        """wait() returns once the jobs dispatched before it, running or queued, have finished."""
        d = kit.dispatcher({0: 1})
        gate = kit.gate()
        started = threading.Event()
        queued = Counter()
        d.dispatch(gated(gate, started))
        d.dispatch(queued)
        assert started.wait(WAIT)
        waiter, outcome = in_thread(d.wait)
        waiter.join(0.05)
        assert waiter.is_alive()
        gate.set()
        waiter.join(WAIT)
        assert outcome == [True]
        assert queued.value == 1

    def test_timeout_returns_false_while_gated(self, kit: Kit) -> None:
        """wait(timeout) returns False when a job is still running, after at least the timeout."""
        d = kit.dispatcher(1)
        gate = kit.gate()
        d.dispatch(gated(gate))
        assert d.wait(0) is False
        before = time.monotonic()
        assert d.wait(0.05) is False
        assert time.monotonic() - before >= 0.045
        gate.set()
        assert d.wait(WAIT) is True

    def test_infinite_timeout_waits(self, kit: Kit) -> None:
        """wait(math.inf) waits like wait()."""
        d = kit.dispatcher(1)
        gate = kit.gate()
        d.dispatch(gated(gate))
        waiter, outcome = in_thread(lambda: d.wait(math.inf))
        waiter.join(0.05)
        gate.set()
        waiter.join(WAIT)
        assert outcome == [True]

    def test_covers_every_pool(self, kit: Kit) -> None:
        """wait() waits for the jobs of every pool."""
        d = kit.dispatcher({0: 2, 1: 1})
        counters = {0: Counter(), 1: Counter()}
        for _ in range(30):
            d.dispatch(counters[0], priority=0)
            d.dispatch(counters[1], priority=1)
        assert d.wait(WAIT)
        assert (counters[0].value, counters[1].value) == (30, 30)

    def test_includes_delayed_jobs(self, kit: Kit) -> None:
        """Delayed jobs count from the dispatch_later call: wait() waits for them."""
        d = kit.dispatcher(1)
        counter = Counter()
        d.dispatch_later(0.05, counter)
        assert d.wait(0) is False
        assert d.wait(WAIT) is True
        assert counter.value == 1

    def test_returns_under_a_steady_stream(self, kit: Kit) -> None:
        """wait() returns once earlier jobs are done although another thread keeps dispatching."""
        d = kit.dispatcher({0: 2})
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        stop = threading.Event()
        produced = Counter()

        def produce() -> None:
            while not stop.is_set():
                d.dispatch(lambda: None)
                produced()

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        try:
            wait_for(lambda: produced.value > 100, "the stream to flow")
            waiter, outcome = in_thread(d.wait)
            gate.set()
            waiter.join(WAIT)
            assert outcome == [True]
            assert producer.is_alive()
        finally:
            stop.set()
            producer.join(WAIT)

    def test_failures_and_rounds(self, kit: Kit) -> None:
        """Failing jobs complete the barrier; the dispatcher stays open for the next round."""
        d = kit.dispatcher(2, on_error=lambda job, exc: None)
        counter = Counter()
        for round_number in range(1, 4):
            for _ in range(10):
                d.dispatch(counter)
                d.dispatch(lambda: 1 / 0)
            assert d.wait(WAIT)
            assert counter.value == 10 * round_number
            assert d.stats(0).failed == 10 * round_number
        assert not d.closed

    def test_several_waiters(self, kit: Kit) -> None:
        """Several threads waiting at once all return once the jobs are done."""
        d = kit.dispatcher(1)
        gate = kit.gate()
        d.dispatch(gated(gate))
        waiters = [in_thread(d.wait, name=f"test-waiter-{n}") for n in range(4)]
        gate.set()
        for thread, outcome in waiters:
            thread.join(WAIT)
            assert outcome == [True]

    def test_released_when_pending_job_is_cancelled(self, kit: Kit) -> None:
        """A wait() blocked on a delayed job returns True once finalize(cancel_pending=True) cancels it."""
        d = kit.dispatcher(1)
        dropped = Counter()
        d.dispatch_later(LONG, dropped)
        about_to = threading.Event()

        def wait() -> bool:
            about_to.set()
            return d.wait()

        waiter, outcome = in_thread(wait)
        assert about_to.wait(WAIT)
        waiter.join(0.05)
        d.finalize(cancel_pending=True)
        waiter.join(WAIT)
        assert outcome == [True]
        assert (dropped.value, d.stats(0).cancelled) == (0, 1)

    def test_after_finalize(self) -> None:
        """wait() on a finalized dispatcher returns True."""
        d = Dispatcher(1)
        d.dispatch(lambda: None)
        d.finalize()
        assert d.wait() is True

    def test_inside_own_job_raises(self, kit: Kit) -> None:
        """wait() from one of the dispatcher's own jobs raises DispatcherError at once."""
        d = kit.dispatcher({0: 1, 1: 1})
        errors: list[BaseException] = []

        def job() -> None:
            try:
                d.wait()
            except DispatcherError as error:
                errors.append(error)

        d.dispatch(job, priority=1)
        assert d.wait(WAIT)
        assert len(errors) == 1
        assert type(errors[0]) is DispatcherError
        assert str(errors[0]) == "cannot wait from inside one of the dispatcher's own jobs: it would deadlock"

    def test_inside_another_dispatchers_job_works(self, kit: Kit) -> None:
        """A job of one dispatcher may wait() on another dispatcher."""
        outer, inner = kit.dispatcher(1), kit.dispatcher(1)
        counter = Counter()
        results: list[bool] = []

        def job() -> None:
            inner.dispatch(counter)
            results.append(inner.wait(WAIT))

        outer.dispatch(job)
        assert outer.wait(WAIT)
        assert results == [True]
        assert counter.value == 1

    @pytest.mark.parametrize(
        ("timeout", "error", "message"),
        [
            ("1", TypeError, r"^timeout must be a number of seconds or None, got '1'$"),
            (True, TypeError, r"^timeout must be a number of seconds or None, got True$"),
            (-1, ValueError, r"^timeout must be >= 0, got -1$"),
            (math.nan, ValueError, r"^timeout must be >= 0, got nan$"),
        ],
    )
    def test_bad_timeout(self, kit: Kit, timeout: object, error: type[Exception], message: str) -> None:
        """A bad timeout is refused with a message naming it."""
        d = kit.dispatcher(1)
        with pytest.raises(error, match=message):
            d.wait(timeout)  # type: ignore[arg-type]


class TestBatch:
    def test_exit_waits_for_the_batch(self, kit: Kit) -> None:
        """Leaving the block waits for every job of the batch, delayed ones included."""
        d = kit.dispatcher({0: 2, 1: 1})
        counter = Counter()
        with d.batch() as batch:
            assert isinstance(batch, Batch)
            for _ in range(20):
                batch.dispatch(counter, priority=0)
            batch.dispatch_later(0.02, counter, priority=1)
        assert counter.value == 21
        assert (batch.total, batch.done) == (21, 21)

    def test_total_and_done(self, kit: Kit) -> None:
        """Batch.total counts dispatched jobs; Batch.done those that ended."""
        d = kit.dispatcher(1)
        gate = kit.gate()
        with d.batch() as batch:
            assert (batch.total, batch.done) == (0, 0)
            batch.dispatch(gated(gate))
            batch.dispatch(lambda: None)
            assert batch.total == 2
            assert batch.done == 0
            gate.set()
            wait_for(lambda: batch.done == 2, "both batch jobs")
        assert (batch.total, batch.done) == (2, 2)

    def test_repr(self, kit: Kit) -> None:
        """The repr shows the state, done/total and failures."""
        d = kit.dispatcher(1)
        batch = d.batch()
        assert repr(batch) == "<jobdispatch.Batch new, 0/0 done, 0 failed>"
        with pytest.raises(ExceptionGroup), batch:
            batch.dispatch(lambda: None)
            batch.dispatch(lambda: 1 / 0)
            assert repr(batch).startswith("<jobdispatch.Batch open, ")
        assert repr(batch) == "<jobdispatch.Batch closed, 2/2 done, 1 failed>"

    def test_failures_raise_exception_group(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """Failed batch jobs raise an ExceptionGroup of exactly their exceptions at exit, not on_error."""
        hooked: list[object] = []
        d = kit.dispatcher({0: 2, 1: 1}, on_error=lambda job, exc: hooked.append(job))
        first, second = ValueError("a"), KeyError("b")

        def raising(error: BaseException) -> Callable[[], None]:
            def job() -> None:
                raise error

            return job

        with (
            caplog.at_level(logging.ERROR, logger="jobdispatch"),
            pytest.raises(ExceptionGroup, match=r"^2 of 5 jobs in the batch failed") as caught,
            d.batch() as batch,
        ):
            batch.dispatch(raising(first), priority=0)
            batch.dispatch(lambda: None, priority=0)
            batch.dispatch(lambda: None, priority=1)
            batch.dispatch_later(0, raising(second), priority=1)
            batch.dispatch(lambda: None, priority=0)
        assert {id(e) for e in caught.value.exceptions} == {id(first), id(second)}
        assert len(caught.value.exceptions) == 2
        assert hooked == []
        assert not [r for r in caplog.records if r.name == "jobdispatch"]
        assert d.stats(0).failed + d.stats(1).failed == 2
        assert d.stats(0).completed + d.stats(1).completed == 3

    def test_failures_match_except_star(self, kit: Kit) -> None:
        """The batch's failures can be handled with except*."""
        d = kit.dispatcher(2)
        handled: list[BaseException] = []
        try:
            with d.batch() as batch:
                for _ in range(3):
                    batch.dispatch(lambda: 1 / 0)
        except* ZeroDivisionError as group:
            handled.extend(group.exceptions)
        assert len(handled) == 3

    def test_base_exception_failure(self, kit: Kit) -> None:
        """A job raising a BaseException makes the batch raise a BaseExceptionGroup."""

        class Stop(BaseException):
            pass

        def stop() -> None:
            raise Stop

        d = kit.dispatcher(1)
        with pytest.raises(BaseExceptionGroup, match=r"^1 of 2 jobs in the batch failed") as caught, d.batch() as batch:
            batch.dispatch(stop)
            batch.dispatch(lambda: None)
        assert not isinstance(caught.value, ExceptionGroup)
        assert isinstance(caught.value.exceptions[0], Stop)

    def test_exit_waits_only_for_its_own_jobs(self, kit: Kit) -> None:
        """Leaving one batch does not wait for another open batch's job or for plain jobs."""
        d = kit.dispatcher(3)
        outer_gate, plain_gate = kit.gate(), kit.gate()
        outer_started, plain_started = threading.Event(), threading.Event()
        d.dispatch(gated(plain_gate, plain_started))
        counter = Counter()
        with d.batch() as outer:
            outer.dispatch(gated(outer_gate, outer_started))
            assert outer_started.wait(WAIT)
            assert plain_started.wait(WAIT)
            with d.batch() as inner:
                inner.dispatch(counter)
            assert counter.value == 1
            assert outer.done == 0
            outer_gate.set()
        assert outer.done == 1
        assert d.stats(0).busy == 1
        plain_gate.set()

    def test_batches_in_two_threads(self, kit: Kit) -> None:
        """Two threads with a batch each: one exits while the other's job is still gated."""
        d = kit.dispatcher(2)
        gate = kit.gate()
        started = threading.Event()
        exited = threading.Event()

        def slow_batch() -> None:
            with d.batch() as batch:
                batch.dispatch(gated(gate, started))
            exited.set()

        slow, outcome = in_thread(slow_batch)
        assert started.wait(WAIT)
        counter = Counter()
        with d.batch() as batch:
            for _ in range(5):
                batch.dispatch(counter)
        assert counter.value == 5
        assert not exited.is_set()
        gate.set()
        slow.join(WAIT)
        assert exited.is_set()
        assert outcome == [None]

    def test_wait_covers_batch_jobs(self, kit: Kit) -> None:
        """Dispatcher.wait() also waits for jobs dispatched through a batch."""
        d = kit.dispatcher(1)
        counter = Counter()
        with d.batch() as batch:
            batch.dispatch(counter)
            assert d.wait(WAIT)
            assert counter.value == 1

    def test_body_raising_cancels_not_started_jobs(self, kit: Kit) -> None:
        """If the block raises, the batch's queued jobs are cancelled, the running one awaited, the error kept."""
        d = kit.dispatcher({0: 1})
        gate = kit.gate()
        started = threading.Event()
        not_started = Counter()
        body_error = RuntimeError("body")

        def open_gate_once_exiting() -> None:
            wait_for(lambda: exit_started(batch, 2), "the batch exit")
            gate.set()

        with pytest.raises(RuntimeError) as caught, d.batch() as batch:
            batch.dispatch(gated(gate, started))
            batch.dispatch(not_started)
            batch.dispatch(not_started)
            assert started.wait(WAIT)
            opener, _ = in_thread(open_gate_once_exiting)
            raise body_error
        opener.join(WAIT)
        assert caught.value is body_error
        assert not_started.value == 0
        assert (batch.total, batch.done) == (3, 3)
        # The pool counts a cancelled job when a worker reaches it, which may be after the exit returned.
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 2, 0)
        assert repr(batch) == "<jobdispatch.Batch closed, 3/3 done, 0 failed>"

    def test_body_raising_logs_failures(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """If the block raises, the failures of jobs that ran are logged, not raised as a group."""
        d = kit.dispatcher(1)
        error = ValueError("job failed")

        def fail() -> None:
            raise error

        with caplog.at_level(logging.ERROR, logger="jobdispatch"), pytest.raises(KeyError), d.batch() as batch:
            batch.dispatch(fail)
            wait_for(lambda: batch.done == 1, "the failing job")
            raise KeyError("body")
        records = [r for r in caplog.records if r.name == "jobdispatch"]
        assert [r.getMessage() for r in records] == ["a job of a batch left by an exception failed"]
        assert records[0].exc_info is not None
        assert records[0].exc_info[1] is error

    def test_body_raising_does_not_wait_behind_unrelated_jobs(self, kit: Kit) -> None:
        """If the block raises, exit cancels the batch's queued jobs without waiting for unrelated running jobs."""
        d = kit.dispatcher({0: 1})
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        exited = threading.Event()

        def body_raises() -> None:
            try:
                with d.batch() as batch:
                    batch.dispatch(lambda: None)
                    raise RuntimeError("body")
            except RuntimeError:
                exited.set()

        thread, _ = in_thread(body_raises)
        try:
            assert exited.wait(2.0), "batch exit waited for a job that is not in the batch"
        finally:
            gate.set()
            thread.join(WAIT)

    def test_body_raising_cancels_delayed_jobs_at_once(self, kit: Kit) -> None:
        """If the block raises, the batch's delayed jobs are cancelled at once, not when they fall due."""
        d = kit.dispatcher(1)
        ran = Counter()
        exited = threading.Event()

        def body_raises() -> None:
            try:
                with d.batch() as batch:
                    batch.dispatch_later(LONG, ran)
                    raise RuntimeError("body")
            except RuntimeError:
                exited.set()

        thread, _ = in_thread(body_raises)
        try:
            assert exited.wait(2.0), "batch exit waited for a delayed job to fall due"
        finally:
            d.finalize(cancel_pending=True, timeout=WAIT)
            thread.join(WAIT)
        assert ran.value == 0

    def test_cancelled_by_finalize_raises_dispatcher_closed(self, kit: Kit) -> None:
        """Batch jobs cancelled by finalize(cancel_pending=True) make the exit raise DispatcherClosed."""
        d = kit.dispatcher({0: 1})
        gate = kit.gate()
        started = threading.Event()
        with pytest.raises(DispatcherClosed, match=r"^1 of 2 jobs in the batch were cancelled$"), d.batch() as batch:
            batch.dispatch(gated(gate, started))
            batch.dispatch(lambda: None)
            assert started.wait(WAIT)
            with pytest.raises(TimeoutError):
                d.finalize(cancel_pending=True, timeout=0.01)
            gate.set()
        assert (batch.total, batch.done) == (2, 2)
        d.finalize()

    def test_inline_job_counts_in_the_batch(self, kit: Kit) -> None:
        """A batch job dispatched by a job into its own full pool runs inline and counts in the batch."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        ran = Counter()
        with pytest.raises(ExceptionGroup, match=r"^1 of 3 jobs in the batch failed$"), d.batch() as batch:

            def outer() -> None:
                batch.dispatch(ran)
                batch.dispatch(lambda: 1 / 0)

            batch.dispatch(outer)
            wait_for(lambda: batch.total == 3 and batch.done == 3, "the inline jobs")
        assert ran.value == 1

    def test_batch_inside_another_dispatchers_job(self, kit: Kit) -> None:
        """A job of one dispatcher may run a whole batch on another dispatcher."""
        outer, inner = kit.dispatcher(1), kit.dispatcher(2)
        counter = Counter()

        def job() -> None:
            with inner.batch() as batch:
                for _ in range(4):
                    batch.dispatch(counter)

        outer.dispatch(job)
        assert outer.wait(WAIT)
        assert outer.stats(0).completed == 1
        assert counter.value == 4


class TestBatchErrors:
    def test_opening_inside_own_job_raises_before_any_dispatch(self, kit: Kit) -> None:
        """A batch opened inside one of the dispatcher's own jobs is refused at batch(), before any job goes out."""
        d = kit.dispatcher(2)
        errors: list[BaseException] = []
        ran = Counter()

        def job() -> None:
            try:
                with d.batch() as batch:
                    batch.dispatch(ran)
            except DispatcherError as error:
                errors.append(error)

        d.dispatch(job)
        assert d.wait(WAIT)
        assert [str(e) for e in errors] == [
            "cannot open a batch from inside one of the dispatcher's own jobs: it would deadlock"
        ]
        assert ran.value == 0
        assert d.stats(0).completed == 1

    def test_dispatch_outside_the_block(self, kit: Kit) -> None:
        """Dispatching through a batch before entering or after leaving it raises DispatcherError."""
        d = kit.dispatcher(1)
        batch = d.batch()
        message = r"^dispatch through a batch only inside its with block$"
        with pytest.raises(DispatcherError, match=message):
            batch.dispatch(lambda: None)
        with batch:
            pass
        with pytest.raises(DispatcherError, match=message):
            batch.dispatch(lambda: None)
        with pytest.raises(DispatcherError, match=message):
            batch.dispatch_later(0, lambda: None)
        assert batch.total == 0

    def test_entered_once(self, kit: Kit) -> None:
        """A batch can be entered only once."""
        d = kit.dispatcher(1)
        batch = d.batch()
        with batch, pytest.raises(DispatcherError, match=r"^a batch can be entered only once$"):
            batch.__enter__()
        with pytest.raises(DispatcherError, match=r"^a batch can be entered only once$"), batch:
            pass

    def test_batch_after_finalize(self) -> None:
        """batch() after finalize raises DispatcherClosed."""
        d = Dispatcher(1)
        d.finalize()
        with pytest.raises(DispatcherClosed, match=r"^cannot start a batch after finalize\(\) was called$"):
            d.batch()

    def test_dispatch_through_batch_after_finalize(self) -> None:
        """A batch opened before finalize refuses jobs after it, and does not count them."""
        d = Dispatcher(1)
        with d.batch() as batch:
            d.finalize()
            with pytest.raises(DispatcherClosed, match=r"^cannot dispatch after finalize\(\) was called$"):
                batch.dispatch(lambda: None)
            with pytest.raises(DispatcherClosed, match=r"^cannot dispatch after finalize\(\) was called$"):
                batch.dispatch_later(0, lambda: None)
        assert batch.total == 0

    def test_bad_input_like_dispatch(self, kit: Kit) -> None:
        """Batch.dispatch and dispatch_later refuse bad input like the dispatcher and do not count it."""
        d = kit.dispatcher({0: 1, 1: 1})
        with d.batch() as batch:
            with pytest.raises(TypeError, match=r"^job must be a Job or a callable, got 5$"):
                batch.dispatch(5, priority=0)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^priority must be an int, got 'x'$"):
                batch.dispatch(lambda: None, priority="x")  # type: ignore[arg-type]
            with pytest.raises(UnknownPriority, match=r"^no pool has priority 7; the priorities are \(0, 1\)$"):
                batch.dispatch(lambda: None, priority=7)
            with pytest.raises(TypeError, match=r"^priority is required for <function .+>: the dispatcher has 2 pools"):
                batch.dispatch(lambda: None)
            with pytest.raises(ValueError, match=r"^delay must be >= 0, got -1$"):
                batch.dispatch_later(-1, lambda: None, priority=0)
            with pytest.raises(TypeError, match=r"^job must be a Job or a callable, got None$"):
                batch.dispatch_later(0, None, priority=0)  # type: ignore[arg-type]
            with pytest.raises(UnknownPriority):
                batch.dispatch_later(0, lambda: None, priority=7)
            assert batch.total == 0
        assert (batch.total, batch.done) == (0, 0)

    def test_timeout_zero_on_full_pool(self, kit: Kit) -> None:
        """Batch.dispatch(timeout=0) on a full pool raises PoolFull and does not count the job."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        with d.batch() as batch:
            batch.dispatch(gated(gate))
            with pytest.raises(PoolFull, match=r"^pool 0 is full \(\d+ workers \+ queue_size \d+\)$"):
                batch.dispatch(lambda: None, timeout=0)
            assert batch.total == 1
            gate.set()
        assert (batch.total, batch.done) == (1, 1)

    @pytest.mark.parametrize(
        ("timeout", "error", "message"),
        [
            ("1", TypeError, r"^timeout must be a number of seconds or None, got '1'$"),
            (-1, ValueError, r"^timeout must be >= 0, got -1$"),
            (math.nan, ValueError, r"^timeout must be >= 0, got nan$"),
        ],
    )
    def test_bad_timeout(self, kit: Kit, timeout: object, error: type[Exception], message: str) -> None:
        """Batch.dispatch refuses a bad timeout like Dispatcher.dispatch, even when the pool has room."""
        d = kit.dispatcher(1)
        with d.batch() as batch, pytest.raises(error, match=message):
            batch.dispatch(lambda: None, timeout=timeout)  # type: ignore[arg-type]
