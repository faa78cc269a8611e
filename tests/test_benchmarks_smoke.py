"""Smoke test of the benchmark suite: `python -m benchmarks --smoke` runs and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pebble", reason="the benchmarks need the bench extra (pebble)")

ROOT = Path(__file__).resolve().parent.parent


def _run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


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
