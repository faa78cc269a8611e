"""The pools under test, behind one small interface.

Each contender builds one or more pools and offers, for every pool, the
tight producer loop a user would write with that library (``dispatch(fn)``,
``executor.submit(fn)``, ``pool.apply_async(fn)``, ``pool.schedule(fn)``), so
no adapter layer sits on the hot path. ``drain`` returns once every job
submitted so far has finished, using each library's own way of waiting for
that, except for pebble (see `PebblePools.drain`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool
from typing import Any

from jobdispatch import DEFAULT_QUEUE_SIZE, Dispatcher, PoolConfig

Fn = Callable[[], object]

try:
    import pebble
except ImportError:  # pragma: no cover - pebble is in the bench extra
    pebble = None


class Pools:
    """One or more pools of one library."""

    name = "?"

    def produce(self, pool: int, n: int, fn: Fn) -> None:
        """Submit ``fn`` ``n`` times to pool number ``pool``."""
        raise NotImplementedError

    def produce_round_robin(self, n: int, fn: Fn) -> None:
        """Submit ``fn`` ``n`` times, cycling over the pools."""
        raise NotImplementedError

    def submitter(self, pool: int) -> Callable[[Fn], Any]:
        """Return a callable that submits one job to pool number ``pool``."""
        raise NotImplementedError

    def drain(self) -> None:
        """Return once every job submitted so far has finished; may close the pools."""
        raise NotImplementedError

    def close(self) -> None:
        """Shut the pools down the library's usual way, letting queued jobs run (idempotent)."""
        raise NotImplementedError


class JobDispatchPools(Pools):
    """One `Dispatcher` with one pool (priority ``i``) per entry of ``workers``."""

    def __init__(
        self, workers: Sequence[int], *, propagate_context: bool = True, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self.name = "jobdispatch" if propagate_context else "jobdispatch, propagate_context=False"
        self.dispatcher = Dispatcher(
            [PoolConfig(i, w, queue_size) for i, w in enumerate(workers)],
            name="bench",
            propagate_context=propagate_context,
        )
        self.single = len(workers) == 1

    def produce(self, pool: int, n: int, fn: Fn) -> None:
        dispatch = self.dispatcher.dispatch
        if self.single:
            for _ in range(n):
                dispatch(fn)
        else:
            for _ in range(n):
                dispatch(fn, priority=pool)

    def produce_round_robin(self, n: int, fn: Fn) -> None:
        dispatch = self.dispatcher.dispatch
        for priority in itertools.islice(itertools.cycle(self.dispatcher.priorities), n):
            dispatch(fn, priority=priority)

    def submitter(self, pool: int) -> Callable[[Fn], Any]:
        dispatch = self.dispatcher.dispatch
        return lambda fn: dispatch(fn, priority=pool)

    def drain(self) -> None:
        self.dispatcher.finalize()

    def close(self) -> None:
        self.dispatcher.finalize()


class ExecutorPools(Pools):
    """One `concurrent.futures.ThreadPoolExecutor` per entry of ``workers``."""

    name = "ThreadPoolExecutor"

    def __init__(self, workers: Sequence[int]) -> None:
        self.executors = [ThreadPoolExecutor(w, thread_name_prefix="bench-tpe") for w in workers]

    def produce(self, pool: int, n: int, fn: Fn) -> None:
        submit = self.executors[pool].submit
        for _ in range(n):
            submit(fn)

    def produce_round_robin(self, n: int, fn: Fn) -> None:
        for submit in itertools.islice(itertools.cycle([e.submit for e in self.executors]), n):
            submit(fn)

    def submitter(self, pool: int) -> Callable[[Fn], Any]:
        return self.executors[pool].submit

    def drain(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=True)

    def close(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=True)


class ThreadPoolPools(Pools):
    """One `multiprocessing.pool.ThreadPool` per entry of ``workers``."""

    name = "multiprocessing ThreadPool"

    def __init__(self, workers: Sequence[int]) -> None:
        self.pools = [ThreadPool(w) for w in workers]
        self.closed = False

    def produce(self, pool: int, n: int, fn: Fn) -> None:
        apply_async = self.pools[pool].apply_async
        for _ in range(n):
            apply_async(fn)

    def produce_round_robin(self, n: int, fn: Fn) -> None:
        for apply_async in itertools.islice(itertools.cycle([p.apply_async for p in self.pools]), n):
            apply_async(fn)

    def submitter(self, pool: int) -> Callable[[Fn], Any]:
        return self.pools[pool].apply_async

    def drain(self) -> None:
        for pool in self.pools:
            pool.close()
        for pool in self.pools:
            pool.join()
        self.closed = True

    def close(self) -> None:
        if not self.closed:
            self.drain()


class PebblePools(Pools):
    """One `pebble.ThreadPool` per entry of ``workers``."""

    name = "pebble ThreadPool"

    def __init__(self, workers: Sequence[int]) -> None:
        assert pebble is not None
        self.workers = list(workers)
        self.pools = [pebble.ThreadPool(max_workers=w) for w in workers]

    def produce(self, pool: int, n: int, fn: Fn) -> None:
        schedule = self.pools[pool].schedule
        for _ in range(n):
            schedule(fn)

    def produce_round_robin(self, n: int, fn: Fn) -> None:
        for schedule in itertools.islice(itertools.cycle([p.schedule for p in self.pools]), n):
            schedule(fn)

    def submitter(self, pool: int) -> Callable[[Fn], Any]:
        return self.pools[pool].schedule

    def drain(self) -> None:
        """Wait with one barrier job per worker, not with close() + join().

        pebble's ``join`` polls its queue and its manager thread every 100 ms,
        which would add up to 100 ms to every measurement. Its queue is FIFO
        and it runs exactly ``max_workers`` threads, so once every worker is
        inside a barrier job, every job submitted before has finished.
        """
        barrier = threading.Barrier(sum(self.workers) + 1)
        for pool, workers in zip(self.pools, self.workers, strict=True):
            for _ in range(workers):
                pool.schedule(barrier.wait)
        barrier.wait()

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
        for pool in self.pools:
            pool.join()


def contenders(*, pebble_too: bool = True, threadpool_too: bool = True) -> dict[str, Callable[[Sequence[int]], Pools]]:
    """Return the factories of the contenders, jobdispatch first."""
    found: dict[str, Callable[[Sequence[int]], Pools]] = {
        "jobdispatch": JobDispatchPools,
        "ThreadPoolExecutor": ExecutorPools,
    }
    if threadpool_too:
        found["multiprocessing ThreadPool"] = ThreadPoolPools
    if pebble_too and pebble is not None:
        found["pebble ThreadPool"] = PebblePools
    return found
