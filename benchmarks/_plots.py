"""PNG plots of scenarios 3 (isolation) and 6 (scaling), made with matplotlib.

Each figure has at most two panels and fonts sized to stay readable when the
docs page scales the image down to its column width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {
    "jobdispatch": "tab:blue",
    "ThreadPoolExecutor": "tab:orange",
    "multiprocessing ThreadPool": "tab:green",
    "pebble ThreadPool": "tab:red",
}
FONTS = {
    "font.size": 14,
    "axes.titlesize": 15,
    "axes.labelsize": 14,
    "xtick.labelsize": 13,
    "ytick.labelsize": 13,
    "legend.fontsize": 12,
    "figure.titlesize": 13,
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(FONTS)
    return plt


def _save(fig: Any, plt: Any, path: Path, subtitle: str) -> Path:
    fig.text(0.5, 0.005, subtitle, ha="center", va="bottom", fontsize=10, color="dimgrey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def isolation(data: dict[str, Any], path: Path, subtitle: str) -> Path:
    """Plot the distribution (CDF) of probe start latencies of each contender."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 6))
    for kind, trials in data["latency_s"].items():
        values = sorted(x * 1e3 for trial in trials for x in trial)
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=kind, linewidth=2)
    ax.axvline(2.0, color="grey", linestyle="--", linewidth=1.5, label="target: p99 <= 2 ms")
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("probe start latency (ms, log scale)")
    ax.set_ylabel("fraction of probes")
    ax.set_title(
        f"Probe every {data['period_s'] * 1e3:.0f} ms next to a pool busy with {data['bulk_job_s'] * 1e3:.0f} ms jobs"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center right")
    return _save(fig, plt, path, subtitle)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _series(
    ax: Any, table: dict[Any, dict[str, list[float]]], scale: float, suffix: str = "", style: str = "-"
) -> None:
    xs = sorted(table, key=int)
    names = list(table[xs[0]])
    for name in names:
        ax.plot(
            [int(x) for x in xs],
            [_median(table[x][name]) * scale for x in xs],
            marker="o",
            markersize=7,
            linewidth=2,
            linestyle=style,
            label=name + suffix,
            color=COLOURS.get(name),
        )
    ax.set_xscale("log")
    ax.set_xticks([int(x) for x in xs], [str(x) for x in xs])
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)


def scaling(data: dict[str, Any], path: Path, subtitle: str) -> Path:
    """Plot throughput against workers (6a) and against pools (6b)."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.5))
    if "by_workers_warm" in data:
        _series(a, data["by_workers_warm"], 1e-3, ", threads started", ":")
    _series(a, data["by_workers"], 1e-3, ", fresh pool")
    a.set_title("6a: 1 producer, 1 pool")
    a.set_xlabel("workers")
    a.set_ylabel("thousand jobs/s")
    a.set_ylim(bottom=0)
    a.legend(loc="center left", fontsize=11)
    _series(b, data["by_pools"], 1e-3)
    b.set_title("6b: 1 producer, N pools of 4 workers")
    b.set_xlabel("pools")
    b.set_ylabel("thousand jobs/s")
    b.set_ylim(bottom=0)
    b.legend(loc="center left")
    return _save(fig, plt, path, subtitle)


def lifecycle(data: dict[str, Any], path: Path, subtitle: str) -> Path:
    """Plot the time to create and finalize a pool, without (6c) and with (6d) its threads started."""
    plt = _pyplot()
    fig, (c, d) = plt.subplots(1, 2, figsize=(13, 5.5))
    _series(c, data["create_finalize_s"], 1e3)
    c.axhline(50, color="grey", linestyle="--", linewidth=1.5, label="target at 4,000: < 50 ms")
    c.set_yscale("log")
    c.set_title("6c: create + finalize, no job")
    c.set_xlabel("workers")
    c.set_ylabel("ms (log scale)")
    c.legend(loc="upper left", fontsize=11)
    _series(d, data["create_start_finalize_s"], 1e3)
    d.set_yscale("log")
    d.set_title("6d: create + start every thread + finalize")
    d.set_xlabel("workers")
    d.set_ylabel("ms (log scale)")
    d.legend(loc="upper left")
    return _save(fig, plt, path, subtitle)
