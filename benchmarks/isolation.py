"""Scenario 3: bulkhead isolation.

A bulk pool of 8 workers is kept saturated by a producer thread with jobs
that sleep 20 ms, with a backlog of ``8 + queue_size`` jobs (jobdispatch's
own backpressure; the executors get the same backlog from a semaphore that
the producer takes and each bulk job gives back). Meanwhile the main thread
sends a probe job every 2 ms to a second pool of 2 workers and records each
probe's start latency: from just before the submit call to the first line
of the probe. jobdispatch runs both pools in one `Dispatcher`; its main
competitor is what one gets without bulkheads, one shared
ThreadPoolExecutor with the same 10 threads. Two separate executors (8 + 2),
the hand-made bulkhead, are measured too.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from jobdispatch import DEFAULT_QUEUE_SIZE, Dispatcher, PoolConfig, PoolFull

from ._harness import Mode, Results, interleave, median, percentile, ratio_row

BULK_WORKERS = 8
PROBE_WORKERS = 2
BULK_SECONDS = 0.020
PERIOD = 0.002
SHARED = "ThreadPoolExecutor, shared (10 threads)"
SPLIT = "2 ThreadPoolExecutors (8 + 2)"
KINDS = ("jobdispatch", SHARED, SPLIT)


def run_once(kind: str, probes: int, queue_size: int) -> list[float]:
    """Return the start latencies (seconds) of ``probes`` probe jobs under a saturated bulk pool."""
    backlog = BULK_WORKERS + queue_size
    bulk_threads = BULK_WORKERS + PROBE_WORKERS if kind == SHARED else BULK_WORKERS
    started = itertools.count()
    saturated = threading.Event()
    throttle = threading.BoundedSemaphore(backlog)
    stop = threading.Event()
    submitted = 0

    def bulk_job() -> None:
        if next(started) == bulk_threads - 1:
            saturated.set()
        time.sleep(BULK_SECONDS)

    def throttled_bulk_job() -> None:
        try:
            bulk_job()
        finally:
            throttle.release()

    closers: list[Callable[[], object]] = []
    if kind == "jobdispatch":
        dispatcher = Dispatcher(
            [PoolConfig(0, BULK_WORKERS, queue_size), PoolConfig(1, PROBE_WORKERS)], name="bench-isolation"
        )
        dispatch = dispatcher.dispatch

        def add_bulk() -> bool:
            try:
                dispatch(bulk_job, priority=0, timeout=0.1)
            except PoolFull:
                return False
            return True

        def submit_probe(fn: Callable[[], None]) -> Any:
            return dispatch(fn, priority=1)

        closers.append(lambda: dispatcher.finalize(cancel_pending=True))
    else:
        bulk = ThreadPoolExecutor(bulk_threads, thread_name_prefix="bench-bulk")
        fast = bulk if kind == SHARED else ThreadPoolExecutor(PROBE_WORKERS, thread_name_prefix="bench-probe")
        bulk_submit = bulk.submit

        def add_bulk() -> bool:
            if not throttle.acquire(timeout=0.1):
                return False
            bulk_submit(throttled_bulk_job)
            return True

        submit_probe = fast.submit
        closers.append(lambda: bulk.shutdown(cancel_futures=True))
        if fast is not bulk:
            closers.append(fast.shutdown)

    def bulk_producer() -> None:
        nonlocal submitted
        while not stop.is_set():
            if add_bulk():
                submitted += 1

    producer = threading.Thread(target=bulk_producer, name="bench-bulk-producer")
    producer.start()
    try:
        saturated.wait()
        while submitted < backlog:
            time.sleep(0.001)
        begins = [math.nan] * probes
        ends = [math.nan] * probes
        finished = itertools.count()
        all_done = threading.Event()

        def probe(i: int) -> None:
            ends[i] = time.perf_counter()
            if next(finished) == probes - 1:
                all_done.set()

        first = time.perf_counter() + PERIOD
        for i in range(probes):
            job = partial(probe, i)
            pause = first + i * PERIOD - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            begins[i] = time.perf_counter()
            submit_probe(job)
        if not all_done.wait(300):
            raise RuntimeError(f"{kind}: probes did not finish")
    finally:
        stop.set()
        producer.join()
        for close in closers:
            close()
    return [end - begin for begin, end in zip(begins, ends, strict=True)]


def run(mode: Mode, results: Results) -> None:
    """Run scenario 3 and add its rows."""
    probes = mode.pick(1000, 250, 20)
    trials = mode.pick(3, 2, 1)
    queue_size = mode.pick(DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_SIZE, 16)
    runs = interleave({kind: (lambda kind=kind: run_once(kind, probes, queue_size)) for kind in KINDS}, trials)
    label = f"3 isolation, probe start latency, {probes} probes"
    for q in (50, 99):
        per_trial = {kind: [percentile(lat, q) for lat in runs[kind]] for kind in KINDS}
        ours = median(per_trial["jobdispatch"])
        for kind in (SHARED, SPLIT):
            target = "jobdispatch p99 <= 2 ms" if q == 99 and kind == SHARED else None
            results.rows.append(
                ratio_row(
                    label,
                    f"p{q}",
                    "s",
                    per_trial["jobdispatch"],
                    kind,
                    per_trial[kind],
                    higher_is_better=False,
                    target=target,
                    met=None if target is None else ours <= 0.002,
                )
            )
    results.scenarios["isolation"] = {
        "probes": probes,
        "period_s": PERIOD,
        "bulk_job_s": BULK_SECONDS,
        "queue_size": queue_size,
        "latency_s": {kind: [[round(x, 7) for x in lat] for lat in runs[kind]] for kind in KINDS},
    }
