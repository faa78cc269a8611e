"""Scenario 1: throughput of no-op jobs.

1a: one producer thread, one pool of 8 workers, jobdispatch with its default
queue size. 1b: 8 producer threads into 2 pools of 8 workers (producer ``i``
feeds pool ``i % 2``). The clock runs from the first submission until every
job has finished (pool construction is not timed; the drain is).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ._contenders import JobDispatchPools, Pools, contenders
from ._harness import Mode, Results, compare, interleave, median, noop

NO_CONTEXT = "jobdispatch, propagate_context=False"


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
