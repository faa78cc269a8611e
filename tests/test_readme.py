"""The README's quick start and the example it runs work as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_quick_start_runs_as_written() -> None:
    """The python block of the README's quick start runs and prints its stats."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    result = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "completed=20" in result.stdout


def test_quickstart_example_runs_and_joins_its_threads() -> None:
    """examples/quickstart.py finishes three rounds and leaves no thread."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "round 3: {1: 120, 0: 120}" in result.stdout
    assert "threads left: []" in result.stdout
