"""Run the benchmark suite: ``python -m benchmarks [--quick | --smoke] [--json PATH] [--plots DIR] [--page PATH]``.

A full run of every scenario publishes itself, unless --json names a file
outside docs/assets/benchmarks/. On the main Python (`MAIN_PYTHON`) it
writes docs/assets/benchmarks/latest.json and the PNG plots next to it; on
any other Python, latest-X.Y.json only. Either way it then rewrites the
generated section of docs/benchmarks.md from every latest*.json there: one
commit on one machine, one run per Python version. A run of some scenarios
(--only), --quick and --smoke write files only when asked to.
``--from-json PATH`` runs nothing: it redraws the plots from a saved run,
and the page from the runs next to it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._harness import Mode, Results, markdown_table, text_table

ROOT = Path(__file__).resolve().parent.parent
#: The oldest Python the package supports (``requires-python``): its full run
#: is the main one, published as latest.json with the plots.
MAIN_PYTHON = (3, 11)
RESULTS = ROOT / "docs" / "assets" / "benchmarks"
PAGE = ROOT / "docs" / "benchmarks.md"
SCENARIOS = {
    "throughput": "throughput",
    "flood": "flood",
    "isolation": "isolation",
    "delayed": "delayed",
    "barrier": "barrier",
    "scaling": "scaling",
    "progress": "progress",
    "hotpath": "hotpath",
    "scaleout": "scaleout",
}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    if package == "jobdispatch":  # the code measured, which may not be the copy installed
        import jobdispatch

        return jobdispatch.__version__
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine(mode: Mode) -> dict[str, Any]:
    """Describe the code and the machine the run measures."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "mode": mode.name,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "src_modified": bool(_git("status", "--porcelain", "--", "src")),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "platform": platform.platform(),
        "nproc": usable,
        "cpu": _cpu_model(),
        "versions": {name: _version(name) for name in ("jobdispatch", "pebble", "matplotlib")},
        "load_average_before": _load(),
    }


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe(meta: dict[str, Any]) -> str:
    """One line naming the run, for titles."""
    dirty = "+local changes" if meta["src_modified"] else ""
    return (
        f"{meta['mode']} run, commit {meta['commit']}{dirty}, {meta['python']}, "
        f"{meta['nproc']} CPUs ({meta['cpu']}), {meta['date_utc']}"
    )


def _json_text(data: dict[str, Any]) -> str:
    """Pretty JSON for meta and rows, one line per scenario for the bulky raw figures."""
    scenarios = data.pop("scenarios")
    text = json.dumps(data, indent=1, default=str)
    lines = [f"  {json.dumps(name)}: {json.dumps(value, default=str)}" for name, value in scenarios.items()]
    return text[: text.rindex("}")].rstrip() + ',\n "scenarios": {\n' + ",\n".join(lines) + "\n }\n}\n"


def publish(
    data: dict[str, Any],
    *,
    plots: Path | None,
    json_path: Path | None,
    markdown: Path | None,
    page: Path | None,
    runs: Path | None = None,
) -> None:
    """Write what one run produced: plots, JSON, Markdown table, docs page, each if asked for.

    The page is drawn from every published run in ``runs`` (by default the
    directory of ``json_path``), after the JSON file is written.
    """
    data = json.loads(json.dumps(data, default=str))  # as a reader of the JSON file will see it
    scenarios = data.get("scenarios", {})
    if plots:
        from . import _plots

        plots.mkdir(parents=True, exist_ok=True)
        subtitle = describe(data["meta"])
        made = []
        if "isolation" in scenarios:
            made.append(_plots.isolation(scenarios["isolation"], plots / "isolation.png", subtitle))
        if "scaling" in scenarios:
            made.append(_plots.scaling(scenarios["scaling"], plots / "scaling.png", subtitle))
            made.append(_plots.lifecycle(scenarios["scaling"], plots / "scaling-lifecycle.png", subtitle))
        for path in made:
            print(f"wrote {path}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(_json_text(dict(data)))
        print(f"wrote {json_path}")
    if markdown:
        markdown.write_text(data["table_markdown"] + "\n")
        print(f"wrote {markdown}")
    if page:
        from . import _page

        published = _page.load_runs(runs or (json_path.parent if json_path else RESULTS))
        if not published:
            raise SystemExit(
                f"no published run (latest*.json) in {runs or json_path or RESULTS}: the page is drawn from those"
            )
        _, problems = _page.coherent(published)
        for problem in problems:
            print(f"warning: {problem}")
        page.write_text(_page.replace_generated(page.read_text(), _page.render(published)))
        print(f"wrote {page} from {', '.join(name for name, _ in published)}")


def published(version: tuple[int, int]) -> Path:
    """Where a full run on Python ``version`` publishes its JSON (the main run's plots go next to it)."""
    if version == MAIN_PYTHON:
        return RESULTS / "latest.json"
    return RESULTS / "latest-{}.{}.json".format(*version)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="jobdispatch against its peers.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes and fewer trials: under a minute")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, one trial: checks that everything runs")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--plots", type=Path, help="write the PNG plots into this directory")
    parser.add_argument("--markdown", type=Path, help="write the results table as Markdown here")
    parser.add_argument(
        "--page", type=Path, help="rewrite the generated section of this docs page from the latest*.json next to --json"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="run nothing: draw the plots (docs/ by default, for latest.json) from this saved run, "
        "and the page from every latest*.json next to it",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated scenarios, out of {','.join(SCENARIOS)} (default: all; hotpath in full runs only)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        publish(
            data,
            plots=args.plots or (RESULTS if args.from_json.name == "latest.json" else None),
            json_path=args.json,
            markdown=args.markdown,
            page=args.page or PAGE,
            runs=args.from_json.parent,
        )
        return 0
    mode = Mode("quick" if args.quick else "smoke" if args.smoke else "full")
    if mode.name == "full" and not args.only:
        args.json = args.json or published(sys.version_info[:2])
        if args.json.resolve().parent == RESULTS.resolve():  # a published run
            args.plots = args.plots or (RESULTS if args.json.name == "latest.json" else None)
            args.page = args.page or PAGE
    if args.page and not args.json:
        print("--page needs --json: the page is drawn from the runs saved next to it", file=sys.stderr)
        return 2
    if args.only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(SCENARIOS))
        if unknown:
            print(f"unknown scenarios: {', '.join(unknown)}", file=sys.stderr)
            return 2
    else:
        chosen = [name for name in SCENARIOS if name != "hotpath" or mode.name == "full"]

    results = Results(meta=machine(mode))
    print(f"jobdispatch benchmarks: {describe(results.meta)}", flush=True)
    load = results.meta["load_average_before"]
    if load and load[0] > 0.5:
        print(f"  warning: load average {load[0]} before the run: other processes compete for the CPUs", flush=True)
    started = time.perf_counter()
    for name in chosen:
        module = importlib.import_module(f".{SCENARIOS[name]}", __package__)
        begin = time.perf_counter()
        print(f"  running {name} ...", end="", flush=True)
        module.run(mode, results)
        print(f" {time.perf_counter() - begin:.1f} s", flush=True)
    results.meta["duration_s"] = round(time.perf_counter() - started, 1)
    results.meta["load_average_after"] = _load()

    table = text_table(results.rows)
    print()
    print("ratio: median over trials of the per-trial factor by which jobdispatch beats the competitor")
    print("(> 1: jobdispatch better; rates divided, times and sizes inverted); figures: medians over trials.")
    if mode.name != "full":
        print(f"{mode.name} mode: smaller sizes than the targets are defined for; 'met' is indicative only.")
    print(table)
    notes = [f"  {row.scenario} / {row.competitor}: {row.note}" for row in results.rows if row.note]
    if notes:
        print("notes:")
        print("\n".join(notes))
    judged = [row for row in results.rows if row.met is not None]
    missed = [row for row in judged if not row.met]
    print(f"targets met: {len(judged) - len(missed)} of {len(judged)}", end="")
    print(f"; missed: {'; '.join(f'{r.scenario}: {r.target}' for r in missed)}" if missed else "")
    if "hotpath" in results.scenarios:
        from .hotpath import report

        print()
        print(report(results.scenarios["hotpath"]))
    print(
        f"total {results.meta['duration_s']} s; load average before {load}, after {results.meta['load_average_after']}"
    )

    data = results.as_json()
    data["table_markdown"] = markdown_table(results.rows)
    publish(data, plots=args.plots, json_path=args.json, markdown=args.markdown, page=args.page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
