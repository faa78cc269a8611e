"""asyncio integration: dispatch_async, wait_async, async batches."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, PoolConfig


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
