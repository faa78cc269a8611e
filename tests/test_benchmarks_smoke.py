"""Smoke tests of the benchmark suite: it runs, reports, compares revisions and renders its page."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "assets" / "benchmarks" / "latest.json"

needs_pebble = pytest.mark.skipif(
    importlib.util.find_spec("pebble") is None, reason="the benchmarks need the bench extra (pebble)"
)


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def _run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return _run("benchmarks", *args)


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The benchmarks package (not installed: imported from the repository)."""
    monkeypatch.syspath_prepend(str(ROOT))
    importlib.import_module("benchmarks.hotpath")
    importlib.import_module("benchmarks.ab")
    importlib.import_module("benchmarks._page")
    importlib.import_module("benchmarks.__main__")
    return sys.modules["benchmarks"]


@needs_pebble
class TestSmokeRun:
    def test_prints_the_table_and_writes_json(self, tmp_path: Path) -> None:
        """A smoke run exits 0, prints the results table with every scenario and target, and writes its JSON."""
        out = tmp_path / "results.json"
        done = _run_suite("--json", str(out))
        assert done.returncode == 0, done.stderr
        header = next(line for line in done.stdout.splitlines() if line.startswith("scenario "))
        for column in ("jobdispatch", "competitor", "ratio", "target", "met"):
            assert column in header
        for scenario in (
            "1a throughput",
            "1b throughput",
            "2 flood",
            "3 isolation",
            "4 delayed",
            "5 barrier",
            "6a",
            "6c",
        ):
            assert scenario in done.stdout
        assert "targets met:" in done.stdout
        data = json.loads(out.read_text())
        assert data["meta"]["mode"] == "smoke"
        assert data["meta"]["python_version"] == "{}.{}".format(*sys.version_info)
        judged = [row for row in data["rows"] if row["met"] is not None]
        assert len(judged) == 7  # 1a, 1b, flood, isolation, delayed, barrier, create+finalize

    def test_draws_the_plots(self, tmp_path: Path) -> None:
        """With --plots, the isolation and scaling scenarios are drawn as PNG files."""
        pytest.importorskip("matplotlib")
        done = _run_suite("--only", "isolation,scaling", "--plots", str(tmp_path))
        assert done.returncode == 0, done.stderr
        for name in ("isolation.png", "scaling.png"):
            assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")

    def test_refuses_an_unknown_scenario(self) -> None:
        """--only with an unknown scenario name exits 2 and names it."""
        done = _run_suite("--only", "nosuch")
        assert done.returncode == 2
        assert "nosuch" in done.stderr

    def test_runs_without_tqdm(self, tmp_path: Path) -> None:
        """Without tqdm (the bench extra alone), scenario 7 leaves the bar out with a note instead of failing."""
        (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['tqdm'] = None  # as if not installed\n")
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--smoke", "--only", "progress"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "batch(progress=callback)" in done.stdout
        assert "tqdm is not installed" in done.stdout

    def test_hotpath_rows_join_the_table(self, tmp_path: Path) -> None:
        """--only hotpath adds one row per path against TPE.submit, and one against TPE.map per dispatch_many path."""
        out = tmp_path / "results.json"
        done = _run_suite("--only", "hotpath", "--json", str(out))
        assert done.returncode == 0, done.stderr
        rows = json.loads(out.read_text())["rows"]
        assert len(rows) == 2 * (6 + 2)  # 6 paths and 2 more for TPE.map, with and without the context
        assert {row["unit"] for row in rows} == {"ns/job"}
        assert all(row["ratio"] > 0 for row in rows)
        assert "hot path (2,000 no-op jobs, 1 producer -> 1 pool x 8), propagate_context=False" in done.stdout


class TestHotPath:
    def test_reports_every_path_against_tpe(self, tmp_path: Path) -> None:
        """The hot path alone times every way of dispatching, with and without the context, and TPE submit and map."""
        out = tmp_path / "hotpath.json"
        done = _run("benchmarks.hotpath", "--json", str(out))
        assert done.returncode == 0, done.stderr
        seconds = json.loads(out.read_text())["paths"]["seconds"]
        paths = [
            "dispatch(fn)",
            "dispatch(job)",
            "dispatch(obj.method)",
            "dispatch(fn, arg)",
            "dispatch_many(jobs)",
            "dispatch_many(jobs, chunksize=32)",
        ]
        expected = {"TPE.submit", "TPE.map", *paths, *(f"{p}, propagate_context=False" for p in paths)}
        assert set(seconds) == expected
        assert all(len(values) == 1 and values[0] > 0 for values in seconds.values())
        for path in paths:
            assert f"\n   {path} " in done.stdout

    def test_ratios_are_medians_of_per_trial_ratios(self, bench: Any) -> None:
        """A row's ratio is the median of TPE's time over the path's, trial by trial; its figure is in ns per job."""
        data = {
            "jobs": 1000,
            "workers": 8,
            "seconds": {
                "TPE.submit": [4.0, 1.0, 6.0],
                "TPE.map": [8.0, 2.0, 12.0],
                "dispatch(fn)": [1.0, 0.5, 2.0],
                "dispatch_many(jobs)": [2.0, 2.0, 2.0],
            },
        }
        rows = {(row.metric, row.competitor): row for row in bench.hotpath.rows(data)}
        assert set(rows) == {
            ("dispatch(fn)", "TPE.submit"),
            ("dispatch_many(jobs)", "TPE.submit"),
            ("dispatch_many(jobs)", "TPE.map"),
        }
        assert rows["dispatch(fn)", "TPE.submit"].ratio == 3.0  # median of 4, 2, 3
        assert rows["dispatch(fn)", "TPE.submit"].jobdispatch == 1e6  # 1 s for 1000 jobs
        assert rows["dispatch_many(jobs)", "TPE.map"].ratio == 4.0  # median of 4, 1, 6


class TestAgainstRevision:
    def test_compares_every_path_with_a_revision(self, tmp_path: Path) -> None:
        """The A/B measures REV's src/ and the working tree's in child processes and gives B/A for every path."""
        out = tmp_path / "ab.json"
        done = _run("benchmarks.ab", "HEAD", "--trials", "2", "--json", str(out))
        assert done.returncode == 0, done.stderr
        data = json.loads(out.read_text())
        assert len(data["raw"]["a"]) == len(data["raw"]["b"]) == 2
        imported = {Path(run["jobdispatch"]).parent.parent for side in "ab" for run in data["raw"][side]}
        assert ROOT / "src" in imported  # the working tree
        assert len(imported) == 2  # and the exported revision
        assert len(data["paths"]) == 12 + 4  # and the two halves, with and without the context
        assert all(entry["b_over_a"] > 0 for entry in data["paths"])
        assert "B/A" in done.stdout

    def test_path_missing_from_one_side_has_no_ratio(self, bench: Any) -> None:
        """A path an older revision lacks gets B's figure alone; B/A is the median of per-trial ratios."""
        a = [
            {"seconds": {"TPE.submit": 1.0, "dispatch(fn)": 1.0}},
            {"seconds": {"TPE.submit": 2.0, "dispatch(fn)": 2.0}},
        ]
        b = [
            {"seconds": {"TPE.submit": 1.0, "dispatch(fn)": 3.0, "dispatch_many(jobs)": 1.0}},
            {"seconds": {"TPE.submit": 1.0, "dispatch(fn)": 2.0, "dispatch_many(jobs)": 1.0}},
        ]
        entries = {entry["path"]: entry for entry in bench.ab.compare(a, b, 1000)}
        assert entries["dispatch(fn)"]["b_over_a"] == 2.0  # median of 3 and 1
        assert entries["dispatch(fn)"]["b_over_a_range"] == (1.0, 3.0)
        assert entries["dispatch(fn)"]["b_over_a_per_tpe"] == 2.5  # median of 3 and 2
        assert entries["dispatch_many(jobs)"]["a_ns"] is None
        assert "b_over_a" not in entries["dispatch_many(jobs)"]

    def test_refuses_an_unknown_revision(self) -> None:
        """The A/B of a revision git does not know exits non-zero and names it."""
        done = _run("benchmarks.ab", "no-such-revision")
        assert done.returncode != 0
        assert "no-such-revision" in done.stderr


def _published() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PUBLISHED.read_text())
    return data


def _as_python(data: dict[str, Any], version: str) -> dict[str, Any]:
    other = copy.deepcopy(data)
    other["meta"]["python"] = f"CPython {version}"
    other["meta"]["python_version"] = version.rsplit(".", 1)[0]
    return other


class TestPage:
    def test_renders_one_table_per_python_version(self, bench: Any, tmp_path: Path) -> None:
        """The page shows the targets, results and hot path of every version's run, and names their one commit."""
        main = _published()
        for name, data in (
            ("latest.json", main),
            ("latest-3.13.json", _as_python(main, "3.13.0")),
            ("latest-3.12.json", _as_python(main, "3.12.1")),
        ):
            (tmp_path / name).write_text(json.dumps(data))
        runs = bench._page.load_runs(tmp_path)
        assert [name for name, _ in runs] == ["latest.json", "latest-3.12.json", "latest-3.13.json"]
        text = bench._page.render(runs)
        for version in (main["meta"]["python"], "CPython 3.12.1", "CPython 3.13.0"):
            assert f"\n### {version}\n" in text
            assert f"\n**{version}**\n" in text
        assert text.count("## Plots") == 1
        assert text.count("**1a throughput") == 3
        assert "[latest-3.13.json](assets/benchmarks/latest-3.13.json)" in text
        assert main["meta"]["commit"] in text

    def test_leaves_off_a_run_of_another_commit(self, bench: Any) -> None:
        """A run of another commit (or machine, or a Python shown already) is left off the page, with the reason."""
        main = _published()
        stale = _as_python(main, "3.12.1")
        stale["meta"]["commit"] = "abcdef1"
        twin = _as_python(main, main["meta"]["python"].split()[-1])
        kept, problems = bench._page.coherent(
            [("latest.json", main), ("latest-3.12.json", stale), ("latest-x.json", twin)]
        )
        assert [name for name, _ in kept] == ["latest.json"]
        assert len(problems) == 2
        assert problems[0].startswith("latest-3.12.json left off the page: commit 'abcdef1'")
        assert "is shown already" in problems[1]
        assert "abcdef1" not in bench._page.render([("latest.json", main), ("latest-3.12.json", stale)])

    def test_each_python_publishes_its_own_file(self, bench: Any) -> None:
        """A full run on the main Python publishes latest.json; on another Python, latest-X.Y.json."""
        cli = sys.modules["benchmarks.__main__"]
        assert cli.published(cli.MAIN_PYTHON) == cli.RESULTS / "latest.json"
        assert cli.published((3, 99)) == cli.RESULTS / "latest-3.99.json"

    def test_main_python_is_the_oldest_supported(self, bench: Any) -> None:
        """The main Python of the published runs is the lower bound of requires-python."""
        import tomllib

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        cli = sys.modules["benchmarks.__main__"]
        assert project["requires-python"] == ">={}.{}".format(*cli.MAIN_PYTHON)
