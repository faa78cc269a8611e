"""Scenario 7: what a progress bar costs a batch.

One batch of N no-op jobs on a pool of 8 workers, left by its ``with``
block, timed from the first dispatch to the end of the block: without
progress reporting, with ``progress=True`` (a tqdm bar, drawn into a
non-terminal stream as in a log file or CI output) and with a callback that
does nothing (the cost of reporting itself). The bar's output is counted: it
must stay a few lines, however many jobs the batch has.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

from jobdispatch import Dispatcher

from ._harness import Mode, Results, interleave, median, noop, ratio_row, timed

WORKERS = 8
PLAIN = "jobdispatch, no progress"
BAR = "batch(progress=True), tqdm"
CALLBACK = "batch(progress=callback)"
MAX_COST = 0.10  # the target: a bar costs less than 10 % of the batch's run time


def _ignore(done: int, total: int) -> None:
    pass


def _batch(jobs: int, progress: Any, written: list[int], cpu: list[float]) -> float:
    stream = io.StringIO()
    with Dispatcher(WORKERS) as d, contextlib.redirect_stderr(stream):

        def body() -> None:
            with d.batch(progress=progress) as b:
                for _ in range(jobs):
                    b.dispatch(noop)

        start = time.process_time()
        seconds = timed(body)
        cpu.append(time.process_time() - start)  # all threads: less sensitive to other processes
    written.append(len(stream.getvalue()))
    return seconds


def run(mode: Mode, results: Results) -> None:
    """Run scenario 7 and add its rows."""
    jobs = mode.pick(20_000, 20_000, 500)
    trials = mode.pick(21, 7, 1)
    progress: dict[str, object] = {PLAIN: None, BAR: True, CALLBACK: _ignore}
    try:
        import tqdm  # noqa: F401
    except ImportError:  # the bench extra alone does not install it
        has_tqdm = False
    else:
        has_tqdm = True
    if not has_tqdm:
        del progress[BAR]
    written: dict[str, list[int]] = {name: [] for name in progress}
    cpu: dict[str, list[float]] = {name: [] for name in progress}
    makers: dict[str, Callable[[], float]] = {
        name: (lambda value=value, out=written[name], used=cpu[name]: _batch(jobs, value, out, used))
        for name, value in progress.items()
    }
    for make in makers.values():  # warm-up
        make()
    for out in [*written.values(), *cpu.values()]:
        out.clear()
    seconds = interleave(makers, trials)
    label = f"7 batch progress, {jobs:,} no-op jobs"
    callback = ratio_row(label, "time", "s", seconds[PLAIN], CALLBACK, seconds[CALLBACK], higher_is_better=False)
    if has_tqdm:
        bar = ratio_row(label, "time", "s", seconds[PLAIN], BAR, seconds[BAR], higher_is_better=False)
        cost = (bar.ratio or 0.0) - 1  # the ratio is the time with the bar over the time without
        cpu_cost = median([b / p for b, p in zip(cpu[BAR], cpu[PLAIN], strict=True)]) - 1
        bar.note = (
            f"the bar costs {cost:.0%} of the batch's time, {cpu_cost:.0%} of its CPU time (aim: under "
            f"{MAX_COST:.0%}), and wrote {median(written[BAR]):.0f} bytes to a non-terminal stream per batch"
        )
        results.rows += [bar, callback]
    else:
        callback.note = "tqdm is not installed (pip install -e '.[bench,progress]'): the bar was not measured"
        results.rows.append(callback)
    results.scenarios["progress"] = {
        "jobs": jobs,
        "workers": WORKERS,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes_written": written,
    }
