"""Scenario 6: scaling.

6a: throughput of no-op jobs from one producer into one pool of 1, 8, 64
and 512 workers: on a fresh pool (thread starts included, as on first use)
and on a warm one (a first round of the same size has started the threads).
6b: throughput from one producer cycling over 1, 4, 16 and 64 pools of 4
workers each (jobdispatch: one `Dispatcher` with that many
priorities; ThreadPoolExecutor: that many executors). 6c: the time to
create and finalize a pool of 10, 100, 1,000 and 4,000 workers that ran no
job. 6d: the same with every thread started first (each worker runs one job
that waits until all the others have started), which is what a pool that
was actually used costs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

from ._contenders import ExecutorPools, JobDispatchPools, PebblePools, Pools, ThreadPoolPools, pebble
from ._harness import Mode, Results, compare, interleave, median, timed
from .throughput import run_once

PAIR: dict[str, Callable[[Sequence[int]], Pools]] = {
    "jobdispatch": JobDispatchPools,
    "ThreadPoolExecutor": ExecutorPools,
}


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _warm(factory: Callable[[Sequence[int]], Pools], workers: int, n: int) -> float:
    """Seconds for ``n`` jobs through a pool whose threads a first round of ``n`` jobs has started."""
    pools = factory([workers])
    try:
        submit = pools.submitter(0)

        def barrier() -> None:
            # Every worker inside a barrier job: every job before has finished.
            gate = threading.Barrier(workers + 1)
            for _ in range(workers):
                submit(gate.wait)
            gate.wait()

        pools.produce(0, n, lambda: None)
        barrier()
        return timed(lambda: (pools.produce(0, n, lambda: None), barrier()))
    finally:
        pools.close()


def _round_robin(factory: Callable[[Sequence[int]], Pools], pools: int, n: int) -> float:
    made = factory([4] * pools)
    try:
        return timed(lambda: (made.produce_round_robin(n, lambda: None), made.drain()))
    finally:
        made.close()


def _create_finalize(factory: Callable[[Sequence[int]], Pools], workers: int) -> float:
    def body() -> None:
        factory([workers]).close()

    return timed(body)


def _create_start_finalize(factory: Callable[[Sequence[int]], Pools], workers: int) -> float:
    """Create a pool, make it start every thread, finalize it."""

    def body() -> None:
        pools = factory([workers])
        started = itertools.count(1)
        all_started = threading.Event()
        gate = threading.Event()

        def hold() -> None:
            if next(started) == workers:
                all_started.set()
            gate.wait()

        submit = pools.submitter(0)
        for _ in range(workers):
            submit(hold)
        all_started.wait()
        gate.set()
        pools.drain()

    return timed(body)


def run(mode: Mode, results: Results) -> None:
    """Run scenario 6 and add its rows."""
    n = mode.pick(100_000, 20_000, 1_000)
    trials = mode.pick(3, 2, 1)
    raw: dict[str, object] = {"jobs": n}

    worker_counts = mode.pick([1, 8, 64, 512], [1, 8, 64, 512], [1, 8])
    by_workers: dict[int, dict[str, list[float]]] = {}
    for workers in worker_counts:
        runners = {name: (lambda f=f, w=workers: n / run_once(f, [w], 1, n)) for name, f in PAIR.items()}
        by_workers[workers] = rates = interleave(runners, trials)
        results.rows += compare(
            f"6a throughput, 1 pool x {workers} worker{_s(workers)}", "jobs/s", "jobs/s", rates, higher_is_better=True
        )
    raw["by_workers"] = by_workers
    by_workers_warm: dict[int, dict[str, list[float]]] = {}
    for workers in worker_counts:
        runners = {name: (lambda f=f, w=workers: n / _warm(f, w, n)) for name, f in PAIR.items()}
        by_workers_warm[workers] = rates = interleave(runners, trials)
        results.rows += compare(
            f"6a throughput, 1 pool x {workers} worker{_s(workers)}, threads started",
            "jobs/s",
            "jobs/s",
            rates,
            higher_is_better=True,
        )
    raw["by_workers_warm"] = by_workers_warm

    pool_counts = mode.pick([1, 4, 16, 64], [1, 4, 16, 64], [1, 4])
    by_pools: dict[int, dict[str, list[float]]] = {}
    for count in pool_counts:
        runners = {name: (lambda f=f, c=count: n / _round_robin(f, c, n)) for name, f in PAIR.items()}
        by_pools[count] = rates = interleave(runners, trials)
        results.rows += compare(
            f"6b throughput, {count} pool{_s(count)} x 4 workers", "jobs/s", "jobs/s", rates, higher_is_better=True
        )
    raw["by_pools"] = by_pools

    create_trials = mode.pick(5, 3, 1)
    sizes = mode.pick([10, 100, 1000, 4000], [10, 100, 1000, 4000], [10, 4000])
    lifecycle: dict[str, Callable[[Sequence[int]], Pools]] = dict(PAIR)
    lifecycle["multiprocessing ThreadPool"] = ThreadPoolPools
    if pebble is not None:
        lifecycle["pebble ThreadPool"] = PebblePools
    by_size: dict[int, dict[str, list[float]]] = {}
    for size in sizes:
        runners = {name: (lambda f=f, s=size: _create_finalize(f, s)) for name, f in lifecycle.items()}
        by_size[size] = seconds = interleave(runners, create_trials)
        label = f"6c create + finalize, {size} workers, no job"
        rows = compare(label, "time", "s", seconds, higher_is_better=False)
        if size == 4000:
            rows[0].target = "jobdispatch < 50 ms"
            rows[0].met = median(seconds["jobdispatch"]) < 0.050
        results.rows += rows
    raw["create_finalize_s"] = by_size

    started_sizes = mode.pick([10, 100, 1000, 4000], [10, 100, 1000], [10])
    by_started: dict[int, dict[str, list[float]]] = {}
    for size in started_sizes:
        runners = {name: (lambda f=f, s=size: _create_start_finalize(f, s)) for name, f in PAIR.items()}
        by_started[size] = seconds = interleave(runners, mode.pick(3, 1, 1))
        results.rows += compare(
            f"6d create + start all + finalize, {size} workers", "time", "s", seconds, higher_is_better=False
        )
    raw["create_start_finalize_s"] = by_started
    results.scenarios["scaling"] = raw
