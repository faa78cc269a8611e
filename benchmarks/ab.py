"""The hot path of two revisions, A and B, each on its own code.

``python -m benchmarks.ab REV [--base REV2] [--quick | --smoke]`` takes
``src/`` of the git revision REV (A) out of the repository with
``git archive`` into a temporary directory, and runs part 3 of
`benchmarks.hotpath` (every way of dispatching, end to end) and its part 2
(the producer alone and the worker alone, which tell which side of a
hand-off changed) in child processes of the same interpreter, with
``PYTHONPATH`` set to that ``src/``. B is the working tree's ``src/``, or
REV2's with ``--base``. Both sides run the benchmark code of the working
tree, so only the library differs; this process does not import the
library, so it need not be installed for the interpreter that runs it.

A and B alternate (A B, B A, A B ...), one trial per child, so drifts of a
shared machine hit both alike. For each path the report gives the median
time per job of each side and the median over trials of the per-trial
ratio B/A (above 1: B is slower), with its range; and the same ratio after
dividing each side by ThreadPoolExecutor.submit timed in the same child,
which cancels what the machine did between the two children. A path that
one revision lacks (``dispatch_many``, arguments to ``dispatch``) gets the
other side's figure alone.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ._harness import Mode, median

#: The label `benchmarks.hotpath` gives ThreadPoolExecutor.submit.
TPE_SUBMIT = "TPE.submit"

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def export(rev: str, into: Path) -> Path:
    """Write ``src/`` of the git revision ``rev`` under ``into``; return that ``src`` directory.

    Nothing is checked out or registered in the repository: an interrupted
    run leaves only a temporary directory behind.
    """
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "src"], cwd=ROOT, capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"git archive {rev} src failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def describe(rev: str | None) -> str:
    """Name a revision (None: the working tree) by its short hash, saying whether src/ has local changes."""
    if rev is None:
        dirty = " + local changes to src/" if _git("status", "--porcelain", "--", "src") else ""
        return f"working tree (HEAD {_git('rev-parse', '--short', 'HEAD')}{dirty})"
    return f"{_git('rev-parse', '--short', rev + '^{commit}')} (committed {_git('log', '-1', '--format=%cs', rev)})"


def trial(src: Path, n: int) -> dict[str, Any]:
    """Run one trial of part 3 in a child process importing jobdispatch from ``src``."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.hotpath", "--child", str(n)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the child process for {src} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    imported = Path(result["jobdispatch"]).resolve()
    if not imported.is_relative_to(src.resolve()):
        raise SystemExit(f"the child process imported jobdispatch from {imported}, not from {src}")
    return result


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """One entry per path: ns per job of A and B (medians), and the B/A ratios (raw and per TPE)."""
    labels = list(dict.fromkeys([*b[0]["seconds"], *a[0]["seconds"]]))
    out = []
    for label in labels:
        if label == TPE_SUBMIT:
            continue
        entry: dict[str, Any] = {"path": label}
        for side, runs in (("a", a), ("b", b)):
            values = [run["seconds"].get(label) for run in runs]
            entry[f"{side}_ns"] = median([v / n * 1e9 for v in values if v is not None]) if None not in values else None
        if entry["a_ns"] is not None and entry["b_ns"] is not None:
            raw = [y["seconds"][label] / x["seconds"][label] for x, y in zip(a, b, strict=True)]
            per_tpe = [
                (y["seconds"][label] / y["seconds"][TPE_SUBMIT]) / (x["seconds"][label] / x["seconds"][TPE_SUBMIT])
                for x, y in zip(a, b, strict=True)
            ]
            entry["b_over_a"] = median(raw)
            entry["b_over_a_range"] = (min(raw), max(raw))
            entry["b_over_a_per_tpe"] = median(per_tpe)
        out.append(entry)
    return out


def report(meta: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    """Render an A/B comparison as text."""
    lines = [
        f"A: {meta['a']}",
        f"B: {meta['b']}",
        f"{meta['python']}; {meta['jobs']:,} no-op jobs, 1 producer -> 8 workers, drain included; "
        f"{meta['trials']} trials of each side, alternating, one per child process",
        "B/A: median of the per-trial ratios of time per job (above 1: B is slower), range in brackets;",
        "per TPE: the same after dividing each side by TPE.submit timed in the same child",
        "",
    ]
    width = max(len(entry["path"]) for entry in entries)
    lines.append(f"{'path':<{width}}  {'A ns/job':>8}  {'B ns/job':>8}  {'B/A':>5} {'(range)':<13}  {'per TPE':>7}")

    def ns(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    for entry in entries:
        if "b_over_a" in entry:
            low, high = entry["b_over_a_range"]
            ratio = f"{entry['b_over_a']:5.2f} ({low:.2f}-{high:.2f})"
            per_tpe = f"{entry['b_over_a_per_tpe']:7.2f}"
        else:
            ratio, per_tpe = f"{'-':>5} {'':<13}", f"{'-':>7}"
        lines.append(
            f"{entry['path']:<{width}}  {ns(entry['a_ns']):>8}  {ns(entry['b_ns']):>8}  {ratio:<19}  {per_tpe}"
        )
    return "\n".join(lines)


def run(against: str, base: str | None, mode: Mode, trials: int | None = None) -> dict[str, Any]:
    """Measure A (``against``) and B (``base``, or the working tree) alternately; return meta and entries."""
    n = mode.pick(200_000, 50_000, 2_000)
    trials = trials or mode.pick(7, 5, 2)
    meta = {
        "a": describe(against),
        "b": describe(base),
        "python": f"Python {sys.version.split()[0]}",
        "jobs": n,
        "trials": trials,
    }
    with tempfile.TemporaryDirectory(prefix="jobdispatch-ab-") as tmp:
        a_src = export(against, Path(tmp) / "a")
        b_src = export(base, Path(tmp) / "b") if base else ROOT / "src"
        sides: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        for number in range(trials):
            order = [("a", a_src), ("b", b_src)]
            for side, src in order if number % 2 == 0 else order[::-1]:
                print(f"  trial {number + 1}/{trials}: {side.upper()} ...", file=sys.stderr, flush=True)
                sides[side].append(trial(src, n))
    return {"meta": meta, "paths": compare(sides["a"], sides["b"], n), "raw": sides}


def main(argv: list[str] | None = None) -> int:
    """Run an A/B comparison, print it, and save it as JSON if asked."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n", 1)[0])
    parser.add_argument("against", metavar="REV", help="the revision A")
    parser.add_argument("--base", metavar="REV", help="the revision B (default: the working tree)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="50,000 jobs, 5 trials of each side")
    size.add_argument("--smoke", action="store_true", help="2,000 jobs, 2 trials: checks that it runs")
    parser.add_argument("--trials", type=int, help="trials of each side (default: 7, or as the size says)")
    parser.add_argument("--json", type=Path, help="save the comparison, every trial included, as JSON here")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials}")
    mode = Mode("quick" if args.quick else "smoke" if args.smoke else "full")
    data = run(args.against, args.base, mode, args.trials)
    print(report(data["meta"], data["paths"]))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
