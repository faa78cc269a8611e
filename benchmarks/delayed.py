"""Scenario 4: delayed jobs.

N jobs are scheduled as fast as the loop allows, with delays spread evenly
over 0-100 ms in a scrambled order. Each job records how late it started
compared with the moment it was due (the time just before the scheduling
call plus its delay). jobdispatch uses ``dispatch_later`` on a pool of 8
workers; the competitor is one ``threading.Timer`` per job.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from jobdispatch import Dispatcher

from ._harness import Mode, Results, interleave, median, percentile, ratio_row

SPAN = 0.100
TIMER = "threading.Timer per job"
KINDS = ("jobdispatch", TIMER)


def delays(n: int) -> list[float]:
    """N delays covering [0, SPAN) evenly, in a scrambled but fixed order."""
    step = 7919 if n % 7919 else 7927  # a prime, coprime with n
    return [((i * step) % n) / n * SPAN for i in range(n)]


def run_once(kind: str, n: int) -> dict[str, Any]:
    """Return the lateness (seconds) of each of ``n`` delayed jobs, and how long scheduling them took.

    ``after_loop`` holds the lateness of the jobs that fell due after the
    scheduling loop had ended, when no thread was busy scheduling.
    """
    spread = delays(n)
    due = [math.nan] * n
    began = [math.nan] * n
    finished = itertools.count()
    all_done = threading.Event()

    def job(i: int) -> None:
        began[i] = time.perf_counter()
        if next(finished) == n - 1:
            all_done.set()

    jobs: list[Callable[[], None]] = [(lambda i=i: job(i)) for i in range(n)]
    clock = time.perf_counter
    began_loop = clock()
    if kind == "jobdispatch":
        with Dispatcher(8, name="bench-delayed") as dispatcher:
            later = dispatcher.dispatch_later
            for i, delay in enumerate(spread):
                due[i] = clock() + delay
                later(delay, jobs[i])
            loop_end = clock()
            if not all_done.wait(120):
                raise RuntimeError("delayed jobs did not finish")
    else:
        timers = []
        for i, delay in enumerate(spread):
            timer = threading.Timer(delay, jobs[i])
            due[i] = clock() + delay
            timer.start()
            timers.append(timer)
        loop_end = clock()
        if not all_done.wait(120):
            raise RuntimeError("timers did not finish")
        for timer in timers:
            timer.join()
    lateness = [b - d for b, d in zip(began, due, strict=True)]
    return {
        "lateness": lateness,
        "after_loop": [late for late, d in zip(lateness, due, strict=True) if d >= loop_end],
        "loop_s": loop_end - began_loop,
    }


def run(mode: Mode, results: Results) -> None:
    """Run scenario 4 and add its rows."""
    n = mode.pick(10_000, 10_000, 300)
    trials = mode.pick(3, 2, 1)
    runs = interleave({kind: (lambda kind=kind: run_once(kind, n)) for kind in KINDS}, trials)
    label = f"4 delayed jobs, lateness, {n:,} over 0-100 ms"
    for q in (50, 99):
        per_trial = {kind: [percentile(r["lateness"], q) for r in runs[kind]] for kind in KINDS}
        ours = median(per_trial["jobdispatch"])
        target = "jobdispatch p99 <= 5 ms" if q == 99 else None
        results.rows.append(
            ratio_row(
                label,
                f"p{q}",
                "s",
                per_trial["jobdispatch"],
                TIMER,
                per_trial[TIMER],
                higher_is_better=False,
                target=target,
                met=None if target is None else ours <= 0.005,
            )
        )
    loop = median([r["loop_s"] for r in runs["jobdispatch"]])
    quiet = median([percentile(r["after_loop"], 99) for r in runs["jobdispatch"]])
    results.rows[-1].note = (
        f"scheduling the {n:,} jobs kept the producer thread busy for {loop * 1e3:.0f} ms; "
        f"jobs due after that: p99 {quiet * 1e3:.2f} ms"
    )
    results.scenarios["delayed"] = {
        "jobs": n,
        "span_s": SPAN,
        "lateness_s": {
            kind: {f"p{q}": [percentile(r["lateness"], q) for r in runs[kind]] for q in (50, 90, 99, 100)}
            for kind in KINDS
        },
        "after_loop_p99_s": {kind: [percentile(r["after_loop"], 99) for r in runs[kind]] for kind in KINDS},
        "loop_s": {kind: [r["loop_s"] for r in runs[kind]] for kind in KINDS},
    }
