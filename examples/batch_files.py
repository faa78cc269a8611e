"""Process a directory of files as one batch, with progress and failures.

The script writes 300 small text files to a temporary directory (one of
them is not valid UTF-8, on purpose), then counts the words of every file
in one batch. A progress callback prints how far the batch is; leaving the
batch waits for its jobs and raises an ExceptionGroup with the one failure,
which the script handles with ``except*``.

Run it with ``python examples/batch_files.py``.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from jobdispatch import Dispatcher

FILES = 300
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def make_files(directory: Path) -> list[Path]:
    rng = random.Random(5)
    paths = []
    for n in range(FILES):
        path = directory / f"file-{n:03d}.txt"
        path.write_text(" ".join(rng.choice(WORDS) for _ in range(rng.randint(200, 2000))))
        paths.append(path)
    paths[137].write_bytes(b"\xff\xfe not utf-8")  # this one will fail
    return paths


counts: dict[str, int] = {}  # one key per job: no lock needed


def count_words(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    counts[path.name] = len(text.split())


reported: set[int] = set()


def show_progress(done: int, total: int) -> None:
    """Called on a worker thread each time a job of the batch ends, one call at a time."""
    if (done % 50 == 0 or done == total) and done not in reported:
        reported.add(done)
        print(f"progress: {done}/{total} files")


with tempfile.TemporaryDirectory() as tmp, Dispatcher(4, name="files") as dispatcher:
    paths = make_files(Path(tmp))
    try:
        with dispatcher.batch(progress=show_progress) as batch:
            for path in paths:
                batch.dispatch(count_words, path, name=f"count {path.name}")
        # leaving the block waited for the 300 jobs: it raised because one failed
    except* UnicodeDecodeError as group:
        for error in group.exceptions:
            print("failed:", error, "|", *getattr(error, "__notes__", ()))  # the note names the job
    print(f"counted {len(counts)} files, {sum(counts.values())} words")
    print(dispatcher.stats(0))
