"""Progress bars: a tqdm bar fed with ``(done, total)`` counts."""

from __future__ import annotations

import threading
import time
from typing import IO, Any

__all__ = ["INSTALL_HINT", "TqdmProgress"]

INSTALL_HINT = "pip install tqdm (or pip install 'jobdispatch[progress]')"


class TqdmProgress:
    """A tqdm bar driven by ``progress(done, total)`` reports, cheap enough to call once per job.

    A report only stores the counts, and hands them to the bar (``tqdm.update``)
    once the bar's ``mininterval`` (0.1 s by default) has passed since the last
    hand-over; tqdm then decides whether to redraw. So the bar costs a few
    lines of output a second however fast jobs end, on a terminal or in a log
    file. `close` draws the last counts reported and ends the bar; a report
    after that starts a new bar.

    Reports are expected one at a time (`Batch` makes them so); `close` may
    come from any thread.

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
        self._options: dict[str, Any] = {"unit": unit, "desc": desc, "file": file}
        self._bar: Any = None
        self._done = 0
        self._total = 0
        self._due = 0.0  # time.monotonic() after which a report reaches the bar; 0: the next one does
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` are over."""
        self._done = done
        self._total = total
        if time.monotonic() >= self._due:
            with self._lock:
                self._hand_over_locked()

    def close(self) -> None:
        """Draw the last counts reported and end the bar; nothing if no report came since the last close."""
        with self._lock:
            if self._bar is None:
                return
            self._hand_over_locked()
            bar, self._bar = self._bar, None
            self._due = 0.0
            bar.close()

    def _hand_over_locked(self) -> None:
        done, total = self._done, self._total
        bar = self._bar
        if bar is None:
            bar = self._bar = self._tqdm(total=total, **self._options)
        if total != bar.total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)  # tqdm redraws if its own mininterval has passed
        self._due = time.monotonic() + bar.mininterval
