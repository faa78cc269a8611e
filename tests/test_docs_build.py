"""The documentation builds without warnings, and its code snippets run."""

from __future__ import annotations

import html
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import jobdispatch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REPO_URL = "https://github.com/jobdispatch/jobdispatch"

# What users read speaks of the library, not of how it was made: no issue
# numbers, work sessions, reviews or numbered bugs.
HISTORY_WORDS = re.compile(
    r"\b(?:issues?|PR|pull request)\s*#\s*\d+"
    r"|\bsessions?\b"
    r"|\b(?:first|second|third|fourth|fifth|same|the|a|earlier|previous|later) reviews?\b"
    r"|\breview fix(?:es)?\b"
    r"|\bbugs? \d+"
    r"|\bround (?:one|two|three)\b",
    re.IGNORECASE,
)
USER_TEXT = ["README.md", "docs/**/*.md", "src/**/*.py", "examples/**/*.py", "docs/assets/**/*.json"]

# A short commit hash: 7 to 40 hex digits with at least one digit and one letter.
COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")

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


def _history_mentions(root: Path) -> list[str]:
    found = []
    for pattern in USER_TEXT:
        for path in sorted(root.glob(pattern)):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                found += [f"{path.relative_to(root)}:{number}: {m.group(0)!r}" for m in HISTORY_WORDS.finditer(line)]
    return found


class TestProductVoice:
    def test_user_text_does_not_tell_project_history(self) -> None:
        """README, docs, docstrings, comments and examples name no issue numbers, sessions, reviews or bug numbers."""
        found = _history_mentions(ROOT)
        assert not found, "project history in user-facing text:\n" + "\n".join(found)

    def test_history_check_catches_each_form(self, tmp_path: Path) -> None:
        """The history scan finds every form it is meant to catch, and passes ordinary prose."""
        (tmp_path / "docs").mkdir()
        caught = [
            "target (from issue #3)",
            "in the second session",
            "after the fixes of bugs 7 to 10",
            "found by the second review",
            "(bug 14)",
            "Same review: a Ctrl-C",
        ]
        (tmp_path / "README.md").write_text("\n".join(caught) + "\n")
        (tmp_path / "docs" / "ok.md").write_text("A job reviews its input; the debug log shows each issue.\n")
        assert len(_history_mentions(tmp_path)) == len(caught)

    def test_reliability_page_names_no_commit(self) -> None:
        """The reliability page states guarantees and how they are tested, not the commits they were measured at."""
        text = (DOCS / "reliability.md").read_text()
        assert COMMIT.findall(text) == []


@pytest.fixture
def benchmarks_page(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module that renders the benchmarks page (benchmarks/ is not installed)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks._page")


class TestBenchmarksPage:
    def test_published_runs_are_one_commit_on_one_machine(self, benchmarks_page: Any) -> None:
        """The published runs (latest.json first, then latest-X.Y.json) are full runs of one commit on one machine."""
        runs = benchmarks_page.load_runs(DOCS / "assets" / "benchmarks")
        assert runs[0][0] == "latest.json"
        _, problems = benchmarks_page.coherent(runs)
        assert problems == []
        assert {data["meta"]["mode"] for _, data in runs} == {"full"}

    def test_page_names_exactly_one_commit(self, benchmarks_page: Any) -> None:
        """The benchmarks page names one commit, the one of every published run."""
        text = (DOCS / "benchmarks.md").read_text()
        runs = benchmarks_page.load_runs(DOCS / "assets" / "benchmarks")
        assert set(COMMIT.findall(text)) == {data["meta"]["commit"] for _, data in runs}
        assert len(set(COMMIT.findall(text))) == 1

    def test_generated_section_matches_the_published_runs(self, benchmarks_page: Any) -> None:
        """The page's generated section is what the benchmark suite renders from every latest*.json."""
        text = (DOCS / "benchmarks.md").read_text()
        runs = benchmarks_page.load_runs(DOCS / "assets" / "benchmarks")
        assert benchmarks_page.replace_generated(text, benchmarks_page.render(runs)) == text


class TestPackaging:
    def test_license_is_an_spdx_expression(self) -> None:
        """pyproject.toml uses the SPDX license form setuptools asks for, so builds print no deprecation warning."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert project["project"]["license"] == "MIT"
        assert project["project"]["license-files"] == ["LICENSE"]
        assert not [c for c in project["project"]["classifiers"] if c.startswith("License ::")]
        (setuptools,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
        assert int(re.fullmatch(r"setuptools>=(\d+).*", setuptools).group(1)) >= 77  # type: ignore[union-attr]

    def test_docs_extra_can_format_signatures(self) -> None:
        """The docs extra installs a formatter, without which mkdocstrings prints signatures on one long line."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        names = {
            re.split(r"[<>=\[ ]", requirement)[0] for requirement in project["project"]["optional-dependencies"]["docs"]
        }
        assert names & {"ruff", "black"}


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
            # mkdocs-material >= 9.7 prints an end-of-life notice on every build
            # (see mkdocs.yml); this variable, named in the notice, turns it off.
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        assert result.returncode == 0, result.stderr
        reference = (site / "reference" / "index.html").read_text()
        missing = [name for name in jobdispatch.__all__ if f'id="jobdispatch.{name}"' not in reference]
        assert not missing, f"public names missing from docs/reference.md: {missing}"
        # Signatures are wrapped to the width of the page, not cut off at its edge.
        signatures = re.findall(r'<div class="doc-signature highlight">(.*?)</div>', reference, re.DOTALL)
        assert signatures
        lines = [html.unescape(re.sub(r"<[^>]*>", "", block)) for block in signatures]
        too_long = [line for block in lines for line in block.splitlines() if len(line) > 80]
        assert not too_long, too_long
        # Every page links to the repository (where examples/ and benchmarks/ live).
        assert f'href="{REPO_URL}"' in (site / "index.html").read_text()
