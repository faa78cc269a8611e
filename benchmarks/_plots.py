"""PNG plots of scenarios 3 (isolation) and 6 (scaling), made with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {
    "jobdispatch": "tab:blue",
    "ThreadPoolExecutor": "tab:orange",
    "multiprocessing ThreadPool": "tab:green",
    "pebble ThreadPool": "tab:red",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def isolation(data: dict[str, Any], path: Path, subtitle: str) -> Path:
    """Plot the distribution (CDF) of probe start latencies of each contender."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for kind, trials in data["latency_s"].items():
        values = sorted(x * 1e3 for trial in trials for x in trial)
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=kind)
    ax.axvline(2.0, color="grey", linestyle="--", linewidth=1, label="target: p99 <= 2 ms")
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("probe start latency (ms, log scale)")
    ax.set_ylabel("fraction of probes")
    ax.set_title(
        f"Isolation: probe every {data['period_s'] * 1e3:.0f} ms next to a pool saturated with "
        f"{data['bulk_job_s'] * 1e3:.0f} ms jobs\n{subtitle}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
            linestyle=style,
            label=name + suffix,
            color=COLOURS.get(name),
        )
    ax.set_xscale("log")
    ax.set_xticks([int(x) for x in xs], [str(x) for x in xs])
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)


def scaling(data: dict[str, Any], path: Path, subtitle: str) -> Path:
    """Plot throughput against workers and pools, and pool lifecycle times."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (a, b), (c, d) = axes
    if "by_workers_warm" in data:
        _series(a, data["by_workers_warm"], 1e-3, ", threads started", ":")
    _series(a, data["by_workers"], 1e-3, ", fresh pool")
    a.set_title("6a throughput, 1 producer, 1 pool", fontsize=10)
    a.set_xlabel("workers")
    a.set_ylabel("thousand jobs/s")
    a.set_ylim(bottom=0)
    _series(b, data["by_pools"], 1e-3)
    b.set_title("6b throughput, 1 producer, N pools x 4 workers", fontsize=10)
    b.set_xlabel("pools")
    b.set_ylabel("thousand jobs/s")
    b.set_ylim(bottom=0)
    _series(c, data["create_finalize_s"], 1e3)
    c.axhline(50, color="grey", linestyle="--", linewidth=1, label="target at 4,000: < 50 ms")
    c.set_yscale("log")
    c.set_title("6c create + finalize, no job run", fontsize=10)
    c.set_xlabel("workers")
    c.set_ylabel("ms (log scale)")
    c.legend(fontsize=7)
    _series(d, data["create_start_finalize_s"], 1e3)
    d.set_yscale("log")
    d.set_title("6d create + start every thread + finalize", fontsize=10)
    d.set_xlabel("workers")
    d.set_ylabel("ms (log scale)")
    fig.suptitle(f"Scaling (medians over trials)\n{subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
