"""Scenario 2: memory under a flood of jobs that the workers cannot keep up with.

Each contender runs in its own child process (``python -m benchmarks.flood
--child NAME --jobs N``) so that peaks of resident memory do not mix. The
child builds a pool of 8 workers, runs a few jobs so its threads exist,
collects garbage and reads its peak RSS (``resource.getrusage`` ``ru_maxrss``)
as the baseline. Then one producer submits N jobs while the workers are
stalled: every job waits on a gate, and the gate opens only once the
producer has finished or has made no progress for 50 ms (it is blocked by
backpressure). After every job has run, the child reports its peak RSS minus
the baseline.

A pool with backpressure stalls the producer after ``workers + queue_size``
jobs and stays small; a pool that queues without bound holds all N jobs at
once.

On Linux a process inherits the ``ru_maxrss`` of the process that forked
it, through ``exec``: a child started straight from the (large) benchmark
process would start with the parent's peak as its own, and hide its growth.
So each child is started by a small relay process (``--relay``), whose peak
is below the child's own baseline. The child also reports ``VmHWM`` from
/proc/self/status (the peak of its own address space only) as a check.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._harness import Mode, Results, interleave, median, ratio_row

WORKERS = 8
STALL = 0.05
CHILDREN = ("jobdispatch", "ThreadPoolExecutor")


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _high_water_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def child(name: str, jobs: int) -> dict[str, float]:
    """Run the flood in this process and return its figures."""
    from ._contenders import ExecutorPools, JobDispatchPools

    pools = JobDispatchPools([WORKERS]) if name == "jobdispatch" else ExecutorPools([WORKERS])
    warm = threading.Barrier(WORKERS + 1)
    for _ in range(WORKERS):
        pools.submitter(0)(warm.wait)
    warm.wait()
    gate = threading.Event()
    submitted = 0
    opened_at = [0]
    done = threading.Event()

    def monitor() -> None:
        last = -1
        while True:
            if done.is_set() or submitted == last:
                opened_at[0] = submitted
                gate.set()
                return
            last = submitted
            time.sleep(STALL)

    gc.collect()
    baseline = _peak_rss_mb()
    current = _current_rss_mb()
    high_water = _high_water_mb()
    watcher = threading.Thread(target=monitor, name="bench-flood-monitor")
    start = time.perf_counter()
    watcher.start()
    submit = pools.submitter(0)
    wait = gate.wait
    for _ in range(jobs):
        submit(wait)
        submitted += 1
    done.set()
    produced = time.perf_counter() - start
    pools.drain()
    elapsed = time.perf_counter() - start
    watcher.join()
    return {
        "jobs": jobs,
        "gate_opened_after": opened_at[0],
        "baseline_mb": baseline,
        "rss_at_baseline_mb": current,
        "peak_mb": _peak_rss_mb(),
        "growth_mb": _peak_rss_mb() - baseline,
        "vmhwm_growth_mb": _high_water_mb() - high_water,
        "produce_s": produced,
        "total_s": elapsed,
    }


def run_child(name: str, jobs: int) -> dict[str, float]:
    """Run `child` in a fresh interpreter and return its figures."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.flood", "--relay", "--child", name, "--jobs", str(jobs)],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def run(mode: Mode, results: Results) -> None:
    """Run scenario 2 and add its rows."""
    jobs = mode.pick(1_000_000, 200_000, 5_000)
    trials = mode.pick(2, 1, 1)
    runs = interleave({name: (lambda name=name: run_child(name, jobs)) for name in CHILDREN}, trials)
    growth = {name: [r["growth_mb"] for r in runs[name]] for name in CHILDREN}
    label = f"2 flood RSS growth, {jobs:,} jobs"
    if jobs < 1_000_000:
        label += " (fewer than the 1,000,000 of a full run)"
    ours = median(growth["jobdispatch"])
    row = ratio_row(
        label,
        "peak RSS growth",
        "MB",
        [max(g, 0.1) for g in growth["jobdispatch"]],
        "ThreadPoolExecutor",
        growth["ThreadPoolExecutor"],
        higher_is_better=False,
        target="jobdispatch <= 20 MB",
        met=ours <= 20,
    )
    row.jobdispatch = ours
    inherited = max(0.0, *(r["baseline_mb"] - r["rss_at_baseline_mb"] for r in runs["jobdispatch"]))
    hwm = median([r["vmhwm_growth_mb"] for r in runs["jobdispatch"]])
    row.note = (
        f"growth = child's ru_maxrss after the flood - before it (ratio with a 0.1 MB floor); cross-check with "
        f"VmHWM: jobdispatch {hwm:.1f} MB; the child's peak was at most {inherited:.1f} MB above its RSS "
        "when the flood began"
    )
    results.rows.append(row)
    results.scenarios["flood"] = {"jobs": jobs, "workers": WORKERS, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=CHILDREN, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--relay", action="store_true", help="run the child in a fresh process and pass its output on")
    args = parser.parse_args()
    if args.relay:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.flood", "--child", args.child, "--jobs", str(args.jobs)],
            check=True,
            capture_output=True,
            text=True,
        )
        print(out.stdout, end="")
    else:
        print(json.dumps(child(args.child, args.jobs)))


if __name__ == "__main__":
    main()
