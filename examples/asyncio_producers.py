"""asyncio producers feeding a bounded pool of threads.

Three coroutines receive requests and hand the blocking part of each one
(here: a hash and a short blocking call) to a pool of 4 threads with a
queue of 4. When the pool is full a producer waits without blocking the
event loop: a heartbeat coroutine keeps ticking all along. Each job's result
comes back to the event loop as an asyncio future.

Run it with ``python examples/asyncio_producers.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from jobdispatch import Dispatcher, PoolConfig

T = TypeVar("T")
PRODUCERS, REQUESTS = 3, 20


def blocking_work(producer: int, n: int) -> str:
    """Stands for a blocking call: a database query, a file write, a C library."""
    time.sleep(0.01)
    return hashlib.sha256(f"{producer}:{n}".encode()).hexdigest()[:12]


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


async def submit(dispatcher: Dispatcher, fn: Callable[[], T]) -> asyncio.Future[T]:
    """Dispatch ``fn`` without blocking the event loop; return a future of its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def job() -> None:
        try:
            result = fn()
        except Exception as error:
            loop.call_soon_threadsafe(_settle, future, None, error)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    await dispatcher.dispatch_async(job)  # while the pool is full, other coroutines run
    return future


async def producer(dispatcher: Dispatcher, number: int, results: list[str]) -> None:
    pending = []
    for n in range(REQUESTS):
        await asyncio.sleep(0.001)  # a request arrives
        pending.append(await submit(dispatcher, partial(blocking_work, number, n)))
    results.extend(await asyncio.gather(*pending))


async def heartbeat(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def main() -> None:
    results: list[str] = []
    gaps: list[float] = []
    stop = asyncio.Event()
    with Dispatcher([PoolConfig(0, workers=4, queue_size=4)], name="asyncio") as dispatcher:
        beat = asyncio.create_task(heartbeat(stop, gaps))
        started = time.perf_counter()
        await asyncio.gather(*(producer(dispatcher, p, results) for p in range(PRODUCERS)))
        elapsed = time.perf_counter() - started
        await dispatcher.wait_async()  # every job has finished (here they have: all results are in)
        stop.set()
        await beat
        print(f"results: {len(results)} from {PRODUCERS} producers in {elapsed:.2f} s, e.g. {results[0]}")
        print(f"heartbeat ticks: {len(gaps)}, longest gap {max(gaps) * 1000:.0f} ms (the event loop never blocked)")
        print(dispatcher.stats(0))


asyncio.run(main())
