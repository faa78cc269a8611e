"""Dispatcher.executor(): a concurrent.futures.Executor view of one pool."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Iterator

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, PoolConfig, UnknownPriority


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

    def test_map_reads_input_lazily(self, single: Dispatcher) -> None:
        """map() submits at most buffersize calls ahead of the consumer."""
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
