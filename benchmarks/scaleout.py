"""Scenario 7: scaling out, pools on processes and on a Dask cluster.

7a: CPU-bound pure-Python jobs (a loop of integer arithmetic, a few ms
each) on a pool of 2 threads, a pool backed by a ``ProcessPoolExecutor`` of
2 processes, and a pool backed by a Dask ``LocalCluster`` of 2 worker
processes of 1 thread: the time to run them all, and the speedup over
threads (the GIL serialises the threads). 7b: the per-job overhead of a
backed pool over the same engine used raw, with no-op jobs (raw: submit
every job, then wait for every future). 7c: the peak of Python memory
(tracemalloc) while many jobs, each carrying 1 KB of data, go through a
``ProcessPoolExecutor``: raw submit-everything holds them all, a backed
pool at most ``workers + queue_size``.

Engines are started once per scenario and warmed up before any clock runs;
pools are made afresh for every trial. The Dask parts are left out when
``distributed`` is not installed.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import multiprocessing
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

from jobdispatch import Dispatcher, PoolConfig

from ._harness import Mode, Results, interleave, median, ratio_row

ENGINE_WORKERS = 2


def burn(loops: int) -> int:
    """A CPU-bound pure-Python job: holds the GIL throughout."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def carry(data: bytes) -> int:
    """A job that carries data to its process."""
    return len(data)


def nothing() -> None:
    """A no-op job, importable by reference in worker processes."""


def _pool_run(backend: object, jobs: list[Callable[[], object]], in_flight: int) -> float:
    """Seconds to push ``jobs`` through a fresh one-pool dispatcher on ``backend`` and drain it."""
    d = Dispatcher([PoolConfig(0, in_flight, backend=backend)], name="bench")
    try:
        start = time.perf_counter()
        for job in jobs:
            d.dispatch(job)
        d.wait()
        return time.perf_counter() - start
    finally:
        d.finalize()


def _raw_run(submit: Callable[..., Any], fn: Callable[..., object], args: list[tuple[Any, ...]]) -> float:
    """Seconds to submit every call to an engine at once and wait for every future."""
    start = time.perf_counter()
    futures = [submit(fn, *a) for a in args]
    if hasattr(futures[0], "key"):  # Dask's futures
        _dask_wait(futures)
    else:
        wait_all(futures)
    return time.perf_counter() - start


def _dask_wait(futures: list[Any]) -> None:
    import distributed

    distributed.wait(futures)


def _peak_bytes(run: Callable[[], object]) -> float:
    """The peak of Python allocations in this process while ``run()`` runs, in bytes."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return float(peak)


def _start_dask() -> tuple[Any, Any] | None:
    if importlib.util.find_spec("distributed") is None:
        return None
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=ENGINE_WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=50,
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(ENGINE_WORKERS)
    return cluster, client


def run(mode: Mode, results: Results) -> None:
    """Run scenario 7 and add its rows."""
    trials = mode.pick(5, 3, 1)
    loops = mode.pick(400_000, 200_000, 20_000)  # ~20 / 10 / 1 ms of CPU per job on a 2020s core
    cpu_jobs = mode.pick(40, 16, 2)
    noop_jobs = mode.pick(5_000, 500, 20)
    dask_noop_jobs = mode.pick(1_000, 150, 10)
    memory_jobs = mode.pick(20_000, 2_000, 100)
    payload = b"x" * 1024
    spawn = multiprocessing.get_context("spawn")
    processes = ProcessPoolExecutor(ENGINE_WORKERS, mp_context=spawn)
    threads = ThreadPoolExecutor(ENGINE_WORKERS)
    dask = _start_dask()
    raw: dict[str, Any] = {"engine_workers": ENGINE_WORKERS, "loops": loops}
    try:
        list(processes.map(burn, [1] * 4 * ENGINE_WORKERS))  # start the processes
        engines: dict[str, object] = {"processes": processes}
        if dask is not None:
            dask[1].submit(burn, 1, pure=False).result()
            engines["dask"] = dask[1]
        cpu = [functools.partial(burn, loops) for _ in range(cpu_jobs)]

        # 7a: CPU-bound jobs on threads, processes, Dask.
        runners: dict[str, Callable[[], float]] = {"threads": lambda: _pool_run(None, cpu, ENGINE_WORKERS)}
        for name, engine in engines.items():
            runners[name] = lambda e=engine: _pool_run(e, cpu, 2 * ENGINE_WORKERS)
        seconds = interleave(runners, trials)
        raw["7a_seconds"] = seconds
        for name in engines:
            results.rows.append(
                ratio_row(
                    f"7a {cpu_jobs} CPU-bound jobs, pool on {name} vs on 2 threads",
                    "time",
                    "s",
                    seconds[name],
                    "jobdispatch on 2 threads",
                    seconds["threads"],
                    higher_is_better=False,
                )
            )

        # 7b: per-job overhead of a backed pool over the raw engine.
        raw_engines: dict[str, tuple[Callable[..., Any], object, int]] = {
            "ThreadPoolExecutor(2)": (threads.submit, threads, noop_jobs),
            "ProcessPoolExecutor(2)": (processes.submit, processes, noop_jobs),
        }
        if dask is not None:
            client = dask[1]
            raw_engines["Dask LocalCluster(2x1)"] = (
                functools.partial(client.submit, pure=False),
                client,
                dask_noop_jobs,
            )
        raw["7b_us_per_job"] = {}
        for name, (submit, engine, n) in raw_engines.items():
            jobs: list[Callable[[], object]] = [nothing] * n
            per_job = interleave(
                {
                    "pool": lambda e=engine, j=jobs: _pool_run(e, j, 64) / len(j) * 1e6,
                    "raw": lambda s=submit, k=n: _raw_run(s, nothing, [()] * k) / k * 1e6,
                },
                trials,
            )
            raw["7b_us_per_job"][name] = per_job
            results.rows.append(
                ratio_row(
                    f"7b no-op jobs on {name}, 64 in flight vs raw submit-all",
                    "per job",
                    "us",
                    per_job["pool"],
                    f"raw {name}",
                    per_job["raw"],
                    higher_is_better=False,
                )
            )

        # 7c: memory while many jobs with data go through the processes.
        def pooled() -> None:
            d = Dispatcher([PoolConfig(0, 8, queue_size=64, backend=processes)], name="bench")
            for _ in range(memory_jobs):
                d.dispatch(functools.partial(carry, payload))
            d.finalize()

        def submit_all() -> None:
            futures = [processes.submit(carry, payload) for _ in range(memory_jobs)]
            wait_all(futures)

        peaks = interleave({"pool": lambda: _peak_bytes(pooled), "raw": lambda: _peak_bytes(submit_all)}, trials)
        mb = {name: [v / 1e6 for v in values] for name, values in peaks.items()}
        raw["7c_peak_mb"] = mb
        results.rows.append(
            ratio_row(
                f"7c {memory_jobs} jobs of 1 KB to ProcessPoolExecutor(2): pool 8+64 vs raw submit-all",
                "peak Python memory",
                "MB",
                mb["pool"],
                "raw submit-all",
                mb["raw"],
                higher_is_better=False,
            )
        )
        raw["summary"] = {
            "7a_speedup_over_threads": {name: median(seconds["threads"]) / median(seconds[name]) for name in engines},
            "7b_overhead_us": {name: median(v["pool"]) - median(v["raw"]) for name, v in raw["7b_us_per_job"].items()},
        }
    finally:
        processes.shutdown(cancel_futures=True)
        threads.shutdown()
        if dask is not None:
            dask[1].close()
            dask[0].close()
    results.scenarios["scaleout"] = raw
