"""Shared machinery: run sizes, interleaved trials, statistics, the results table."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Mode:
    """How big each scenario runs: ``full``, ``quick`` or ``smoke``."""

    name: str

    def pick(self, full: T, quick: T, smoke: T) -> T:
        """Return the value for this mode."""
        return {"full": full, "quick": quick, "smoke": smoke}[self.name]


def noop() -> None:
    """The job of every throughput scenario: does nothing."""


def interleave(runners: dict[str, Callable[[], T]], trials: int) -> dict[str, list[T]]:
    """Run every runner once per trial, rotating their order from trial to trial.

    Each trial runs all contenders back to back, so slow drifts of the machine
    (frequency, other load) hit them alike; the rotation stops any contender
    from always running right after the same other one. The garbage of one run
    is collected before the next one starts.
    """
    names = list(runners)
    results: dict[str, list[T]] = {name: [] for name in names}
    for trial in range(trials):
        shift = trial % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            results[name].append(runners[name]())
    return results


def timed(fn: Callable[[], object]) -> float:
    """Return the seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no value."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratios(ours: Sequence[float], theirs: Sequence[float], *, higher_is_better: bool) -> list[float]:
    """Per-trial factors by which jobdispatch is better (> 1) or worse (< 1)."""
    if higher_is_better:
        return [o / t if t else math.inf for o, t in zip(ours, theirs, strict=True)]
    return [t / o if o else math.inf for o, t in zip(ours, theirs, strict=True)]


@dataclass
class Row:
    """One line of the results table.

    ``ratio`` is the median over trials of the per-trial factor by which
    jobdispatch is better than ``competitor`` (> 1 means jobdispatch wins),
    whatever the direction of the metric.
    """

    scenario: str
    metric: str
    unit: str
    jobdispatch: float
    competitor: str | None = None
    competitor_value: float | None = None
    ratio: float | None = None
    ratio_range: tuple[float, float] | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""


@dataclass
class Results:
    """Everything one run of the suite produced."""

    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    scenarios: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable form."""
        return {"meta": self.meta, "rows": [asdict(row) for row in self.rows], "scenarios": self.scenarios}


def fmt(value: float | None, unit: str) -> str:
    """Format a measured value with its unit, compactly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("jobs/s", "rounds/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f} M/s"
        if value >= 1e4:
            return f"{value / 1e3:.0f} k/s"
        if value >= 1e3:
            return f"{value / 1e3:.2f} k/s"
        return f"{value:.0f} /s"
    if unit == "s":
        if abs(value) >= 1:
            return f"{value:.2f} s"
        if abs(value) >= 1e-3:
            return f"{value * 1e3:.2f} ms"
        return f"{value * 1e6:.0f} us"
    if unit == "ns/job":
        return f"{value:.0f} ns"
    if unit == "MB":
        if value >= 1000:
            return f"{value / 1000:.2f} GB"
        return f"{value:.1f} MB"
    return f"{value:.3g} {unit}"


def fmt_ratio(ratio: float | None) -> str:
    """Format a ratio as ``12.3x``."""
    if ratio is None or math.isnan(ratio):
        return "-"
    if math.isinf(ratio):
        return "inf"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def fmt_ratio_range(row: Row) -> str:
    """Format a row's ratio with the range of its per-trial ratios."""
    text = fmt_ratio(row.ratio)
    if row.ratio_range is not None and row.ratio_range[0] != row.ratio_range[1]:
        low, high = row.ratio_range
        text += f" ({fmt_ratio(low)}-{fmt_ratio(high)})"
    return text


def fmt_met(met: bool | None) -> str:
    """Format whether a target is met."""
    return "" if met is None else ("yes" if met else "NO")


_COLUMNS = ("scenario", "metric", "jobdispatch", "competitor", "competitor's", "ratio (range)", "target", "met")


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.scenario,
        row.metric,
        fmt(row.jobdispatch, row.unit),
        row.competitor or "",
        fmt(row.competitor_value, row.unit) if row.competitor else "",
        fmt_ratio_range(row),
        row.target or "",
        fmt_met(row.met),
    )


def text_table(rows: Sequence[Row]) -> str:
    """Render the rows as an aligned plain-text table."""
    cells = [_COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = []
    for n, line in enumerate(cells):
        lines.append("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """Render the rows as a Markdown table."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        cells = [c.replace("|", "\\|") for c in _cells(row)]
        if cells[7] == "NO":
            cells[7] = "**NO**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(
    scenario: str,
    metric: str,
    unit: str,
    samples: dict[str, list[float]],
    *,
    higher_is_better: bool,
    reference: str = "jobdispatch",
    competitors: Sequence[str] | None = None,
    targets: dict[str, tuple[str, float]] | None = None,
) -> list[Row]:
    """Build one row per competitor from per-trial samples.

    Args:
        scenario: The scenario label.
        metric: What is measured.
        unit: The unit of the samples.
        samples: Per-trial values of every contender, trial ``i`` of each
            measured in the same interleaved round.
        higher_is_better: Whether a larger value is better (a rate) or worse
            (a time, a latency, a size).
        reference: The contender the others are compared with.
        competitors: Which contenders get a row; all but the reference by default.
        targets: ``{competitor: (text, minimum ratio)}`` for ratio targets.
    """
    ours = samples[reference]
    rows = []
    for name in competitors if competitors is not None else [n for n in samples if n != reference]:
        per_trial = ratios(ours, samples[name], higher_is_better=higher_is_better)
        ratio = median(per_trial)
        ratio_range = (min(per_trial), max(per_trial))
        target = met = None
        if targets and name in targets:
            target, minimum = targets[name]
            met = ratio >= minimum
        rows.append(
            Row(
                scenario=scenario,
                metric=metric,
                unit=unit,
                jobdispatch=median(ours),
                competitor=name,
                competitor_value=median(samples[name]),
                ratio=ratio,
                ratio_range=ratio_range,
                target=target,
                met=met,
            )
        )
    return rows


def ratio_row(
    scenario: str,
    metric: str,
    unit: str,
    ours: list[float],
    competitor: str,
    theirs: list[float],
    *,
    higher_is_better: bool,
    target: str | None = None,
    met: bool | None = None,
) -> Row:
    """One row from per-trial values of jobdispatch and one competitor."""
    per_trial = ratios(ours, theirs, higher_is_better=higher_is_better)
    return Row(
        scenario=scenario,
        metric=metric,
        unit=unit,
        jobdispatch=median(ours),
        competitor=competitor,
        competitor_value=median(theirs),
        ratio=median(per_trial),
        ratio_range=(min(per_trial), max(per_trial)),
        target=target,
        met=met,
    )
