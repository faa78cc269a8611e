"""asyncio integration: dispatch_async, run, wait_async, async with, async batches."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, DispatcherError, PoolConfig
from jobdispatch._pool import Pool
from support import WAIT, Counter, refuse_thread_starts, threads_named, wait_for


def full_pool(gate: threading.Event) -> Dispatcher:
    """A one-worker, zero-queue pool whose only place is taken by a gated job."""
    d = Dispatcher([PoolConfig(0, 1, queue_size=0)])
    started = threading.Event()

    def blocker() -> None:
        started.set()
        gate.wait(10)

    d.dispatch(blocker)
    assert started.wait(10)
    return d


class TestDispatchAsync:
    def test_dispatch_async_runs_the_job(self) -> None:
        """An awaited dispatch runs its job like dispatch() does."""
        ran = threading.Event()

        async def main() -> None:
            with Dispatcher(2) as d:
                await d.dispatch_async(ran.set)
                assert await d.wait_async(10)

        asyncio.run(main())
        assert ran.is_set()

    def test_full_pool_does_not_block_the_event_loop(self) -> None:
        """While the pool is full, the loop keeps running other tasks."""
        gate = threading.Event()
        d = full_pool(gate)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async def main() -> None:
            tick_task = asyncio.create_task(ticker())
            dispatch = asyncio.create_task(d.dispatch_async(print))
            while ticks < 100:
                await asyncio.sleep(0)
            assert not dispatch.done()  # still waiting for room
            gate.set()
            await asyncio.wait_for(dispatch, 10)
            tick_task.cancel()

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=10)
        assert d.stats(0).completed == 2

    def test_cancelling_the_task_cancels_the_dispatch(self) -> None:
        """A cancelled dispatch_async never runs its job and leaves no trace."""
        gate = threading.Event()
        d = full_pool(gate)
        ran: list[int] = []

        async def main() -> None:
            task = asyncio.create_task(d.dispatch_async(lambda: ran.append(1)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=10)
        assert ran == []
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 0, 0)

    def test_many_waiting_producers_all_get_through(self) -> None:
        """Several async producers waiting on a full pool are all served, in time."""
        gate = threading.Event()
        d = full_pool(gate)
        count = 0
        lock = threading.Lock()

        def job() -> None:
            nonlocal count
            with lock:
                count += 1

        async def main() -> None:
            tasks = [asyncio.create_task(d.dispatch_async(job)) for _ in range(20)]
            await asyncio.sleep(0)
            gate.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert await d.wait_async(10)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=10)
        assert count == 20

    def test_finalize_wakes_waiting_producers_with_dispatcher_closed(self) -> None:
        """A producer awaiting room gets DispatcherClosed when the dispatcher closes."""
        gate = threading.Event()
        d = full_pool(gate)

        async def main() -> None:
            task = asyncio.create_task(d.dispatch_async(print))
            await asyncio.sleep(0)
            closer = threading.Thread(target=d.finalize, kwargs={"cancel_pending": True}, name="test-closer")
            closer.start()
            with pytest.raises(DispatcherClosed):
                await asyncio.wait_for(task, 10)
            gate.set()
            closer.join(10)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=10)

    def test_dispatch_async_after_finalize_raises(self) -> None:
        """dispatch_async on a finalized dispatcher raises DispatcherClosed."""
        d = Dispatcher(1)
        d.finalize()
        with pytest.raises(DispatcherClosed):
            asyncio.run(d.dispatch_async(print))


class TestWaitAsync:
    def test_wait_async_times_out_while_a_job_runs(self) -> None:
        """wait_async(timeout) returns False while a job is still running, True after."""
        gate = threading.Event()
        d = full_pool(gate)

        async def main() -> None:
            assert await d.wait_async(0.01) is False
            gate.set()
            assert await d.wait_async(10) is True

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=10)

    def test_wait_async_on_idle_dispatcher_returns_at_once(self) -> None:
        """With nothing dispatched, wait_async returns True."""

        async def main() -> bool:
            with Dispatcher(1) as d:
                return await d.wait_async()

        assert asyncio.run(main()) is True


class TestAsyncBatch:
    def test_async_batch_waits_for_its_jobs(self) -> None:
        """Leaving `async with d.batch()` awaits the batch's jobs."""
        results: list[int] = []
        lock = threading.Lock()

        def add(n: int) -> None:
            with lock:
                results.append(n)

        async def main() -> None:
            with Dispatcher(3) as d:
                async with d.batch() as batch:
                    for n in range(30):
                        await batch.dispatch_async(lambda n=n: add(n))  # type: ignore[misc]
                assert sorted(results) == list(range(30))

        asyncio.run(main())

    def test_async_batch_raises_exception_group(self) -> None:
        """Failures of an async batch's jobs come out as an ExceptionGroup."""

        def boom() -> None:
            raise KeyError("x")

        async def main() -> None:
            with Dispatcher(2) as d:
                with pytest.raises(ExceptionGroup) as caught:
                    async with d.batch() as batch:
                        await batch.dispatch_async(boom)
                        batch.dispatch(print)
                assert [type(e) for e in caught.value.exceptions] == [KeyError]

        asyncio.run(main())


async def until(predicate: Callable[[], object], what: str) -> None:
    """Let the loop run until ``predicate`` holds; fail the test if it does not within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def room_waiters(d: Dispatcher, priority: int = 0) -> int:
    return len(d._pools[priority]._room_waiters)


def generation_waiters(d: Dispatcher, priority: int = 0) -> int:
    pool = d._pools[priority]
    return sum(len(g.waiters) for g in d._open_generations(pool))


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event that is set when the test ends, whatever happens."""
    event = threading.Event()
    yield event
    event.set()


def free_one_place(pool: Pool) -> None:
    """Free one place of ``pool``, as a job that ends does."""
    with pool._lock:
        pool.free_place_locked()


class TestWakeUps:
    """A wake-up for room is never lost: every free place reaches a waiting producer."""

    @pytest.mark.parametrize("cancel", ["after the wake-up", "before the wake-up"])
    def test_producer_cancelled_as_a_place_frees_hands_the_wake_up_on(self, cancel: str) -> None:
        """A dispatch_async cancelled as the pool wakes it passes the place on to the next waiting producer."""
        gate = threading.Event()
        d = full_pool(gate)
        ran = Counter()

        async def main() -> None:
            first = asyncio.create_task(d.dispatch_async(ran))
            second = asyncio.create_task(d.dispatch_async(ran))
            await until(lambda: room_waiters(d) == 2, "both producers to wait for room")
            # Without yielding to the loop: the worker frees the place and
            # wakes the first producer (through the loop), which is
            # cancelled before the loop runs that wake-up, or just before
            # the worker picks it.
            if cancel == "before the wake-up":
                first.cancel()
            gate.set()
            wait_for(lambda: d.stats(0).completed == 1, "the blocker to end and free its place")
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            await asyncio.wait_for(second, WAIT)

        try:
            asyncio.run(main())
            assert d.wait(WAIT)
        finally:
            gate.set()
            d.finalize(cancel_pending=True, timeout=WAIT)
        assert ran.value == 1
        assert d.stats(0).completed == 2

    @pytest.mark.parametrize("how", ["dispatch_async", "executor submit"])
    def test_a_producer_whose_loop_stopped_does_not_keep_a_place_from_a_blocked_thread(self, how: str) -> None:
        """A waiter of a loop that no longer runs passes the place on; its task gets it once the loop runs again."""
        gate = threading.Event()
        d = full_pool(gate)
        ran = Counter()
        loop = asyncio.new_event_loop()
        producer: threading.Thread | None = None
        try:

            async def start_waiting() -> asyncio.Future[Any]:
                if how == "dispatch_async":
                    waiting: asyncio.Future[Any] = asyncio.ensure_future(d.dispatch_async(ran))
                else:
                    waiting = asyncio.wrap_future(d.executor(0).submit(ran))
                await until(lambda: room_waiters(d) == 1, "the task to wait for room")
                return waiting

            # run_until_complete returns with the task still waiting for room:
            # the loop stays open but does not run.
            waiting = loop.run_until_complete(start_waiting())
            thread_ran = threading.Event()
            producer = threading.Thread(target=d.dispatch, args=(thread_ran.set,), name="test-producer")
            producer.start()
            wait_for(lambda: room_waiters(d) == 2, "the thread to wait for room behind the task")
            gate.set()
            assert thread_ran.wait(WAIT), "the blocked thread never got the place that freed up"
            loop.run_until_complete(asyncio.wait_for(waiting, WAIT))
            assert d.wait(WAIT)
            assert ran.value == 1
        finally:
            gate.set()
            if producer is not None:
                producer.join(WAIT)
            d.finalize(cancel_pending=True, timeout=WAIT)
            loop.close()
        assert d.stats(0).completed == 3

    def test_place_given_back_while_a_producer_registers_wakes_it(self) -> None:
        """A place given back between an async producer's check for room and its registration wakes it."""
        d = Dispatcher([PoolConfig(0, 1, queue_size=0)])
        pool = d._pools[0]
        lock = WatchedLock()
        pool._lock = lock  # type: ignore[assignment]
        with pool._lock:
            pool._room -= 1  # the only place, held as by a job that has not ended
        ran = Counter()
        lines, first = inspect.getsourcelines(Pool.add_room_waiter)
        register = first + next(i for i, line in enumerate(lines) if "_room_waiters.append(" in line)
        givers: list[threading.Thread] = []

        def in_add_room_waiter(frame: Any, event: str, arg: Any) -> Any:
            if event == "line" and frame.f_lineno == register and not givers:
                # The producer found no room and is about to register: the
                # place comes back now, from another thread.
                giver = threading.Thread(target=free_one_place, args=(pool,), name="test-giver")
                givers.append(giver)
                giver.start()
                wait_for(lambda: not giver.is_alive() or lock.contended.is_set(), "the giver to end or wait")
            return in_add_room_waiter

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            return in_add_room_waiter if frame.f_code is Pool.add_room_waiter.__code__ else None

        async def main() -> None:
            await asyncio.wait_for(d.dispatch_async(ran), WAIT)
            assert await d.wait_async(WAIT)

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            asyncio.run(main())
        finally:
            sys.settrace(previous)
            for giver in givers:
                giver.join(WAIT)
            d.finalize(cancel_pending=True, timeout=WAIT)
        assert givers, "the producer never had to wait for room"
        assert ran.value == 1


class WatchedLock:
    """A lock that tells when a thread had to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # as the pool's own
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        self.contended.set()
        return self._lock.acquire(True, timeout)

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        return self._lock._is_owned()  # type: ignore[attr-defined, no-any-return]

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class TestOwnJobs:
    """The async API keeps the rules of the blocking one inside the dispatcher's own jobs."""

    def test_wait_async_inside_an_own_job_raises(self) -> None:
        """wait_async() in a job of the dispatcher (running an event loop) raises DispatcherError, as wait() does."""
        outcome: list[object] = []
        with Dispatcher(2) as d:

            def job() -> None:
                try:
                    outcome.append(asyncio.run(d.wait_async(0)))
                except DispatcherError as error:
                    outcome.append(error)

            d.dispatch(job)
            assert d.wait(WAIT)
        assert len(outcome) == 1
        assert isinstance(outcome[0], DispatcherError)
        assert str(outcome[0]) == "cannot wait from inside one of the dispatcher's own jobs: it would deadlock"

    def test_wait_async_inside_another_dispatchers_job_works(self) -> None:
        """A job of one dispatcher may await another dispatcher's barrier."""
        outcome: list[object] = []
        with Dispatcher(1) as other, Dispatcher(1) as d:
            d.dispatch(lambda: outcome.append(asyncio.run(other.wait_async(WAIT))))
            assert d.wait(WAIT)
        assert outcome == [True]

    def test_dispatch_async_into_own_full_pool_runs_the_job_inline(self) -> None:
        """dispatch_async() from a job into its own full pool runs the new job in that job's thread."""
        threads: list[str] = []
        errors: list[BaseException] = []
        with Dispatcher([PoolConfig(0, 1, queue_size=0)], name="own") as d:

            def inner() -> None:
                threads.append(threading.current_thread().name)

            def outer() -> None:
                threads.append(threading.current_thread().name)
                try:
                    asyncio.run(asyncio.wait_for(d.dispatch_async(inner), WAIT))
                except BaseException as error:
                    errors.append(error)

            d.dispatch(outer)
            assert d.wait(WAIT)
        assert errors == []
        assert threads == ["own-p0-1", "own-p0-1"]
        assert d.stats(0).completed == 2

    def test_run_into_own_full_pool_runs_the_call_inline(self) -> None:
        """run() from a job into its own full pool calls the function in that job's thread and returns its result."""
        results: list[object] = []
        with Dispatcher([PoolConfig(0, 1, queue_size=0)], name="ownrun") as d:

            def outer() -> None:
                call = d.run(lambda: threading.current_thread().name)
                results.append(asyncio.run(asyncio.wait_for(call, WAIT)))

            d.dispatch(outer)
            assert d.wait(WAIT)
        assert results == ["ownrun-p0-1"]

    def test_async_with_inside_an_own_job_raises(self) -> None:
        """Leaving `async with dispatcher` in one of its own jobs raises DispatcherError, as finalize() does."""
        outcome: list[BaseException] = []
        d = Dispatcher(1)

        async def leave_inside() -> None:
            async with d:
                pass

        def job() -> None:
            try:
                asyncio.run(leave_inside())
            except DispatcherError as error:
                outcome.append(error)

        d.dispatch(job)
        assert d.wait(WAIT)
        d.finalize(timeout=WAIT)
        assert [str(e) for e in outcome] == [
            "cannot finalize from inside one of the dispatcher's own jobs: it would deadlock"
        ]


class TestWaitAsyncLeavesNothingBehind:
    """A wait_async that ends early forgets its futures at once."""

    def test_timed_out_waits_leave_no_future_behind(self, gate: threading.Event) -> None:
        """Each wait_async(timeout) that times out removes its futures from the pool."""
        d = full_pool(gate)

        async def main() -> None:
            for _ in range(50):
                assert await d.wait_async(0) is False
            assert generation_waiters(d) == 0

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)

    def test_cancelled_wait_leaves_no_future_behind(self, gate: threading.Event) -> None:
        """A wait_async whose task is cancelled removes its futures from the pool."""
        d = full_pool(gate)

        async def main() -> None:
            task = asyncio.create_task(d.wait_async())
            await until(lambda: generation_waiters(d) == 1, "the wait to register")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert generation_waiters(d) == 0

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)


class TestAsyncWith:
    """`async with Dispatcher(...)` finalizes on leaving, without blocking the event loop."""

    def test_async_with_finalizes_and_joins_on_leaving(self) -> None:
        """Leaving `async with` waits for the jobs, closes the dispatcher and joins its threads."""
        count = Counter()

        async def main() -> Dispatcher:
            async with Dispatcher(3, name="aw") as d:
                for _ in range(20):
                    await d.dispatch_async(count)
            return d

        d = asyncio.run(main())
        assert count.value == 20
        assert d.closed
        assert not [t.name for t in threads_named("aw-") if t.is_alive()]
        with pytest.raises(DispatcherClosed):
            d.dispatch(print)

    def test_a_leaving_task_dropped_with_its_closed_loop_closes_cleanly(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A task leaving `async with`, dropped with its closed loop, closes its coroutine cleanly; finalize goes on."""
        gate, started = threading.Event(), threading.Event()
        d = Dispatcher(1, name="test-dropped-leave")

        def blocker() -> None:
            started.set()
            gate.wait(WAIT)

        d.dispatch(blocker)
        assert started.wait(WAIT)
        unraisable: list[Any] = []
        monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

        async def leave() -> None:
            async with d:
                pass

        async def start_leaving() -> asyncio.Task[None]:
            task = asyncio.ensure_future(leave())
            await until(lambda: threads_named("test-dropped-leave-finalize"), "finalize to start on its thread")
            return task

        loop = asyncio.new_event_loop()
        try:
            task = loop.run_until_complete(start_leaving())
        finally:
            loop.close()  # the task, still leaving, never runs again
        gate.set()
        for thread in threads_named("test-dropped-leave-"):
            thread.join(WAIT)
        assert d.stats(0).completed == 1
        assert d.closed
        del task
        with caplog.at_level(logging.CRITICAL, logger="asyncio"):
            gc.collect()  # drops the task: "destroyed but pending", as this test meant
        assert [repr(hook.exc_value) for hook in unraisable] == []
        d.finalize(timeout=WAIT)

    def test_leaving_when_no_thread_can_start_says_so_and_leaves_the_dispatcher_open(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At a thread limit, leaving `async with` raises an error that says the dispatcher is still open."""
        d = Dispatcher(1, name="test-no-finalizer")
        count = Counter()
        refuse_thread_starts(monkeypatch, "test-no-finalizer-finalize")

        async def main() -> None:
            async with d:
                await d.dispatch_async(count)

        try:
            with pytest.raises(
                RuntimeError,
                match=r"^cannot start the thread that finalizes dispatcher 'test-no-finalizer' "
                r"\(can't start new thread\): it was not finalized; call finalize\(\) to finish$",
            ):
                asyncio.run(main())
            assert not d.closed
        finally:
            d.finalize(timeout=WAIT)
        assert count.value == 1

    def test_leaving_does_not_block_the_event_loop(self) -> None:
        """While leaving waits for a running job, other tasks run: one of them lets the job end."""
        gate = threading.Event()
        seen: list[int] = []

        async def opener(d: Dispatcher) -> None:
            await until(lambda: d.closed, "the dispatcher to start finalizing")
            seen.append(d.stats(0).busy)  # the job still runs: leaving has not returned
            gate.set()

        async def main() -> None:
            started = threading.Event()
            async with Dispatcher(1, name="awloop") as d:
                d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
                await until(started.is_set, "the job to start")
                task = asyncio.create_task(opener(d))
            await task

        try:
            asyncio.run(main())
        finally:
            gate.set()
        assert seen == [1]

    def test_exception_inside_cancels_pending_jobs_and_propagates(self) -> None:
        """Leaving on an exception drops the jobs not started, awaits the running one, re-raises unchanged."""
        gate = threading.Event()
        started = threading.Event()
        ran = Counter()
        d = Dispatcher([PoolConfig(0, 1, queue_size=5)], name="awexc")
        openers: list[asyncio.Task[None]] = []

        async def opener() -> None:
            await until(lambda: d.stats(0).cancelled == 3, "the queued jobs to be cancelled")
            gate.set()

        async def main() -> None:
            async with d:
                d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
                for _ in range(3):
                    await d.dispatch_async(ran)
                await until(started.is_set, "the first job to start")
                openers.append(asyncio.create_task(opener()))
                raise KeyError("inside")

        try:
            with pytest.raises(KeyError, match="inside"):
                asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran.value == 0
        assert openers[0].exception() is None  # it ran while the dispatcher was leaving
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled) == (1, 3)
        assert not [t.name for t in threads_named("awexc") if t.is_alive()]

    def test_task_cancelled_while_leaving_cancels_pending_and_joins(self) -> None:
        """A task cancelled while leaving drops the jobs not started, still joins every thread, then is cancelled."""
        gate = threading.Event()
        started = threading.Event()
        ran = Counter()
        d = Dispatcher([PoolConfig(0, 1, queue_size=5)], name="awcancel")

        async def body() -> None:
            async with d:
                d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
                for _ in range(3):
                    await d.dispatch_async(ran)

        async def main() -> None:
            task = asyncio.create_task(body())
            await until(lambda: d.closed and started.is_set(), "the task to start leaving")
            task.cancel()
            await until(lambda: d.stats(0).cancelled == 3, "the queued jobs to be cancelled")
            await asyncio.sleep(0)
            assert not task.done()  # still joining: the running job holds it
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran.value == 0
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled) == (1, 3)
        assert not [t.name for t in threads_named("awcancel") if t.is_alive()]


class TestRun:
    """`await dispatcher.run(fn, *args, **kwargs)` returns fn's result, computed on a pool."""

    def test_run_returns_the_result_computed_on_a_pool_thread(self) -> None:
        """run() passes the arguments, runs on the pool's thread and returns the result."""

        def describe(a: int, b: int, *, c: int) -> tuple[int, str]:
            return a + b + c, threading.current_thread().name

        async def main() -> tuple[int, str]:
            async with Dispatcher({0: 1, 1: 1}, name="run") as d:
                return await d.run(describe, 1, 2, c=3, priority=1)

        assert asyncio.run(main()) == (6, "run-p1-1")

    def test_run_sees_the_callers_context_even_without_propagation(self) -> None:
        """The call runs in a copy of the awaiting task's contextvars context, whatever propagate_context says."""
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

        async def main() -> str:
            var.set("caller")
            with Dispatcher(1, propagate_context=False) as d:
                return await d.run(var.get)

        assert asyncio.run(main()) == "caller"

    def test_exception_reaches_the_awaiter_counted_failed_not_reported(self, caplog: pytest.LogCaptureFixture) -> None:
        """A call's exception is raised by run(), counted failed, and reaches neither on_error nor the log."""
        seen: list[BaseException] = []

        def boom() -> None:
            raise KeyError("boom")

        async def main() -> Dispatcher:
            async with Dispatcher(1, on_error=lambda job, error: seen.append(error)) as d:
                with pytest.raises(KeyError, match="boom"):
                    await d.run(boom)
            return d

        with caplog.at_level(logging.DEBUG, logger="jobdispatch"):
            d = asyncio.run(main())
        assert seen == []
        assert not [r for r in caplog.records if r.name == "jobdispatch"]
        assert (d.stats(0).failed, d.stats(0).completed) == (1, 0)

    def test_cancelled_while_waiting_for_room_never_runs_nor_counts(self, gate: threading.Event) -> None:
        """A run() cancelled while its pool is full never runs and is not counted at all."""
        d = full_pool(gate)
        ran = Counter()

        async def main() -> None:
            task = asyncio.create_task(d.run(ran))
            await until(lambda: room_waiters(d) == 1, "the call to wait for room")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran.value == 0
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 0, 0)

    def test_cancelled_while_queued_never_runs_counted_cancelled(self, gate: threading.Event) -> None:
        """A run() cancelled while its call waits in the queue never runs and is counted cancelled."""
        d = Dispatcher([PoolConfig(0, 1, queue_size=1)])
        started = threading.Event()
        d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
        ran = Counter()

        async def main() -> None:
            assert started.wait(WAIT)
            task = asyncio.create_task(d.run(ran))
            await until(lambda: d.stats(0).queued == 1, "the call to be queued")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        try:
            asyncio.run(main())
            gate.set()
            assert d.wait(WAIT)
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran.value == 0
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 1, 0)

    def test_cancelled_after_start_runs_to_the_end_and_drops_the_result(self, gate: threading.Event) -> None:
        """A run() cancelled once its call has started lets the call finish; the call counts as completed."""
        started = threading.Event()
        finished = threading.Event()

        def call() -> int:
            started.set()
            gate.wait(WAIT)
            finished.set()
            return 1

        async def main(d: Dispatcher) -> None:
            task = asyncio.create_task(d.run(call))
            await until(started.is_set, "the call to start")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not finished.is_set()
            gate.set()

        with Dispatcher(1) as d:
            asyncio.run(main(d))
            assert d.wait(WAIT)
        assert finished.is_set()
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 0, 0)

    def test_failure_of_an_abandoned_call_goes_to_on_error(self, gate: threading.Event) -> None:
        """A call that fails after its awaiting task was cancelled is reported to on_error, named."""
        started = threading.Event()
        seen: list[tuple[str, BaseException]] = []

        def call() -> None:
            started.set()
            gate.wait(WAIT)
            raise KeyError("late")

        async def main(d: Dispatcher) -> None:
            task = asyncio.create_task(d.run(call, name="late call"))
            await until(started.is_set, "the call to start")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()

        with Dispatcher(1, on_error=lambda job, error: seen.append((repr(job), error))) as d:
            asyncio.run(main(d))
            assert d.wait(WAIT)
        assert [(name, type(error)) for name, error in seen] == [("<jobdispatch run of 'late call'>", KeyError)]
        assert d.stats(0).failed == 1

    def test_call_dropped_by_finalize_raises_dispatcher_closed(self, gate: threading.Event) -> None:
        """A queued call that finalize(cancel_pending=True) drops makes run() raise DispatcherClosed."""
        d = Dispatcher([PoolConfig(0, 1, queue_size=1)])
        started = threading.Event()
        d.dispatch(lambda: (started.set(), gate.wait(WAIT)))

        async def main() -> None:
            assert started.wait(WAIT)
            task = asyncio.create_task(d.run(print))
            await until(lambda: d.stats(0).queued == 1, "the call to be queued")
            closer = threading.Thread(target=d.finalize, kwargs={"cancel_pending": True}, name="test-closer")
            closer.start()
            await until(lambda: d.stats(0).cancelled == 1, "the call to be cancelled")
            gate.set()
            with pytest.raises(
                DispatcherClosed, match=r"^<jobdispatch run of 'print'> was cancelled before it started"
            ):
                await asyncio.wait_for(task, WAIT)
            closer.join(WAIT)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert d.stats(0).cancelled == 1

    def test_bad_arguments_raise_clear_errors(self) -> None:
        """run() rejects a non-callable, a coroutine function, a bad name and a missing priority, naming them."""

        async def main() -> None:
            async with Dispatcher({0: 1, 1: 1}) as d:
                with pytest.raises(TypeError, match=r"^fn must be callable, got 42$"):
                    await d.run(42, priority=0)  # type: ignore[arg-type]
                with pytest.raises(TypeError, match=r"^fn must be a plain function, not the coroutine function <"):
                    await d.run(asyncio.sleep, 0, priority=0)
                with pytest.raises(TypeError, match=r"^name must be a str or None, got 7$"):
                    await d.run(print, priority=0, name=7)  # type: ignore[arg-type]
                with pytest.raises(TypeError, match=r"^priority is required for <jobdispatch run of 'print'>"):
                    await d.run(print)
            with pytest.raises(DispatcherClosed):
                await d.run(print, priority=0)

        asyncio.run(main())


class TestCancellationStorm:
    """Many producers cancelled at random points: no wake-up is lost, and every call is accounted for."""

    def test_producers_cancelled_at_random_lose_no_wake_up(self) -> None:
        """After a storm of timed-out dispatch_async calls on a tiny pool, fresh producers all get through."""
        ran = Counter()
        rng = random.Random(1234)

        def job() -> None:
            ran()
            time.sleep(rng.random() / 2000)  # the job's own run time, not a wait for anything

        async def producer(d: Dispatcher, limit: float) -> bool:
            try:
                async with asyncio.timeout(limit):
                    await d.dispatch_async(job)
            except TimeoutError:
                return False
            return True

        async def main(d: Dispatcher) -> int:
            outcomes = await asyncio.gather(*(producer(d, rng.random() / 20) for _ in range(300)))
            await asyncio.wait_for(asyncio.gather(*(d.dispatch_async(job) for _ in range(20))), WAIT)
            assert await d.wait_async(WAIT)
            return sum(outcomes) + 20

        with Dispatcher([PoolConfig(0, 2, queue_size=0)]) as d:
            dispatched = asyncio.run(main(d))
            assert room_waiters(d) == 0
        assert ran.value == dispatched == d.stats(0).completed

    def test_runs_cancelled_at_random_are_all_accounted_for(self) -> None:
        """Each run() cancelled at a random point was never counted, counted cancelled, or ran to the end."""
        ran = Counter()
        rng = random.Random(4321)

        def call(n: int) -> int:
            ran()
            time.sleep(rng.random() / 2000)  # the call's own run time
            return n

        async def caller(d: Dispatcher, n: int, limit: float) -> bool:
            try:
                async with asyncio.timeout(limit):
                    assert await d.run(call, n) == n
            except TimeoutError:
                return False
            return True

        async def main(d: Dispatcher) -> int:
            outcomes = await asyncio.gather(*(caller(d, n, rng.random() / 20) for n in range(300)))
            assert await d.wait_async(WAIT)
            return sum(outcomes)

        with Dispatcher([PoolConfig(0, 2, queue_size=3)]) as d:
            returned = asyncio.run(main(d))
            stats = d.stats(0)
        assert ran.value == stats.completed >= returned
        assert (stats.busy, stats.queued, stats.failed) == (0, 0, 0)
        assert stats.completed + stats.cancelled <= 300
