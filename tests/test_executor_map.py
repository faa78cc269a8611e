"""The executors' map: the bulk hand-over, chunks of calls, and every semantic of a loop of submit."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobdispatch import Dispatcher, PoolConfig, ThreadPoolExecutor
from support import WAIT, Kit, gated, wait_for


def _gated_first(gate: threading.Event, started: threading.Event, ran: list[int]) -> Callable[[int], int]:
    """Return a call that blocks on ``gate`` for item 0 and records every other item it runs."""

    def call(n: int) -> int:
        if n == 0:
            started.set()
            assert gate.wait(3 * WAIT)
        else:
            ran.append(n)
        return n

    return call


def _meet_at_chunk_starts(chunks: int, chunksize: int) -> Callable[[int], int]:
    """Return a call that gives its thread's identity; the first call of each chunk waits for the others.

    So every chunk is running at once, each on its own worker: calls not
    grouped would spread over the workers.
    """
    barrier = threading.Barrier(chunks, timeout=WAIT)

    def call(n: int) -> int:
        if n % chunksize == 0:
            barrier.wait()
        return threading.get_ident()

    return call


class TestResults:
    @pytest.mark.parametrize("chunksize", [1, 3, 64])
    def test_results_come_in_input_order(self, kit: Kit, chunksize: int) -> None:
        """map() yields fn's results in input order, whatever the chunk size."""
        d = kit.dispatcher(4)
        assert list(d.executor(0).map(lambda x: x * x, range(100), chunksize=chunksize)) == [x * x for x in range(100)]

    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_thread_pool_executor_zips_iterables_to_the_shortest(self, chunksize: int) -> None:
        """ThreadPoolExecutor.map zips several iterables and stops at the shortest, chunked or not."""
        with ThreadPoolExecutor(3) as executor:
            assert list(executor.map(pow, [2, 3, 4, 5, 6], [3, 2, 1], chunksize=chunksize)) == [8, 9, 4]

    def test_empty_input_submits_nothing(self, kit: Kit) -> None:
        """map() over an empty iterable yields nothing and counts nothing, with any fn."""
        d = kit.dispatcher(2)
        assert list(d.executor(0).map(3, [], chunksize=4)) == []  # type: ignore[arg-type]
        assert d.stats(0).completed == 0

    def test_non_callable_is_refused_at_map(self, kit: Kit) -> None:
        """map() with a non-callable fn and some input raises TypeError naming it, and runs nothing."""
        d = kit.dispatcher(2)
        with pytest.raises(TypeError, match=r"^fn must be callable, got 3$"):
            d.executor(0).map(3, [1, 2], chunksize=2)  # type: ignore[arg-type]
        assert d.wait(WAIT)
        assert d.stats(0).completed == d.stats(0).cancelled == 0

    def test_context_of_the_caller_reaches_each_call_of_a_chunk(self, kit: Kit) -> None:
        """With propagate_context, each call of a chunk runs in a copy of map's caller's context."""
        import contextvars

        request = contextvars.ContextVar("request", default="none")

        def read_and_change(_: int) -> str:
            seen = request.get()
            request.set("changed by a call")
            return seen

        d = kit.dispatcher(2)
        token = request.set("r-7")
        try:
            results = list(d.executor(0).map(read_and_change, range(6), chunksize=3))
        finally:
            request.reset(token)
        assert results == ["r-7"] * 6


class TestChunks:
    def test_a_chunk_runs_on_one_worker(self, kit: Kit) -> None:
        """With chunksize=n, each run of n consecutive calls runs on one thread; the chunks on different ones."""
        d = kit.dispatcher(4)
        idents = list(d.executor(0).map(_meet_at_chunk_starts(4, 5), range(20), chunksize=5))
        groups = [set(idents[start : start + 5]) for start in range(0, 20, 5)]
        assert [len(group) for group in groups] == [1, 1, 1, 1], idents
        assert len(set(idents)) == 4  # the four chunks ran at once, each on its own worker

    @pytest.mark.parametrize(("chunksize", "queued"), [(1, 12), (4, 3), (5, 3), (12, 1), (100, 1)])
    def test_a_chunk_is_one_queue_item(self, kit: Kit, chunksize: int, queued: int) -> None:
        """Calls go to the pool chunksize at a time: stats().queued counts chunks; completed counts calls."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=16)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        results = d.executor(0).map(abs, range(-12, 0), chunksize=chunksize)
        assert d.stats(0).queued == queued
        gate.set()
        assert list(results) == list(range(12, 0, -1))
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.failed, stats.cancelled, stats.busy) == (13, 0, 0, 0)

    def test_thread_pool_executor_sends_chunks_too(self) -> None:
        """ThreadPoolExecutor.map(chunksize=) groups its calls the same way."""
        with ThreadPoolExecutor(2) as executor:
            idents = list(executor.map(_meet_at_chunk_starts(2, 6), range(12), chunksize=6))
            assert len(set(idents[:6])) == len(set(idents[6:])) == 1
            assert idents[0] != idents[6]
        assert executor.stats().completed == 12

    def test_backed_pool_gets_each_call_on_its_own(self, kit: Kit) -> None:
        """A pool with a backend gets map's calls one by one, chunksize or not; results and counts hold."""
        with cf.ThreadPoolExecutor(2) as engine:
            d = kit.dispatcher([PoolConfig(0, 2, backend=engine)])
            assert list(d.executor(0).map(abs, range(-9, 0), chunksize=4)) == list(range(9, 0, -1))
            assert d.wait(WAIT)
            d.finalize(timeout=WAIT)
        assert d.stats(0).completed == 9


class TestCancellation:
    def test_cancelled_calls_of_a_running_chunk_raise_cancelled_error_in_order(self, kit: Kit) -> None:
        """shutdown(cancel_futures=True) as a chunk runs: the calls it ran give results, the rest CancelledError."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=4)])
        executor = d.executor(0)
        gate, started, ran = kit.gate(), threading.Event(), []
        results = executor.map(_gated_first(gate, started, ran), range(4), chunksize=4)
        assert started.wait(WAIT)
        executor.shutdown(wait=False, cancel_futures=True)
        gate.set()
        assert next(results) == 0
        with pytest.raises(cf.CancelledError):
            next(results)
        assert d.wait(WAIT)
        assert ran == []
        assert (d.stats(0).completed, d.stats(0).cancelled) == (1, 3)

    def test_timeout_cancels_the_calls_of_queued_chunks(self, kit: Kit) -> None:
        """A map that times out cancels every call not started, in queued chunks too; each counts once."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=4)])
        gate, started, ran = kit.gate(), threading.Event(), []
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        results = d.executor(0).map(ran.append, range(10), chunksize=4, timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)
        gate.set()
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert ran == []
        assert (stats.completed, stats.failed, stats.cancelled) == (1, 0, 10)

    def test_finalize_cancel_pending_cancels_the_futures_of_a_queued_chunk(self, kit: Kit) -> None:
        """finalize(cancel_pending=True) drops a queued chunk: each of its futures is cancelled and counted."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=4)])
        gate, started, ran = kit.gate(), threading.Event(), []
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        results = d.executor(0).map(ran.append, range(6), chunksize=3)
        finalizer = threading.Thread(target=d.finalize, kwargs={"cancel_pending": True, "timeout": WAIT})
        finalizer.start()
        wait_for(lambda: d.stats(0).cancelled == 2, "the two queued chunks counted cancelled")
        gate.set()
        finalizer.join(WAIT)
        assert not finalizer.is_alive()
        with pytest.raises(cf.CancelledError):
            next(results)
        assert ran == []
        assert (d.stats(0).completed, d.stats(0).cancelled) == (1, 6)

    def test_shutdown_cancel_futures_cancels_chunked_calls(self) -> None:
        """ThreadPoolExecutor.shutdown(cancel_futures=True) cancels the chunked calls not started."""
        gate, started, ran = threading.Event(), threading.Event(), []
        executor = ThreadPoolExecutor(1)
        try:
            results = executor.map(_gated_first(gate, started, ran), range(8), chunksize=4)
            assert started.wait(WAIT)
            closer = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
            closer.start()
            wait_for(lambda: len(executor._pending.snapshot()) == 1, "every call but the running one cancelled")
        finally:
            gate.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert next(results) == 0
        with pytest.raises(cf.CancelledError):
            next(results)
        stats = executor.stats()
        assert ran == []
        assert (stats.completed, stats.cancelled) == (1, 7)


class TestTimeoutAndErrors:
    def test_timeout_cancels_the_rest_of_the_chunk(self, kit: Kit) -> None:
        """map(timeout=) raises TimeoutError while a chunk's first call blocks; its other calls never run."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=4)])
        gate, started, ran = kit.gate(), threading.Event(), []
        results = d.executor(0).map(_gated_first(gate, started, ran), range(6), chunksize=3, timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)
        gate.set()
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert ran == []
        assert (stats.completed, stats.failed, stats.cancelled) == (1, 0, 5)

    def test_timeout_while_the_pool_is_full_submits_no_partial_chunk(self, kit: Kit) -> None:
        """A chunk the full pool had no room for before the timeout is not submitted: TimeoutError, nothing runs."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=1)])
        gate, started, ran = kit.gate(), threading.Event(), []
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        results = d.executor(0).map(ran.append, range(8), chunksize=4, timeout=0.05)
        with pytest.raises(TimeoutError):
            list(results)
        gate.set()
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert ran == []
        assert (stats.completed, stats.cancelled) == (1, 4)  # the chunk that got the free place, cancelled

    def test_error_is_reraised_and_each_failure_counted(self, kit: Kit) -> None:
        """A call's exception is raised from the iterator; failures in chunks count one by one, unreported."""
        seen: list[BaseException] = []
        d = kit.dispatcher(2, on_error=lambda job, error: seen.append(error))
        results = d.executor(0).map(int, ["x", "y", "z", "w"], chunksize=2)
        assert d.wait(WAIT)  # every call over: the error cancels none of them
        with pytest.raises(ValueError, match="invalid literal"):
            list(results)
        stats = d.stats(0)
        assert (stats.completed, stats.failed, stats.cancelled) == (0, 4, 0)
        assert seen == []

    def test_mixed_chunks_count_exactly(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """Chunks mixing results and failures count each call once, and log nothing."""
        d = kit.dispatcher(3)
        items = [str(n) if n % 4 else "bad" for n in range(23)]
        parsed = list(d.executor(0).map(_parse_or_none, items, chunksize=5))
        assert parsed.count(None) == 6
        with caplog.at_level(logging.ERROR, logger="jobdispatch"):
            results = d.executor(0).map(int, items[:4], chunksize=4)  # "bad" first: the chunk goes on
            assert d.wait(WAIT)
            with pytest.raises(ValueError, match="invalid literal"):
                list(results)
        stats = d.stats(0)
        assert (stats.completed, stats.failed, stats.cancelled) == (23 + 3, 1, 0)
        assert caplog.records == []


def _parse_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class TestPendingAndRounds:
    def test_shutdown_waits_for_chunked_calls(self) -> None:
        """shutdown(wait=True) returns only once every call of map, in every chunk, has run."""
        gate, started, ran = threading.Event(), threading.Event(), []
        executor = ThreadPoolExecutor(2)
        try:
            executor.map(_gated_first(gate, started, ran), range(9), chunksize=3)
            assert started.wait(WAIT)
            closer = threading.Thread(target=executor.shutdown)
            closer.start()
            closer.join(0.05)
            assert closer.is_alive()  # the gated call holds it
        finally:
            gate.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert sorted(ran) == list(range(1, 9))
        assert executor.stats().completed == 9

    def test_view_shutdown_waits_for_chunked_calls(self, kit: Kit) -> None:
        """PoolExecutor.shutdown(wait=True) waits for the calls map sent in chunks."""
        d = kit.dispatcher([PoolConfig(0, 2, queue_size=8)])
        executor = d.executor(0)
        gate, started, ran = kit.gate(), threading.Event(), []
        executor.map(_gated_first(gate, started, ran), range(9), chunksize=2)
        assert started.wait(WAIT)
        closer = threading.Thread(target=executor.shutdown)
        closer.start()
        closer.join(0.05)
        assert closer.is_alive()  # the gated call holds it
        gate.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert sorted(ran) == list(range(1, 9))

    def test_workers_never_wait_for_the_executors_lock(self, kit: Kit) -> None:
        """Calls end, their futures settled, while another thread holds the executor's lock: no worker queues on it."""
        d = kit.dispatcher(2)
        executor = d.executor(0)
        gate, started, ran = kit.gate(), threading.Event(), []
        results = executor.map(_gated_first(gate, started, ran), range(8), chunksize=2)
        assert started.wait(WAIT)
        with executor._pending.lock:  # as a submit or a shutdown on another thread would, switched out meanwhile
            gate.set()
            assert d.wait(WAIT)
        assert list(results) == list(range(8))

    def test_map_after_shutdown_is_refused(self) -> None:
        """map() on a shut-down ThreadPoolExecutor raises its RuntimeError, chunked or not."""
        executor = ThreadPoolExecutor(1)
        executor.shutdown()
        for chunksize in (1, 3):
            with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
                executor.map(abs, [1, 2, 3], chunksize=chunksize)

    @pytest.mark.parametrize("chunksize", [1, 3])
    def test_map_from_inside_a_job_joins_its_round(self, kit: Kit, chunksize: int) -> None:
        """A map called from inside a job is a follow-up: wait() waits for its calls."""
        d = kit.dispatcher([PoolConfig(0, 2, queue_size=16)])
        gate, ran, outer_done = kit.gate(), [], threading.Event()

        def slow(n: int) -> None:
            assert gate.wait(3 * WAIT)
            ran.append(n)

        def outer() -> None:
            d.executor(0).map(slow, range(10), chunksize=chunksize)
            outer_done.set()

        d.dispatch(outer)
        assert outer_done.wait(WAIT)
        seen_at_return: list[int] = []

        def waiter() -> None:
            assert d.wait(3 * WAIT)
            seen_at_return.append(len(ran))

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.05)
        assert thread.is_alive()  # the calls map sent hold the round open
        gate.set()
        thread.join(WAIT)
        assert seen_at_return == [10]


class TestBufferedChunks:
    def test_buffered_map_reads_a_chunk_at_a_time(self, kit: Kit) -> None:
        """map(buffersize=b, chunksize=c) keeps at most b calls ahead of the result taken, sent c at a time."""
        d = kit.dispatcher(2)
        read: list[int] = []

        def numbers() -> Iterator[int]:
            for n in range(20):
                read.append(n)
                yield n

        results = d.executor(0).map(abs, numbers(), buffersize=4, chunksize=2)
        assert len(read) == 4
        taken = []
        for value in results:
            taken.append(value)
            assert len(read) - len(taken) <= 4
        assert taken == list(range(20))
        assert d.wait(WAIT)
        assert d.stats(0).completed == 20

    def test_chunks_larger_than_the_buffer_are_cut_to_it(self, kit: Kit) -> None:
        """With chunksize > buffersize, each hand-over holds buffersize calls at most."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=8)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        results = d.executor(0).map(abs, range(10), buffersize=3, chunksize=8)
        assert d.stats(0).queued == 1
        gate.set()
        assert list(results) == list(range(10))

    def test_buffered_map_of_a_subclass_submits_through_its_submit(self) -> None:
        """A lazy map of a ThreadPoolExecutor subclass makes each call through its submit, buffersize ahead."""
        seen: list[int] = []

        class Recording(ThreadPoolExecutor):
            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
                seen.append(args[0])
                return super().submit(fn, *args, **kwargs)

        with Recording(2) as executor:
            results = executor.map(abs, range(-10, 0), buffersize=3, chunksize=2)
            assert seen == [-10, -9, -8]
            assert next(results) == 10
            assert seen == [-10, -9, -8, -7]
            assert list(results) == list(range(9, 0, -1))
        assert seen == list(range(-10, 0))

    def test_buffered_map_of_a_collected_subclass_raises(self) -> None:
        """A lazy map of a subclass with its own submit, whose executor was collected, says so."""

        class Own(ThreadPoolExecutor):
            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
                return super().submit(fn, *args, **kwargs)

        executor = Own(1, thread_name_prefix="jobdispatch-test-own")
        results = executor.map(abs, range(10), buffersize=1)
        assert next(results) == 0
        del executor
        gc.collect()
        with pytest.raises(RuntimeError, match=r"the executor of this map was garbage-collected$"):
            list(results)


class TestChunksizeArgument:
    @pytest.mark.parametrize("make", [lambda: Dispatcher(1).executor(0), lambda: ThreadPoolExecutor(1)])
    def test_bad_chunksize_is_refused(self, make: Callable[[], Any]) -> None:
        """chunksize must be an int >= 1: ValueError or TypeError naming it and the value, before any call."""
        executor = make()
        ran: list[int] = []
        try:
            with pytest.raises(ValueError, match=r"^chunksize must be >= 1, got 0$"):
                executor.map(ran.append, [1], chunksize=0)
            with pytest.raises(ValueError, match=r"^chunksize must be >= 1, got -3$"):
                executor.map(ran.append, [1], chunksize=-3)
            with pytest.raises(TypeError, match=r"^chunksize must be an int, got 1.5$"):
                executor.map(ran.append, [1], chunksize=1.5)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^chunksize must be an int, got True$"):
                executor.map(ran.append, [1], chunksize=True)
        finally:
            executor.shutdown()
            dispatcher = getattr(executor, "_dispatcher", None)
            if dispatcher is not None:
                dispatcher.finalize(timeout=WAIT)
        assert ran == []


class TestEventLoopThread:
    def test_map_on_a_loop_thread_does_not_block_on_a_full_pool(self, kit: Kit) -> None:
        """On a loop's thread, map returns at once while the pool is full; the chunked calls run once room comes."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)

        async def main() -> list[int]:
            results = d.executor(0).map(abs, range(-6, 0), chunksize=3)  # returns without blocking the loop
            gate.set()
            return await asyncio.wait_for(asyncio.to_thread(list, results), WAIT)

        assert asyncio.run(main()) == list(range(6, 0, -1))
        assert d.wait(WAIT)
        assert d.stats(0).completed == 7


class TestInsideTheirOwnPool:
    def test_map_into_its_own_full_pool_runs_the_chunks_in_the_job(self, kit: Kit) -> None:
        """A job that maps into its own full pool runs each chunk itself, as dispatch does, instead of deadlocking."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        here: list[int] = []

        def outer() -> list[int]:
            here.append(threading.get_ident())
            return list(d.executor(0).map(lambda n: (n, threading.get_ident()), range(6), chunksize=3))

        results = d.submit(outer).result(WAIT)
        assert [n for n, _ in results] == list(range(6))
        assert {ident for _, ident in results} == set(here)
        assert d.wait(WAIT)
        assert d.stats(0).completed == 7


class TestBrokenExecutor:
    def test_chunked_calls_of_a_broken_executor_get_broken_thread_pool(self, caplog: pytest.LogCaptureFixture) -> None:
        """When a thread initializer fails, every call of a chunk not started settles with BrokenThreadPool."""
        from concurrent.futures.thread import BrokenThreadPool

        gate = threading.Event()

        def boom() -> None:
            assert gate.wait(WAIT)  # both chunks are queued by then
            raise RuntimeError("initializer failed")

        executor = ThreadPoolExecutor(1, initializer=boom)
        try:
            with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
                results = executor.map(abs, range(6), chunksize=3)
                assert executor.stats().queued == 2
                gate.set()
                with pytest.raises(BrokenThreadPool):
                    next(results)
        finally:
            gate.set()
            executor.shutdown()
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (0, 0, 6)


class _Boom(Exception):
    """What the failing calls raise."""


def _boom(_: int) -> None:
    raise _Boom


class TestReferences:
    def test_failure_in_a_chunk_is_freed_without_the_cycle_collector(self, kit: Kit) -> None:
        """The exception a chunked call raises forms no cycle through the chunk, the call or its future."""
        d = kit.dispatcher(2)
        gc.disable()
        try:
            results = d.executor(0).map(_boom, [1, 2, 3], chunksize=3)
            assert d.wait(WAIT)
            with pytest.raises(_Boom) as info:
                list(results)
            ref = weakref.ref(info.value)
            del info, results
            wait_for(lambda: ref() is None, "the exception to be freed")
        finally:
            gc.enable()

    def test_a_result_taken_from_a_chunk_is_not_kept(self, kit: Kit) -> None:
        """Once yielded, a result of a chunk is held neither by the iterator nor by the chunk's future."""
        d = kit.dispatcher(2)
        results = d.executor(0).map(_Box, range(4), chunksize=4)
        first = next(results)
        ref = weakref.ref(first)
        del first
        # Three results of its chunk still wait in the iterator. (Without the GIL CPython may free
        # an object made by another thread a little later: hence the wait.)
        wait_for(lambda: ref() is None, "the result taken to be freed")
        assert [box.value for box in results] == [1, 2, 3]


class _Box:
    def __init__(self, value: int) -> None:
        self.value = value


class TestChunkResults:
    def test_results_before_a_failing_call_come_first_and_the_rest_of_its_chunk_runs(self, kit: Kit) -> None:
        """A call raises in the middle of a chunk: the results before it are yielded, then it raises; the others ran."""
        d = kit.dispatcher(1)
        ran: list[int] = []

        def record(n: int) -> int:
            ran.append(n)
            if n == 2:
                raise KeyError(n)
            return n

        results = d.executor(0).map(record, range(5), chunksize=5)
        assert next(results) == 0
        assert next(results) == 1
        with pytest.raises(KeyError):
            next(results)
        assert d.wait(WAIT)
        assert ran == [0, 1, 2, 3, 4]
        stats = d.stats(0)
        assert (stats.completed, stats.failed, stats.cancelled) == (4, 1, 0)
