"""The documentation builds without warnings, and its code snippets run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jobdispatch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Pages whose ```python blocks are complete scripts. (benchmarks.md and
# reliability.md follow their own conventions; reference.md has no block.)
SNIPPET_PAGES = ["index.md", "quickstart.md", "concepts/*.md", "howto/*.md"]

# An HTML comment on the line before a ```python fence changes how it is run:
#   <!-- fragment -->           not a complete script: not run
#   <!-- stderr: <why> -->      run; writing to stderr is expected
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _snippets() -> list[pytest.ParameterSet]:
    params = []
    for pattern in SNIPPET_PAGES:
        for page in sorted(DOCS.glob(pattern)):
            text = page.read_text()
            for match in _FENCE.finditer(text):
                before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
                if before.startswith("<!-- fragment"):
                    continue
                line = text.count("\n", 0, match.start()) + 1
                name = f"{page.relative_to(DOCS)}:{line}"
                params.append(pytest.param(match.group(1), before.startswith("<!-- stderr"), id=name))
    return params


def _have_docs_tools() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("mkdocs", "material", "mkdocstrings_handlers"))


class TestDocSnippets:
    def test_snippets_are_found(self) -> None:
        """The pages hold runnable snippets (the parser did not silently find none)."""
        assert len(_snippets()) >= 20

    @pytest.mark.parametrize(("code", "stderr_expected"), _snippets())
    def test_snippet_runs(self, code: str, stderr_expected: bool, tmp_path: Path) -> None:
        """A python block of the docs runs as a script: exit code 0, nothing on stderr unless marked."""
        script = tmp_path / "snippet.py"
        script.write_text(code)
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        if not stderr_expected:
            assert result.stderr == ""


@pytest.mark.skipif(not _have_docs_tools(), reason="needs the docs extra: pip install -e '.[docs]'")
class TestDocsBuild:
    def test_mkdocs_build_strict(self, tmp_path: Path) -> None:
        """`mkdocs build --strict` succeeds and the API reference renders every public name."""
        site = tmp_path / "site"
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", site],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        assert result.returncode == 0, result.stderr
        reference = (site / "reference" / "index.html").read_text()
        missing = [name for name in jobdispatch.__all__ if f'id="jobdispatch.{name}"' not in reference]
        assert not missing, f"public names missing from docs/reference.md: {missing}"
