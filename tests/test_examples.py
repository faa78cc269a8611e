"""Every script in examples/ runs as documented and prints what it shows."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobdispatch import Dispatcher

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Lines (or parts of lines) each example must print. No timing is checked.
EXPECTED = {
    "quickstart.py": ["round 3: {1: 120, 0: 120}", "threads left: []"],
    "game_of_life.py": [
        "generation 8: 4 bands, population 8",
        "same as the one-thread computation: True",
        "glider moved 2 cells diagonally, blinker back in place: True",
    ],
    "link_crawler.py": [
        "failed: HTTP Error 404: Not Found | jobdispatch: raised by job visit /missing in pool 0",
        "failed: HTTP Error 404: Not Found | jobdispatch: raised by job visit /gone in pool 0",
        "crawled 9 pages: ['/', '/blog', '/blog/1', '/blog/2', '/docs', '/docs/api', '/docs/api/batches',"
        " '/docs/api/pools', '/docs/install']",
        "completed=9, failed=2, cancelled=0",
    ],
    "priority_crawler.py": [
        "one shared pool, 4 threads:",
        "bulkheads, 2 threads for bulk and 2 for pages:",
        "page:  8 fetched",
        "bulk: 12 fetched",
        "priority=0, workers=2, busy=0, idle=2, queued=0, delayed=0, completed=12, failed=0, cancelled=0",
        "priority=1, workers=2, busy=0, idle=2, queued=0, delayed=0, completed=8, failed=0, cancelled=0",
        "server shut down",
    ],
    "batch_files.py": [
        "300/300 files",
        "failed: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
        " | jobdispatch: raised by job count file-137.txt in pool 0",
        "counted 299 files",
        "completed=299, failed=1, cancelled=0",
    ],
    "asyncio_producers.py": [
        "results: 60 from 3 producers",
        "(the event loop never blocked)",
        "completed=60, failed=0, cancelled=0",
    ],
}


def _examples() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.py"))


class TestExamples:
    def test_every_example_has_expected_output(self) -> None:
        """Each script in examples/ is listed here with the output it must print."""
        assert _examples() == sorted(EXPECTED)

    @pytest.mark.parametrize("name", _examples())
    def test_example_runs(self, name: str) -> None:
        """The example exits with 0, prints its key lines and writes nothing to stderr."""
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / name)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=EXAMPLES.parent,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        for line in EXPECTED.get(name, []):
            assert line in result.stdout, f"{line!r} missing from the output of {name}:\n{result.stdout}"


class TestBatchProgressOrdering:
    def test_last_progress_call_is_over_when_the_batch_exits(self) -> None:
        """Leaving a batch waits for its progress callback (batch_files.py prints after the block)."""
        exited, finished = threading.Event(), threading.Event()

        def progress(done: int, total: int) -> None:
            if done == total:
                exited.wait(0.5)  # a regression would leave the block while this waits
                finished.set()

        with Dispatcher(1, name="test-progress") as dispatcher:
            try:
                with dispatcher.batch(progress=progress) as batch:
                    batch.dispatch(lambda: None)
                assert finished.is_set()
            finally:
                exited.set()
