"""Uses the public API the way the docs show; checked by `mypy --strict`, not run by pytest."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from typing import assert_type

from jobdispatch import (
    Batch,
    DelayedJob,
    Dispatcher,
    DispatcherClosed,
    Job,
    PoolConfig,
    PoolExecutor,
    PoolFull,
    PoolStats,
    ThreadPoolExecutor,
)


class Download:
    def __init__(self, url: str) -> None:
        self.url = url

    def do(self) -> None:
        time.sleep(0.001)

    def priority(self) -> int:
        return 0


def use_the_api() -> None:
    job: Job = Download("https://example.invalid")
    config = [PoolConfig(0, workers=4, queue_size=8), PoolConfig(1, workers=2)]
    with Dispatcher(config, name="typing", on_error=lambda job, exc: None) as dispatcher:
        dispatcher.dispatch(job)
        dispatcher.dispatch(lambda: None, priority=1, timeout=0.5)
        with contextlib.suppress(PoolFull):
            dispatcher.dispatch(print, priority=1, timeout=0)
        later = dispatcher.dispatch_later(0.01, job)
        assert_type(later, DelayedJob)
        due: float = later.due
        assert_type(later.cancel(), bool)
        print(due, later.cancelled(), later.done())
        assert_type(dispatcher.wait(timeout=1.0), bool)
        with dispatcher.batch(progress=lambda done, total: None) as batch:
            assert_type(batch, Batch)
            batch.dispatch(job)
            assert_type(batch.dispatch_later(0.0, print, priority=1), DelayedJob)
        assert_type(dispatcher.stats(0), PoolStats)
        assert_type(dispatcher.stats(), dict[int, PoolStats])
        assert_type(dispatcher.priorities, tuple[int, ...])
        busy: int = dispatcher.stats(0).busy
        print(busy, dispatcher.available_workers(0), dispatcher.total_workers(1), dispatcher.queued_jobs(0))

        executor = dispatcher.executor(0)
        assert_type(executor, PoolExecutor)
        future = executor.submit(pow, 2, 10)
        assert_type(future, concurrent.futures.Future[int])
        squares: list[int] = list(executor.map(lambda n: n * n, range(10), buffersize=4))
        print(squares)
        submitted = dispatcher.submit(len, "abc", priority=1, timeout=1.0, name="measure")
        assert_type(submitted, concurrent.futures.Future[int])
    with contextlib.suppress(DispatcherClosed):
        dispatcher.dispatch(job)


def scale(n: int, *, by: float) -> float:
    return n * by


def use_the_thread_pool() -> None:
    with ThreadPoolExecutor(4, thread_name_prefix="typing", initializer=print, initargs=("ready",)) as executor:
        assert_type(executor.submit(len, "abc"), concurrent.futures.Future[int])
        lengths: list[int] = list(executor.map(len, ["a", "bc"], timeout=1.0))
        assert_type(executor.stats(), PoolStats)
        print(lengths)
    bounded = ThreadPoolExecutor(max_queue_size=100)
    bounded.shutdown(wait=False, cancel_futures=True)


async def use_asyncio() -> None:
    with Dispatcher({0: 4}) as dispatcher:
        await dispatcher.dispatch_async(print)
        finished: bool = await dispatcher.wait_async(timeout=1)
        async with dispatcher.batch() as batch:
            await batch.dispatch_async(print)
        print(finished)
    async with Dispatcher({0: 4, 1: 1}) as pools:
        assert_type(pools, Dispatcher)
        assert_type(await pools.run(scale, 3, by=0.5, priority=1, name="scale"), float)


if __name__ == "__main__":
    use_the_api()
    use_the_thread_pool()
    asyncio.run(use_asyncio())


def fetch(url: str, *, retries: int = 1) -> bytes:
    return url.encode() * retries


def use_arguments() -> None:
    with Dispatcher(2) as dispatcher:
        for url in ["a", "b"]:
            dispatcher.dispatch(fetch, url)  # arguments bound at the call, checked against fetch
            dispatcher.dispatch_later(0.1, fetch, url, name=f"fetch {url}")
        with dispatcher.batch() as batch:
            batch.dispatch(fetch, "c")
            handle: DelayedJob = batch.dispatch_later(0.0, fetch, "d")
            handle.cancel()
