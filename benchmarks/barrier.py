"""Scenario 5: barrier rounds.

R rounds of 100 no-op jobs each, every round ended by waiting for its jobs,
on a pool of 8 workers. jobdispatch ends a round with ``wait()`` (and, as a
second row, with a ``batch()`` block); ThreadPoolExecutor and pebble keep the
round's futures and call ``concurrent.futures.wait``; multiprocessing's
ThreadPool keeps the round's AsyncResults and waits on each.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from ._contenders import ExecutorPools, JobDispatchPools, PebblePools, ThreadPoolPools, pebble
from ._harness import Mode, Results, compare, interleave, noop, timed

JOBS_PER_ROUND = 100
WORKERS = 8
BATCH = "jobdispatch batch()"


def _jobdispatch_wait(rounds: int) -> float:
    pools = JobDispatchPools([WORKERS])
    d = pools.dispatcher
    dispatch, wait = d.dispatch, d.wait

    def body() -> None:
        for _ in range(rounds):
            for _ in range(JOBS_PER_ROUND):
                dispatch(noop)
            wait()

    try:
        return timed(body)
    finally:
        pools.close()


def _jobdispatch_batch(rounds: int) -> float:
    pools = JobDispatchPools([WORKERS])
    d = pools.dispatcher

    def body() -> None:
        for _ in range(rounds):
            with d.batch() as b:
                for _ in range(JOBS_PER_ROUND):
                    b.dispatch(noop)

    try:
        return timed(body)
    finally:
        pools.close()


def _futures(make: Callable[[list[int]], ExecutorPools | PebblePools], rounds: int) -> float:
    pools = make([WORKERS])
    submit = pools.submitter(0)
    wait = concurrent.futures.wait

    def body() -> None:
        for _ in range(rounds):
            wait([submit(noop) for _ in range(JOBS_PER_ROUND)])

    try:
        return timed(body)
    finally:
        pools.close()


def _threadpool(rounds: int) -> float:
    pools = ThreadPoolPools([WORKERS])
    apply_async = pools.pools[0].apply_async

    def body() -> None:
        for _ in range(rounds):
            for result in [apply_async(noop) for _ in range(JOBS_PER_ROUND)]:
                result.wait()

    try:
        return timed(body)
    finally:
        pools.close()


def run(mode: Mode, results: Results) -> None:
    """Run scenario 5 and add its rows."""
    rounds = mode.pick(1000, 200, 10)
    trials = mode.pick(5, 3, 1)
    makers: dict[str, Callable[[int], float]] = {
        "jobdispatch": _jobdispatch_wait,
        BATCH: _jobdispatch_batch,
        "ThreadPoolExecutor": lambda r: _futures(ExecutorPools, r),
        "multiprocessing ThreadPool": _threadpool,
    }
    if pebble is not None:
        makers["pebble ThreadPool"] = lambda r: _futures(PebblePools, r)
    for make in makers.values():  # warm-up
        make(min(rounds, 20))
    runners = {name: (lambda make=make: rounds / make(rounds)) for name, make in makers.items()}
    rates = interleave(runners, trials)
    label = f"5 barrier rounds, {rounds} x {JOBS_PER_ROUND} jobs"
    results.rows += compare(
        label,
        "rounds/s",
        "rounds/s",
        rates,
        higher_is_better=True,
        competitors=[name for name in rates if name not in ("jobdispatch", BATCH)],
        targets={"ThreadPoolExecutor": (">= 2x TPE", 2.0)},
    )
    batch_rows = compare(label, "rounds/s", "rounds/s", rates, higher_is_better=True, reference=BATCH)
    for row in batch_rows:
        if row.competitor != "jobdispatch":
            row.metric = "rounds/s, with batch()"
            results.rows.append(row)
    results.scenarios["barrier"] = {"rounds": rounds, "jobs_per_round": JOBS_PER_ROUND, "rounds_per_s": rates}
