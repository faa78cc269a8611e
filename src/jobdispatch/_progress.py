"""Progress bars: a tqdm bar fed with ``(done, total)`` counts."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from time import monotonic
from typing import IO, Any

__all__ = ["INSTALL_HINT", "TqdmProgress", "wait_reporting"]

INSTALL_HINT = "pip install tqdm (or pip install 'jobdispatch[progress]')"
INTERVAL = 0.1  # seconds between two hand-overs of counts to the bar, and tqdm's own minimum between redraws


class TqdmProgress:
    """One tqdm bar driven by ``progress(done, total)`` reports, cheap enough to call once per job.

    A report only stores the counts, and hands them to the bar
    (``tqdm.update``) once 0.1 s has passed since the last hand-over; tqdm then decides whether to redraw. So
    the bar costs a few lines of output a second however fast jobs end, on a
    terminal or in a log file. Reports may come from several threads at once:
    the bar shows the latest one to arrive, and `close` draws the final counts.
    A caller on a hot path may skip reports while ``time.monotonic() < due``.

    Args:
        unit: What is counted, shown in the rate (``job/s``).
        desc: A label shown before the bar.
        file: Where to draw the bar; standard error by default.

    Raises:
        ModuleNotFoundError: tqdm is not installed.
    """

    def __init__(self, *, unit: str = "job", desc: str | None = None, file: IO[str] | None = None) -> None:
        try:
            from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"progress=True needs tqdm: {INSTALL_HINT}", name="tqdm") from None
        self._tqdm: Any = tqdm
        self._options: dict[str, Any] = {"unit": unit, "desc": desc, "file": file, "mininterval": INTERVAL}
        self._bar: Any = None
        self._counts: tuple[int, int] | None = None  # the last report, for close() without counts
        self.due = 0.0  # monotonic() from which a report reaches the bar; 0: the next one does
        self._closed = False
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` are over (ignored once the bar is closed)."""
        self._counts = (done, total)
        if monotonic() >= self.due:
            with self._lock:
                if not self._closed:
                    self._hand_over_locked(done, total)

    def close(self, done: int | None = None, total: int | None = None) -> None:
        """Draw the final counts and end the bar; later reports are ignored.

        Args:
            done: The final count of what is over; the last report's by default.
            total: The final total; the last report's by default.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.due = math.inf
            # Not read back from _counts: a late report may be storing there.
            counts = (done, total) if done is not None and total is not None else self._counts
            if counts is None:
                return  # no report, no bar
            self._hand_over_locked(*counts)
            self._bar.close()

    def _hand_over_locked(self, done: int, total: int) -> None:
        self.due = monotonic() + INTERVAL  # first: a bar that fails is not retried at once either
        bar = self._bar
        if bar is None:
            bar = self._bar = self._tqdm(total=total, **self._options)
        if total != bar.total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)  # tqdm redraws if its own mininterval has passed


def wait_reporting(
    wait: Callable[[float | None], bool],
    counts: Callable[[], tuple[int, int]],
    progress: Callable[[int, int], object],
    deadline: float | None,
    *,
    every: float = 0.1,
) -> bool:
    """Wait like ``wait(timeout)`` until ``deadline``, reporting ``progress(*counts())`` every ``every`` seconds.

    For a blocking wait that shows progress, e.g. ``Event.wait``: the
    counts are reported between waits of at most ``every`` seconds, and once
    more when the wait returns.

    Args:
        wait: Blocks for at most its argument in seconds (``None``: no limit);
            returns whether what it waits for happened.
        counts: Returns ``(done, total)`` now.
        progress: Called as ``progress(done, total)``.
        deadline: A `time.monotonic` time to give up at; ``None`` waits as
            long as it takes.
        every: Seconds between two reports.

    Returns:
        What the last ``wait`` returned: ``False`` if the deadline passed first.
    """
    while True:
        step = every if deadline is None else min(every, max(0.0, deadline - monotonic()))
        if wait(step):
            progress(*counts())
            return True
        if deadline is not None and monotonic() >= deadline:
            progress(*counts())
            return False
        progress(*counts())
