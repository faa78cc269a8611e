"""Scenario 1: throughput of no-op jobs.

1a: one producer thread, one pool of 8 workers, jobdispatch with its default
queue size. 1b: 8 producer threads into 2 pools of 8 workers (producer ``i``
feeds pool ``i % 2``). The clock runs from the first submission until every
job has finished (pool construction is not timed; the drain is). 1c: the
executors' ``map`` over a quarter as many no-op calls, 8 workers, every
result read: ``jobdispatch.ThreadPoolExecutor`` (with ``chunksize`` 1 and
32) against the standard library's.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence

import jobdispatch

from ._contenders import JobDispatchPools, Pools, contenders
from ._harness import Mode, Results, compare, interleave, median, noop

NO_CONTEXT = "jobdispatch, propagate_context=False"
MAP_CHUNKED = "jobdispatch, chunksize=32"


def run_once(factory: Callable[[Sequence[int]], Pools], workers: Sequence[int], producers: int, n: int) -> float:
    """Return the seconds ``producers`` threads take to push ``n`` jobs through the pools and drain them."""
    pools = factory(workers)
    try:
        if producers == 1:
            start = time.perf_counter()
            pools.produce(0, n, noop)
            pools.drain()
            return time.perf_counter() - start
        go = threading.Barrier(producers + 1)
        share = n // producers

        def producer(index: int) -> None:
            go.wait()
            pools.produce(index % len(workers), share, noop)

        threads = [threading.Thread(target=producer, args=(i,), name=f"bench-producer-{i}") for i in range(producers)]
        for thread in threads:
            thread.start()
        go.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        pools.drain()
        return time.perf_counter() - start
    finally:
        pools.close()


def map_once(make: Callable[[int], concurrent.futures.Executor], n: int, chunksize: int) -> float:
    """Return the seconds an executor's ``map`` of ``n`` no-op calls takes, every result read."""
    executor = make(8)
    items = [None] * n
    try:
        start = time.perf_counter()
        for _ in executor.map(_noop_arg, items, chunksize=chunksize):
            pass
        return time.perf_counter() - start
    finally:
        executor.shutdown()


def _map_runner(make: Callable[[int], concurrent.futures.Executor], n: int, chunksize: int) -> Callable[[], float]:
    """Return a runner that gives the calls per second of one `map_once`."""
    return lambda: n / map_once(make, n, chunksize)


def _noop_arg(_: object) -> None:
    """A call taking one argument that does nothing."""


def run_map(n: int, trials: int, results: Results) -> None:
    """Run scenario 1c and add its rows."""
    makers: dict[str, tuple[Callable[[int], concurrent.futures.Executor], int]] = {
        "jobdispatch": (jobdispatch.ThreadPoolExecutor, 1),
        MAP_CHUNKED: (jobdispatch.ThreadPoolExecutor, 32),
        "ThreadPoolExecutor": (concurrent.futures.ThreadPoolExecutor, 1),
    }
    for make, chunksize in makers.values():
        map_once(make, min(n, 2_000), chunksize)
    runners = {name: _map_runner(make, n, size) for name, (make, size) in makers.items()}
    rates = interleave(runners, trials)
    for reference, label in (
        ("jobdispatch", "1c executor map, 1 pool x 8"),
        (MAP_CHUNKED, "1c executor map, chunksize=32, 1 pool x 8"),
    ):
        results.rows += compare(
            label,
            "calls/s",
            "calls/s",
            rates,
            higher_is_better=True,
            reference=reference,
            competitors=["ThreadPoolExecutor"],
        )
    results.scenarios["throughput"]["1c"] = {"calls": n, "workers": [8], "calls_per_s": rates}


def run(mode: Mode, results: Results) -> None:
    """Run scenario 1 and add its rows."""
    n = mode.pick(200_000, 50_000, 2_000)
    trials = mode.pick(5, 3, 1)
    factories = contenders()
    factories[NO_CONTEXT] = lambda workers: JobDispatchPools(workers, propagate_context=False)
    # Warm up every contender (imports, first thread starts, code caches).
    for factory in factories.values():
        run_once(factory, [8], 1, min(n, 2_000))

    raw = {}
    for key, label, workers, producers in (
        ("1a", "1a throughput, 1 producer -> 1 pool x 8", [8], 1),
        ("1b", "1b throughput, 8 producers -> 2 pools x 8", [8, 8], 8),
    ):
        runners = {
            name: (lambda f=factory, w=workers, p=producers: n / run_once(f, w, p, n))
            for name, factory in factories.items()
        }
        rates = interleave(runners, trials)
        raw[key] = {"jobs": n, "workers": workers, "producers": producers, "jobs_per_s": rates}
        competitors = [name for name in rates if name not in ("jobdispatch", NO_CONTEXT)]
        results.rows += compare(
            label,
            "jobs/s",
            "jobs/s",
            rates,
            higher_is_better=True,
            competitors=competitors,
            targets={"ThreadPoolExecutor": (">= 10x TPE (aim 20x)", 10.0)},
        )
        no_context = compare(label, "jobs/s", "jobs/s", rates, higher_is_better=True, competitors=[NO_CONTEXT])[0]
        if key == "1a":
            # The contextvars cost: the default jobdispatch against itself without it.
            ns_per_job = (1 / median(rates["jobdispatch"]) - 1 / median(rates[NO_CONTEXT])) * 1e9
            no_context.note = f"propagate_context=True costs {ns_per_job:.0f} ns per job here (difference of medians)"
        results.rows.append(no_context)
    results.scenarios["throughput"] = raw
    run_map(n // 4, trials, results)  # a call through map costs about ten times a dispatch
