"""Futures: Dispatcher.submit, the executor view of one pool, and jobdispatch.ThreadPoolExecutor."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest

from jobdispatch import (
    Dispatcher,
    DispatcherClosed,
    PoolConfig,
    PoolExecutor,
    PoolFull,
    ThreadPoolExecutor,
    UnknownPriority,
)
from support import WAIT, Counter, gated, threads_named, wait_for


@pytest.fixture
def single() -> Iterator[Dispatcher]:
    d = Dispatcher(4)
    try:
        yield d
    finally:
        d.finalize(cancel_pending=True, timeout=10)


class TestSubmit:
    def test_submit_returns_a_future_with_the_result(self, single: Dispatcher) -> None:
        """submit() returns a Future that resolves to the call's return value."""
        future = single.executor(0).submit(pow, 2, 10)
        assert future.result(timeout=10) == 1024

    def test_submit_passes_keyword_arguments(self, single: Dispatcher) -> None:
        """Keyword arguments reach the function."""
        future = single.executor(0).submit(int, "ff", base=16)
        assert future.result(timeout=10) == 255

    def test_exception_lands_on_the_future_not_on_error(self) -> None:
        """A raising call sets the future's exception and counts as failed; on_error is not called."""
        seen: list[BaseException] = []
        with Dispatcher(2, on_error=lambda job, exc: seen.append(exc)) as d:
            future = d.executor(0).submit(int, "not a number")
            with pytest.raises(ValueError, match="invalid literal"):
                future.result(timeout=10)
            assert d.wait(10)
            assert (d.stats(0).completed, d.stats(0).failed) == (0, 1)
        assert seen == []

    def test_cancel_of_a_queued_call_counts_as_cancelled(self) -> None:
        """A future cancelled before its call started never runs and counts as cancelled."""
        gate = threading.Event()
        ran: list[int] = []
        with Dispatcher([PoolConfig(0, 1, queue_size=4)]) as d:
            executor = d.executor(0)
            blocker = executor.submit(gate.wait, 10)
            queued = executor.submit(ran.append, 1)
            assert queued.cancel()
            gate.set()
            assert blocker.result(timeout=10) is True
            assert d.wait(10)
            assert d.stats(0).cancelled == 1
        assert ran == []
        assert queued.cancelled()

    def test_submit_to_unknown_priority_fails_at_creation(self, single: Dispatcher) -> None:
        """executor() of a priority with no pool raises UnknownPriority."""
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 7"):
            single.executor(7)

    def test_submit_after_finalize_raises_runtime_error(self) -> None:
        """After finalize the view refuses calls with DispatcherClosed, a RuntimeError."""
        d = Dispatcher(1)
        executor = d.executor(0)
        d.finalize()
        with pytest.raises(RuntimeError):
            executor.submit(print)
        with pytest.raises(DispatcherClosed):
            executor.submit(print)


class TestShutdown:
    def test_shutdown_does_not_finalize_the_dispatcher(self, single: Dispatcher) -> None:
        """Shutting a view down leaves the dispatcher and other views working."""
        first = single.executor(0)
        first.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            first.submit(print)
        assert not single.closed
        assert single.executor(0).submit(len, "abc").result(timeout=10) == 3
        assert repr(first).startswith("<jobdispatch.PoolExecutor priority=0 of <Dispatcher ")

    def test_shutdown_waits_for_its_calls(self, single: Dispatcher) -> None:
        """shutdown(wait=True) returns once the view's calls are done."""
        executor = single.executor(0)
        release = threading.Event()
        futures = [executor.submit(release.wait, 10) for _ in range(3)]
        threading.Thread(target=release.set, name="test-release").start()
        executor.shutdown(wait=True)
        assert all(f.done() for f in futures)

    def test_shutdown_cancel_futures_cancels_queued_calls(self) -> None:
        """shutdown(cancel_futures=True) cancels the calls that have not started."""
        gate, started = threading.Event(), threading.Event()

        def blocker() -> bool:
            started.set()
            return gate.wait(10)

        with Dispatcher([PoolConfig(0, 1, queue_size=8)]) as d:
            executor = d.executor(0)
            running = executor.submit(blocker)
            assert started.wait(10)
            queued = [executor.submit(print, n) for n in range(3)]
            executor.shutdown(wait=False, cancel_futures=True)
            assert all(f.cancelled() for f in queued)
            gate.set()
            assert running.result(timeout=10) is True

    def test_context_manager_shuts_the_view_down(self, single: Dispatcher) -> None:
        """`with d.executor(p) as ex:` waits for its calls on exit."""
        with single.executor(0) as executor:
            future = executor.submit(sum, [1, 2, 3])
        assert future.done()
        assert future.result() == 6


class TestMap:
    def test_map_yields_results_in_order(self, single: Dispatcher) -> None:
        """map() returns results in input order."""
        assert list(single.executor(0).map(lambda x: x * x, range(50))) == [x * x for x in range(50)]

    def test_map_zips_several_iterables(self, single: Dispatcher) -> None:
        """map() with several iterables calls fn with one item of each."""
        assert list(single.executor(0).map(pow, [2, 3], [3, 2])) == [8, 9]

    def test_map_with_buffersize_reads_input_lazily(self, single: Dispatcher) -> None:
        """map(buffersize=n) submits n calls at first, then one more per result taken."""
        pulled = 0

        def numbers() -> Iterator[int]:
            nonlocal pulled
            for n in range(10_000):
                pulled += 1
                yield n

        results = single.executor(0).map(abs, numbers(), buffersize=3)
        assert pulled == 3
        assert next(results) == 0
        assert pulled == 4
        results.close()

    def test_map_reraises_the_first_error(self, single: Dispatcher) -> None:
        """An error in one call is raised when its result is reached."""
        results = single.executor(0).map(int, ["1", "x", "3"])
        assert next(results) == 1
        with pytest.raises(ValueError, match="invalid literal"):
            next(results)

    def test_map_timeout_raises(self, single: Dispatcher) -> None:
        """A result not ready by the timeout raises TimeoutError."""
        gate = threading.Event()
        results = single.executor(0).map(gate.wait, [10], timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)
        gate.set()

    @pytest.mark.parametrize(("value", "error", "message"), [(0, ValueError, "got 0"), ("2", TypeError, "got '2'")])
    def test_map_rejects_bad_buffersize(
        self, single: Dispatcher, value: object, error: type[Exception], message: str
    ) -> None:
        """buffersize must be an int >= 1."""
        with pytest.raises(error, match=rf"^buffersize must be .*{message}"):
            single.executor(0).map(abs, [1], buffersize=value)  # type: ignore[arg-type]


class TestDropInForThreadPoolExecutor:
    def test_wait_and_as_completed_work(self, single: Dispatcher) -> None:
        """concurrent.futures.wait and as_completed accept the view's futures."""
        executor = single.executor(0)
        futures = [executor.submit(pow, n, 2) for n in range(20)]
        _, not_done = cf.wait(futures, timeout=10)
        assert not not_done
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=10)) == [n * n for n in range(20)]

    def test_run_in_executor_works(self, single: Dispatcher) -> None:
        """asyncio's loop.run_in_executor runs calls on the pool."""
        executor = single.executor(0)

        async def main() -> list[str]:
            loop = asyncio.get_running_loop()
            return list(await asyncio.gather(*(loop.run_in_executor(executor, str, n) for n in range(5))))

        assert asyncio.run(main()) == ["0", "1", "2", "3", "4"]

    def test_calls_run_on_the_pool_threads(self, single: Dispatcher) -> None:
        """Submitted calls run on the dispatcher's named threads, within the pool's limit."""
        names = single.executor(0).submit(lambda: threading.current_thread().name).result(timeout=10)
        assert names.startswith("jobdispatch-p0-")

    def test_drop_in_replacement_pattern(self) -> None:
        """`with Dispatcher(8).executor(0) as ex:` works where `with ThreadPoolExecutor(8) as ex:` did."""
        with Dispatcher(8).executor(0) as executor:
            futures = {executor.submit(pow, n, 3): n for n in range(32)}
            results = {futures[f]: f.result() for f in cf.as_completed(futures, timeout=10)}
            mapped = list(executor.map(str.upper, ["a", "b"]))
        assert results == {n: n**3 for n in range(32)}
        assert mapped == ["A", "B"]
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(print)


def test_finalize_cancel_pending_cancels_the_futures_of_queued_calls() -> None:
    """Calls dropped by finalize(cancel_pending=True) get cancelled futures, not futures that never settle."""
    d = Dispatcher({0: 1}, name="test-exec-cancel")
    gate, started = threading.Event(), threading.Event()
    try:
        executor = d.executor(0)
        running = executor.submit(lambda: (started.set(), gate.wait(10)))
        assert started.wait(10)
        queued = [executor.submit(lambda: None) for _ in range(3)]
        with pytest.raises(TimeoutError):
            d.finalize(cancel_pending=True, timeout=0.05)
        gate.set()
        d.finalize(timeout=10)
        assert running.result(10) == (None, True)
        assert all(future.cancelled() for future in queued)
        assert d.stats(0).cancelled == 3
    finally:
        gate.set()
        d.finalize(timeout=10)


@pytest.mark.parametrize("how", ["view-submit", "dispatcher-submit", "map-chunk"])
def test_futures_dropped_by_finalize_are_done_for_wait_and_as_completed(how: str) -> None:
    """Futures of calls finalize(cancel_pending=True) dropped are done for concurrent.futures.wait and as_completed."""
    d = Dispatcher({0: 1}, name="test-exec-dropped")
    gate, started = threading.Event(), threading.Event()
    try:
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        executor = d.executor(0)
        if how == "view-submit":
            queued = [executor.submit(int, n) for n in range(3)]
            queued[0].cancel()  # cancelled by its owner first: dropped all the same
        elif how == "dispatcher-submit":
            queued = [d.submit(int, n) for n in range(3)]
        else:
            results = executor.map(abs, range(6), chunksize=2)
            queued = executor._pending.snapshot()  # the chunks' futures, which map keeps to itself
            assert len(queued) == 3
        with pytest.raises(TimeoutError):
            d.finalize(cancel_pending=True, timeout=0.05)  # the queued calls are marked dropped
        gate.set()
        d.finalize(timeout=WAIT)
        assert all(future.cancelled() for future in queued)
        assert cf.wait(queued, timeout=0).not_done == set()
        assert set(cf.as_completed(queued, timeout=0)) == set(queued)
        if how == "map-chunk":
            with pytest.raises(cf.CancelledError):
                next(results)
    finally:
        gate.set()
        d.finalize(timeout=WAIT)


def full_view(gate: threading.Event, workers: int = 1, queue_size: int = 0) -> tuple[Dispatcher, PoolExecutor]:
    """A pool of ``workers`` threads and ``queue_size`` queue, every place taken by a gated job."""
    d = Dispatcher([PoolConfig(0, workers, queue_size=queue_size)], name="jobdispatch-test-full")
    started = [threading.Event() for _ in range(workers)]
    for event in started:
        d.dispatch(gated(gate, event))
    for event in started:
        assert event.wait(WAIT)
    for _ in range(queue_size):
        d.dispatch(gated(gate))
    return d, d.executor(0)


class TestMapSubmitsEverything:
    def test_unconsumed_map_runs_every_call(self, single: Dispatcher) -> None:
        """map() without buffersize submits every call at once: all run even if no result is read."""
        counter = Counter()
        single.executor(0).map(lambda _: counter(), range(100))
        assert single.wait(WAIT)
        assert counter.value == 100
        assert single.stats(0).completed == 100

    def test_buffered_map_of_a_temporary_view_keeps_going(self, single: Dispatcher) -> None:
        """A lazy map needs the dispatcher, not the view: a view dropped at once is fine."""
        assert list(single.executor(0).map(abs, range(-20, 0), buffersize=2)) == list(range(20, 0, -1))

    def test_buffered_map_of_a_collected_dispatcher_raises(self) -> None:
        """A lazy map whose dispatcher was garbage-collected says so instead of stopping short."""
        d = Dispatcher(2, name="jobdispatch-test-gone")
        results = d.executor(0).map(abs, range(10), buffersize=1)
        assert next(results) == 0
        del d
        gc.collect()
        with pytest.raises(RuntimeError, match="garbage-collected"):
            list(results)


class TestMapTimeout:
    def test_map_timeout_raises_on_time_while_the_pool_is_full(self) -> None:
        """map(timeout=) raises TimeoutError on time even when the pool has no room, and runs nothing."""
        gate = threading.Event()
        safety = threading.Timer(3.0, gate.set)  # opens the pool if map blocks past its timeout
        safety.start()
        d, executor = full_view(gate)
        ran: list[int] = []
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                next(executor.map(ran.append, [1, 2, 3], timeout=0.1))
            elapsed = time.monotonic() - started
            assert not gate.is_set(), f"map blocked until the pool opened ({elapsed:.2f} s)"
            assert elapsed < 2.0
        finally:
            safety.cancel()
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran == []
        assert d.stats(0).cancelled == 0  # the calls without room never entered the pool

    def test_map_timeout_cancels_the_call_it_waited_for(self) -> None:
        """On TimeoutError, map cancels every call not started, the awaited one included."""
        gate, started = threading.Event(), threading.Event()
        with Dispatcher([PoolConfig(0, 1, queue_size=8)], name="jobdispatch-test-queue") as d:
            executor = d.executor(0)
            executor.submit(gated(gate, started))
            assert started.wait(WAIT)
            ran: list[int] = []
            with pytest.raises(TimeoutError):
                next(executor.map(ran.append, [1, 2, 3], timeout=0.05))
            gate.set()
            assert d.wait(WAIT)
            assert ran == []
            assert d.stats(0).cancelled == 3

    def test_buffered_map_timeout_cancels_the_awaited_call(self) -> None:
        """The lazy form cancels the awaited call and the buffered ones on TimeoutError too."""
        gate, started = threading.Event(), threading.Event()
        with Dispatcher([PoolConfig(0, 1, queue_size=8)], name="jobdispatch-test-buffered") as d:
            executor = d.executor(0)
            executor.submit(gated(gate, started))
            assert started.wait(WAIT)
            ran: list[int] = []
            with pytest.raises(TimeoutError):
                next(executor.map(ran.append, range(100), timeout=0.05, buffersize=3))
            gate.set()
            assert d.wait(WAIT)
            assert ran == []
            assert d.stats(0).cancelled == 4  # 3 buffered, and the one submitted before waiting

    def test_buffered_map_times_out_when_the_next_call_finds_no_room(self) -> None:
        """A lazy map whose next call finds the pool full until the deadline raises TimeoutError."""
        gate, started = threading.Event(), threading.Event()
        with Dispatcher([PoolConfig(0, 1, queue_size=1)], name="jobdispatch-test-refill") as d:
            executor = d.executor(0)
            results = executor.map(lambda _: (started.set(), gate.wait(WAIT)), range(5), timeout=0.1, buffersize=1)
            assert started.wait(WAIT)  # the first call runs
            executor.submit(gated(gate))  # and this one takes the last place
            with pytest.raises(TimeoutError, match="no room"):
                next(results)
            gate.set()
            assert d.wait(WAIT)
            assert (d.stats(0).completed, d.stats(0).cancelled) == (2, 0)  # the call without room never entered

    def test_an_input_that_raises_cancels_the_calls_submitted_before(self) -> None:
        """If reading map's input raises, the calls it submitted and that have not started are cancelled."""
        gate, started = threading.Event(), threading.Event()

        def numbers() -> Iterator[int]:
            yield 1
            yield 2
            raise LookupError("no more numbers")

        with Dispatcher([PoolConfig(0, 1, queue_size=8)], name="jobdispatch-test-input") as d:
            executor = d.executor(0)
            executor.submit(gated(gate, started))
            assert started.wait(WAIT)
            with pytest.raises(LookupError, match="no more numbers"):
                executor.map(print, numbers())
            gate.set()
            assert d.wait(WAIT)
            assert d.stats(0).cancelled == 2


class _Item:
    """An object whose lifetime a test follows with a weak reference."""


def make_item(_: object) -> _Item:
    return _Item()


def fail() -> None:
    raise ValueError("boom")


class Boom(Exception):
    """An exception a test can follow with a weak reference."""


def boom(_: object) -> None:
    raise Boom


class TestNoLingeringReferences:
    def test_map_iterator_drops_each_result_once_yielded(self, single: Dispatcher) -> None:
        """The map iterator keeps no reference to the result it yielded last."""
        results = single.executor(0).map(make_item, range(3))
        for item in results:
            ref = weakref.ref(item)
            del item
            wait_for(lambda: ref() is None, "the yielded result to be freed")  # noqa: B023

    def test_map_iterator_does_not_keep_the_view_alive(self, single: Dispatcher) -> None:
        """A live map iterator keeps no reference to its executor view."""
        executor = single.executor(0)
        results = executor.map(abs, [-1, -2])
        ref = weakref.ref(executor)
        del executor
        assert ref() is None
        assert list(results) == [1, 2]

    def test_futures_do_not_keep_the_view_alive(self, single: Dispatcher) -> None:
        """A pending future keeps no reference to the view that made it."""
        gate = threading.Event()
        executor = single.executor(0)
        future = executor.submit(gated(gate))
        ref = weakref.ref(executor)
        del executor
        try:
            assert ref() is None
        finally:
            gate.set()
        assert future.result(WAIT) is None

    def test_futures_do_not_keep_a_thread_pool_executor_alive(self) -> None:
        """A ThreadPoolExecutor dropped with futures pending is collected, finishes its calls, stops its threads."""
        gate = threading.Event()
        executor = ThreadPoolExecutor(2, thread_name_prefix="jobdispatch-test-drop")
        futures = [executor.submit(gate.wait, WAIT) for _ in range(4)]
        ref = weakref.ref(executor)
        del executor
        gate.set()
        assert ref() is None
        assert [f.result(WAIT) for f in futures] == [True] * 4
        for thread in threads_named("jobdispatch-test-drop"):
            thread.join(WAIT)
            assert not thread.is_alive()

    def test_failed_future_is_freed_without_the_cycle_collector(self, single: Dispatcher) -> None:
        """A failed future forms no reference cycle: it is freed as soon as it is dropped."""
        executor = single.executor(0)
        gc.disable()
        try:
            future = executor.submit(fail)
            assert isinstance(future.exception(WAIT), ValueError)
            assert single.wait(WAIT)
            ref = weakref.ref(future)
            del future
            wait_for(lambda: ref() is None, "the failed future to be freed")
        finally:
            gc.enable()

    def test_failed_map_call_is_freed_without_the_cycle_collector(self, single: Dispatcher) -> None:
        """The exception a map raises forms no cycle through the call or its future."""
        gc.disable()
        try:
            with pytest.raises(Boom) as info:
                list(single.executor(0).map(boom, [1]))
            ref = weakref.ref(info.value)
            del info
            wait_for(lambda: ref() is None, "the exception to be freed")
        finally:
            gc.enable()


class TestShutdownFromInside:
    def test_view_shutdown_wait_from_its_own_call_raises(self, single: Dispatcher) -> None:
        """shutdown(wait=True) inside one of the view's calls raises RuntimeError instead of hanging."""
        executor = single.executor(0)
        future = executor.submit(lambda: executor.shutdown(wait=True))
        with pytest.raises(RuntimeError, match="from one of its own threads"):
            future.result(WAIT)
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(print)

    def test_view_shutdown_without_wait_from_its_own_call_works(self, single: Dispatcher) -> None:
        """shutdown(wait=False) inside a call just refuses new calls."""
        executor = single.executor(0)
        assert executor.submit(lambda: executor.shutdown(wait=False)).result(WAIT) is None
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(print)

    def test_thread_pool_shutdown_wait_from_its_own_call_raises(self) -> None:
        """ThreadPoolExecutor.shutdown(wait=True) from its own thread raises RuntimeError; the pool still stops."""
        executor = ThreadPoolExecutor(2, thread_name_prefix="jobdispatch-test-inside")
        future = executor.submit(lambda: executor.shutdown(wait=True))
        with pytest.raises(RuntimeError, match="from one of its own threads"):
            future.result(WAIT)
        with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
            executor.submit(print)
        executor.shutdown(wait=True)
        assert not threads_named("jobdispatch-test-inside")


class TestEventLoop:
    def test_run_in_executor_on_a_full_pool_does_not_deadlock_the_loop(self) -> None:
        """Jobs that need the loop, sent with run_in_executor to a small full pool, all finish."""
        d = Dispatcher([PoolConfig(0, 2, queue_size=0)], name="jobdispatch-test-loop")
        executor = d.executor(0)

        async def double(n: int) -> int:
            return 2 * n

        def job(loop: asyncio.AbstractEventLoop, n: int) -> int:
            return asyncio.run_coroutine_threadsafe(double(n), loop).result(WAIT)

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            calls = [loop.run_in_executor(executor, job, loop, n) for n in range(10)]
            return list(await asyncio.wait_for(asyncio.gather(*calls), 3 * WAIT))

        try:
            assert asyncio.run(main()) == [2 * n for n in range(10)]
        finally:
            d.finalize(cancel_pending=True, timeout=WAIT)
        assert d.stats(0).completed == 10

    def test_submit_on_a_loop_thread_returns_at_once_while_the_pool_is_full(self) -> None:
        """On the loop's thread submit returns a pending future; the call runs once room comes."""
        gate = threading.Event()
        d, executor = full_view(gate)
        ran: list[int] = []

        async def main() -> None:
            future = executor.submit(ran.append, 1)
            assert not future.done()
            assert d.stats(0).queued == 0  # not in the pool yet: it waits for room in the loop
            gate.set()
            await asyncio.wait_for(asyncio.wrap_future(future), WAIT)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran == [1]
        assert d.stats(0).completed == 2

    def test_cancelled_before_room_counts_nothing(self) -> None:
        """A future cancelled while its call waits for room never runs and is not counted."""
        gate = threading.Event()
        d, executor = full_view(gate)
        ran: list[int] = []

        async def main() -> None:
            future = executor.submit(ran.append, 1)
            await asyncio.sleep(0)
            assert future.cancel()
            gate.set()
            assert await d.wait_async(WAIT)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert ran == []
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 0, 0)

    def test_future_cancelled_while_waiting_for_room_is_done_for_wait(self) -> None:
        """A future cancelled while its call waits for room in the loop is done for concurrent.futures.wait."""
        gate = threading.Event()
        d, executor = full_view(gate)

        async def main() -> set[cf.Future[Any]]:
            future = executor.submit(int)
            await asyncio.sleep(0)
            assert future.cancel()
            loop = asyncio.get_running_loop()
            # Waited for on another thread: the loop goes on, and drops the call.
            return await loop.run_in_executor(None, lambda: cf.wait([future], timeout=WAIT).done)

        try:
            done = asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert len(done) == 1

    def test_future_cancelled_while_waiting_is_done_after_a_shutdown_on_the_loop_thread(self) -> None:
        """A future cancelled as its call waits for room, then dropped by shutdown on the loop's thread, is done."""
        gate = threading.Event()
        d, executor = full_view(gate)

        async def main() -> set[cf.Future[Any]]:
            future = executor.submit(int)
            await asyncio.sleep(0)
            assert future.cancel()
            executor.shutdown(wait=True)  # before the loop could drop the call itself
            return cf.wait([future], timeout=0).done

        try:
            done = asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert len(done) == 1

    def test_calls_waiting_when_the_loop_ends_still_run(self) -> None:
        """Calls still waiting for room when asyncio.run ends are handed to the pool, not lost."""
        gate = threading.Event()
        d, executor = full_view(gate)
        counter = Counter()

        async def main() -> list[cf.Future[None]]:
            futures = [executor.submit(counter) for _ in range(5)]
            gate.set()
            return futures

        try:
            futures = asyncio.run(main())
            assert [f.result(WAIT) for f in futures] == [None] * 5
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert counter.value == 5

    def test_shutdown_wait_on_the_loop_thread_hands_waiting_calls_over(self) -> None:
        """shutdown(wait=True) on a loop's thread runs the calls waiting for room in that loop."""
        gate = threading.Event()
        d, executor = full_view(gate)
        counter = Counter()
        opener = threading.Timer(0.05, gate.set)

        async def main() -> None:
            futures = [executor.submit(counter) for _ in range(3)]
            opener.start()  # the shutdown below blocks this loop until the pool has room
            executor.shutdown(wait=True)
            assert all(f.done() for f in futures)

        try:
            asyncio.run(main())
        finally:
            opener.cancel()
            gate.set()
            d.finalize(timeout=WAIT)
        assert counter.value == 3

    @pytest.mark.parametrize("chunksize", [None, 2])
    def test_shutdown_wait_on_the_loop_thread_hands_over_calls_already_waiting(self, chunksize: int | None) -> None:
        """shutdown(wait=True) on a loop's thread whose calls already wait in the loop for room: it returns, all ran."""
        gate = threading.Event()
        d, executor = full_view(gate)
        pool = d._pools[0]
        counter = Counter()
        opener = threading.Timer(0.05, gate.set)

        async def main() -> None:
            if chunksize is None:
                futures = [executor.submit(counter) for _ in range(3)]
            else:
                results = executor.map(lambda _: counter(), range(4), chunksize=chunksize)
            for _ in range(1000):  # let the waiting tasks run until each awaits room
                if len(pool._room_waiters) == (3 if chunksize is None else 2):
                    break
                await asyncio.sleep(0)
            assert len(pool._room_waiters) == (3 if chunksize is None else 2)
            opener.start()  # the shutdown below blocks this loop until the pool has room
            executor.shutdown(wait=True)
            if chunksize is None:
                assert all(f.done() for f in futures)
            else:
                assert list(results) == [None] * 4

        runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        try:
            runner.start()
            runner.join(WAIT)
            assert not runner.is_alive(), "shutdown(wait=True) never returned: a wake-up went to a cancelled waiter"
        finally:
            opener.cancel()
            gate.set()
            with contextlib.suppress(TimeoutError):
                d.finalize(cancel_pending=True, timeout=WAIT)
        assert counter.value == (3 if chunksize is None else 4)

    @pytest.mark.parametrize("how", ["submit", "map"])
    @pytest.mark.parametrize("shutdown", ["view, wait", "thread pool, wait", "thread pool, no wait"])
    def test_shutdown_runs_calls_left_waiting_for_room_in_a_closed_loop(
        self, how: str, shutdown: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Calls waiting for room in a loop that was closed without running them are run by shutdown, not waited for."""
        gate, started = threading.Event(), threading.Event()
        if shutdown.startswith("view"):
            d, executor = full_view(gate)
            owned: ThreadPoolExecutor | None = None
        else:
            owned = executor = ThreadPoolExecutor(1, thread_name_prefix="jobdispatch-test-closed", max_queue_size=0)  # type: ignore[assignment]
            owned.submit(gated(gate, started))
            assert started.wait(WAIT)
            d = owned._dispatcher
        pool = d._pools[0]
        counter = Counter()

        async def start_waiting() -> list[cf.Future[None]] | Iterator[None]:
            calls: Any = (
                [executor.submit(counter) for _ in range(2)]
                if how == "submit"
                else executor.map(lambda _: counter(), range(2), chunksize=2)
            )
            await until_waiting(pool, 2 if how == "submit" else 1)
            return calls

        loop = asyncio.new_event_loop()
        try:
            calls = loop.run_until_complete(start_waiting())
        finally:
            loop.close()  # its tasks, still waiting for room, never run again
        gate.set()
        closer = threading.Thread(target=executor.shutdown, args=(shutdown.endswith(", wait"),), name="test-closer")
        closer.start()
        closer.join(WAIT)
        try:
            assert not closer.is_alive(), "shutdown waits for calls stranded in a closed loop"
            if how == "submit":
                assert [future.result(WAIT) for future in calls] == [None, None]  # type: ignore[union-attr]
            else:
                assert list(calls) == [None, None]
            assert counter.value == 2
        finally:
            gate.set()
            d.finalize(cancel_pending=True, timeout=WAIT)
            del calls
            with caplog.at_level(logging.CRITICAL, logger="asyncio"):
                gc.collect()  # the closed loop's tasks: "destroyed but pending", as this test meant

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
    def test_ctrl_c_as_shutdown_hands_over_a_stranded_call_leaves_its_future_done_for_wait(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Ctrl-C while shutdown blocks handing over a call stranded in a closed loop: its future is done for wait."""
        assert threading.current_thread() is threading.main_thread()
        gate = threading.Event()
        d, executor = full_view(gate)
        pool = d._pools[0]

        async def start_waiting() -> cf.Future[int]:
            future = executor.submit(int)
            await until_waiting(pool, 1)
            return future

        loop = asyncio.new_event_loop()
        try:
            future = loop.run_until_complete(start_waiting())
        finally:
            loop.close()  # its task, still waiting for room, never runs again

        def strike() -> None:
            # Once shutdown blocks on the full pool, handing the call over.
            lock_type = type(threading.Lock())  # what a blocked thread waits on; a loop's task waits on a future
            wait_for(lambda: any(type(w) is lock_type for w in pool._room_waiters), "a blocked hand-over")
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

        striker = threading.Thread(target=strike, name="test-striker")
        striker.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                executor.shutdown()
            assert future.cancelled()
            assert cf.wait([future], timeout=WAIT).done == {future}  # never left cancelled and untold
        finally:
            striker.join(WAIT)
            gate.set()
            d.finalize(cancel_pending=True, timeout=WAIT)
            del future  # its done-callback holds the task
            with caplog.at_level(logging.CRITICAL, logger="asyncio"):
                gc.collect()  # the closed loop's task: "destroyed but pending"
        assert d.stats(0).completed == 1  # the gated job; the stranded call never counted

    def test_finalize_while_a_call_waits_for_room_settles_its_future(self) -> None:
        """A call waiting in a loop for room when the dispatcher is finalized gets DispatcherClosed."""
        gate = threading.Event()
        d, executor = full_view(gate)

        async def main() -> None:
            future = executor.submit(print)
            with pytest.raises(TimeoutError):
                d.finalize(cancel_pending=True, timeout=0.01)  # closes the pool, wakes the waiting call
            with pytest.raises(DispatcherClosed):
                await asyncio.wait_for(asyncio.wrap_future(future), WAIT)

        try:
            asyncio.run(main())
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert (d.stats(0).completed, d.stats(0).cancelled) == (1, 0)

    def test_thread_pool_shutdown_without_wait_lets_waiting_calls_run(self) -> None:
        """shutdown(wait=False) runs the calls still waiting for room in a loop, as it runs queued ones."""
        gate, started = threading.Event(), threading.Event()
        executor = ThreadPoolExecutor(1, thread_name_prefix="jobdispatch-test-loopwait", max_queue_size=0)
        executor.submit(gated(gate, started))
        assert started.wait(WAIT)

        async def main() -> int:
            future = executor.submit(len, "abc")  # no room: it waits in this loop
            executor.shutdown(wait=False)
            gate.set()
            return await asyncio.wait_for(asyncio.wrap_future(future), WAIT)

        try:
            assert asyncio.run(main()) == 3
        finally:
            gate.set()
            executor.shutdown(wait=True)
        assert executor.stats().completed == 2


async def until_waiting(pool: Any, count: int) -> None:
    """Let the loop run until ``count`` producers wait for room in ``pool``; fail if they do not within WAIT."""
    deadline = time.monotonic() + WAIT
    while len(pool._room_waiters) != count:
        assert time.monotonic() < deadline, f"timed out waiting for {count} producers to wait for room"
        await asyncio.sleep(0.001)


class TestDispatcherSubmit:
    def test_submit_returns_the_result(self, dispatcher: Dispatcher) -> None:
        """Dispatcher.submit runs fn(*args, **kwargs) in the chosen pool and returns its future."""
        future = dispatcher.submit(int, "ff", base=16, priority=1)
        assert future.result(WAIT) == 255
        assert dispatcher.wait(WAIT)
        assert dispatcher.stats(1).completed == 1

    def test_exception_goes_to_the_future(self) -> None:
        """A raising call sets the future's exception, counts as failed, and skips on_error."""
        seen: list[BaseException] = []
        with Dispatcher(1, on_error=lambda job, exc: seen.append(exc)) as d:
            with pytest.raises(ValueError, match="boom"):
                d.submit(fail).result(WAIT)
            assert d.wait(WAIT)
            assert d.stats(0).failed == 1
        assert seen == []

    def test_submit_has_backpressure(self) -> None:
        """submit(timeout=0) on a full pool raises PoolFull, and nothing is counted."""
        gate = threading.Event()
        d, _ = full_view(gate)
        try:
            with pytest.raises(PoolFull):
                d.submit(print, timeout=0)
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert (d.stats(0).completed, d.stats(0).cancelled) == (1, 0)

    def test_name_is_shown_in_the_repr_of_the_job(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The name given to submit is kept on the job and shown by its repr."""
        jobs: list[object] = []
        with Dispatcher(1) as d:
            original = d.dispatch

            def spy(job: Any, **kwargs: Any) -> None:
                jobs.append(job)
                original(job, **kwargs)

            monkeypatch.setattr(d, "dispatch", spy)
            assert d.submit(len, "abc", name="measure").result(WAIT) == 3
        assert "'measure'" in repr(jobs[0])

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"fn": 3}, r"^fn must be callable, got 3$"),
            ({"fn": print, "name": 3}, r"^name must be a str or None, got 3$"),
        ],
    )
    def test_bad_arguments_are_refused(self, single: Dispatcher, kwargs: dict[str, Any], message: str) -> None:
        """A non-callable fn or a non-str name raises TypeError naming it."""
        arguments = dict(kwargs)
        fn = arguments.pop("fn")
        with pytest.raises(TypeError, match=message):
            single.submit(fn, **arguments)
        assert single.stats(0).completed == 0

    def test_finalize_cancel_pending_cancels_submitted_futures(self) -> None:
        """Calls submitted with Dispatcher.submit and dropped by finalize get cancelled futures."""
        gate, started = threading.Event(), threading.Event()
        d = Dispatcher([PoolConfig(0, 1, queue_size=4)])
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        queued = [d.submit(print) for _ in range(2)]
        with pytest.raises(TimeoutError):
            d.finalize(cancel_pending=True, timeout=0.01)
        gate.set()
        d.finalize(timeout=WAIT)
        assert all(f.cancelled() for f in queued)


class TestThreadPoolExecutor:
    def test_shutdown_after_one_whose_closer_never_started_returns(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """shutdown(wait=True) after a shutdown(wait=False) whose thread Ctrl-C kept from starting returns."""
        real_start = threading.Thread.start

        def interrupted(thread: threading.Thread) -> None:
            if thread.name == "test-closer-shutdown":
                raise KeyboardInterrupt  # as Ctrl-C in Thread.start, before the thread started
            real_start(thread)

        executor = ThreadPoolExecutor(1, thread_name_prefix="test-closer")
        assert executor.submit(len, "ab").result(WAIT) == 2
        monkeypatch.setattr(threading.Thread, "start", interrupted)
        with pytest.raises(KeyboardInterrupt):
            executor.shutdown(wait=False)
        monkeypatch.undo()
        executor.shutdown(wait=True)  # raised RuntimeError: cannot join thread before it is started
        assert executor._dispatcher.closed

    def test_default_workers_follow_the_standard_library(self) -> None:
        """max_workers defaults to min(32, usable CPUs + 4)."""
        cpus = getattr(os, "process_cpu_count", os.cpu_count)() or os.cpu_count() or 1
        with ThreadPoolExecutor() as executor:
            assert executor._max_workers == min(32, cpus + 4)
            assert executor.stats().workers == min(32, cpus + 4)

    @pytest.mark.parametrize("workers", [0, -1])
    def test_max_workers_must_be_positive(self, workers: int) -> None:
        """max_workers <= 0 raises the standard library's ValueError."""
        with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
            ThreadPoolExecutor(workers)

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"max_workers": "2"}, TypeError, r"^max_workers must be an int or None, got '2'$"),
            ({"initializer": 3}, TypeError, r"^initializer must be callable or None, got 3$"),
            ({"max_queue_size": -1}, ValueError, r"^max_queue_size must be >= 0, got -1$"),
            ({"max_queue_size": 1.5}, TypeError, r"^max_queue_size must be an int or None, got 1.5$"),
            ({"initargs": 5}, TypeError, r"^initargs must be an iterable, got 5$"),
            ({"thread_name_prefix": 5}, TypeError, r"^thread_name_prefix must be a str or None, got 5$"),
        ],
    )
    def test_bad_arguments_are_refused(self, kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
        """Bad constructor arguments raise an error naming the argument and the value."""
        with pytest.raises(error, match=message):
            ThreadPoolExecutor(**kwargs)

    def test_a_list_of_initargs_and_no_thread_name_prefix_are_taken_as_the_standard_library_takes_them(self) -> None:
        """initargs as a list, and thread_name_prefix=None (the default name), are accepted."""
        seen: list[tuple[int, int]] = []
        with ThreadPoolExecutor(1, None, lambda a, b: seen.append((a, b)), [1, 2]) as executor:
            name = executor.submit(lambda: threading.current_thread().name).result(WAIT)
        assert seen == [(1, 2)]
        assert name.startswith("ThreadPoolExecutor-")

    def test_submit_after_shutdown_raises(self) -> None:
        """submit after shutdown raises the standard library's RuntimeError."""
        executor = ThreadPoolExecutor(1)
        executor.shutdown()
        with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
            executor.submit(print)

    def test_threads_start_on_demand_up_to_max_workers(self) -> None:
        """Threads start as calls need them, never more than max_workers, and are reused when idle."""
        gate = threading.Event()
        with ThreadPoolExecutor(4, thread_name_prefix="jobdispatch-test-cap") as executor:
            for _ in range(3):
                executor.submit(len, "abc").result(WAIT)
                wait_for(lambda: executor.stats().busy == 0, "the thread to be idle again")
            assert len(threads_named("jobdispatch-test-cap")) == 1
            futures = [executor.submit(gate.wait, WAIT) for _ in range(60)]
            assert len(threads_named("jobdispatch-test-cap")) == 4
            gate.set()
            assert all(f.result(WAIT) for f in futures)
        assert not threads_named("jobdispatch-test-cap")

    def test_initializer_runs_once_per_thread_before_its_first_call(self) -> None:
        """The initializer runs once in each thread, with initargs, before that thread's first call."""
        gate = threading.Event()
        local = threading.local()
        inits: list[str] = []
        lock = threading.Lock()

        def init(tag: str) -> None:
            with lock:
                inits.append(threading.current_thread().name)
            local.tag = tag

        with ThreadPoolExecutor(3, thread_name_prefix="jobdispatch-test-init", initializer=init, initargs=("x",)) as ex:
            futures = [ex.submit(lambda: (gate.wait(WAIT), local.tag)[1]) for _ in range(9)]
            wait_for(lambda: ex.stats().busy == 3, "three busy threads")
            gate.set()
            assert [f.result(WAIT) for f in futures] == ["x"] * 9
        assert sorted(inits) == sorted(set(inits))
        assert len(inits) == 3

    def test_failing_initializer_breaks_the_pool(self, caplog: pytest.LogCaptureFixture) -> None:
        """A raising initializer is logged; queued calls and later submits raise BrokenThreadPool."""
        release = threading.Event()

        def init() -> None:
            release.wait(WAIT)
            raise OSError("no database")

        executor = ThreadPoolExecutor(1, thread_name_prefix="jobdispatch-test-broken", initializer=init)
        with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
            futures = [executor.submit(print) for _ in range(3)]
            release.set()
            for future in futures:
                with pytest.raises(BrokenThreadPool):
                    future.result(WAIT)
        assert executor._broken
        with pytest.raises(BrokenThreadPool):
            executor.submit(print)
        executor.shutdown()
        assert executor.stats().cancelled == 3
        logged = [r for r in caplog.records if r.name == "concurrent.futures" and r.levelno == logging.CRITICAL]
        assert len(logged) == 1
        assert logged[0].exc_info is not None
        assert str(logged[0].exc_info[1]) == "no database"

    def test_shutdown_cancel_futures_cancels_queued_calls_without_waiting(self) -> None:
        """shutdown(wait=False, cancel_futures=True) cancels queued calls; threads exit once the rest is done."""
        gate, started = threading.Event(), threading.Event()
        executor = ThreadPoolExecutor(1, thread_name_prefix="jobdispatch-test-nowait")
        running = executor.submit(gated(gate, started))
        assert started.wait(WAIT)
        queued = [executor.submit(print) for _ in range(5)]
        executor.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        gate.set()
        assert running.result(WAIT) is None
        for thread in threads_named("jobdispatch-test-nowait"):
            thread.join(WAIT)
            assert not thread.is_alive()

    def test_max_queue_size_makes_submit_block(self) -> None:
        """With max_queue_size, submit blocks while the queue is full and goes on when room comes."""
        gate, started, submitted = threading.Event(), threading.Event(), threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="jobdispatch-test-bounded", max_queue_size=1) as executor:
            executor.submit(gated(gate, started))
            assert started.wait(WAIT)
            executor.submit(print)

            def third() -> None:
                executor.submit(print)
                submitted.set()

            producer = threading.Thread(target=third, name="test-producer")
            producer.start()
            assert not submitted.wait(0.2)  # blocked: one running, one queued
            assert executor.stats().queued == 1
            gate.set()
            assert submitted.wait(WAIT)
            producer.join(WAIT)
        assert executor.stats().completed == 3

    def test_repr_and_stats_show_the_state(self) -> None:
        """repr names the executor and its state; stats() counts its calls."""
        executor = ThreadPoolExecutor(2, thread_name_prefix="jobdispatch-test-repr")
        executor.submit(len, "ab").result(WAIT)
        assert repr(executor).startswith("<jobdispatch.ThreadPoolExecutor 'jobdispatch-test-repr' open, ")
        executor.shutdown()
        assert "shut down" in repr(executor)
        assert executor.stats().completed == 1


def run_child(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter; return its outcome."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=6 * WAIT,
        check=False,
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
class TestForkedChild:
    @pytest.mark.parametrize("kind", ["thread-pool", "view"])
    def test_inherited_executor_refuses_calls_and_shuts_down_at_once(self, kind: str) -> None:
        """In a child made by fork(), an inherited executor refuses calls; shutdown() returns though calls ran."""
        gate, started = threading.Event(), threading.Event()
        dispatcher = Dispatcher(1, name="test-exec-fork") if kind == "view" else None
        executor: Any = ThreadPoolExecutor(1) if dispatcher is None else dispatcher.executor(0)
        try:
            running = executor.submit(gated(gate, started))
            assert started.wait(WAIT)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child's coverage is not collected
                code = 1
                try:
                    signal.alarm(int(WAIT))  # a shutdown that hangs ends the child, with a signal
                    try:
                        executor.submit(int)
                    except RuntimeError as error:
                        if str(error).endswith("inherited through fork(): create a new one in the child"):
                            code = 2
                    if code == 2:
                        executor.shutdown(wait=True)
                        code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            gate.set()
            assert running.result(WAIT) is None
            assert executor.submit(int, 3).result(WAIT) == 3  # the parent's executor is unharmed
        finally:
            gate.set()
            executor.shutdown()
            if dispatcher is not None:
                dispatcher.finalize(timeout=WAIT)


class TestInterpreterExit:
    def test_calls_pending_at_exit_run(self) -> None:
        """Calls of an executor never shut down run before the interpreter exits."""
        child = run_child("""
            import time
            from jobdispatch import ThreadPoolExecutor
            executor = ThreadPoolExecutor(2)
            executor.submit(lambda: (time.sleep(0.2), print("apple", flush=True)))
        """)
        assert (child.returncode, child.stdout.strip(), child.stderr) == (0, "apple", "")

    def test_shutdown_without_wait_does_not_hang_at_exit(self) -> None:
        """shutdown(wait=False) with a call running lets the interpreter exit once it is done."""
        child = run_child("""
            import time
            from jobdispatch import ThreadPoolExecutor
            executor = ThreadPoolExecutor(3)
            executor.submit(lambda: (time.sleep(0.2), print("apple", flush=True)))
            executor.shutdown(wait=False)
        """)
        assert (child.returncode, child.stdout.strip(), child.stderr) == (0, "apple", "")

    def test_submit_after_interpreter_shutdown_raises(self) -> None:
        """A submit from an exit hook that runs after the library's raises the standard library's error."""
        child = run_child("""
            import atexit

            @atexit.register
            def late():
                try:
                    executor.submit(id, None)
                except RuntimeError as error:
                    print(error)

            from jobdispatch import ThreadPoolExecutor
            executor = ThreadPoolExecutor(2)
            executor.submit(id, 42).result()
        """)
        assert child.stdout.strip() == "cannot schedule new futures after interpreter shutdown"
