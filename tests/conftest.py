"""Shared fixtures: every test must leave no dispatcher thread behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from jobdispatch import Dispatcher


def _our_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("jobdispatch", "test-"))}


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a dispatcher thread running."""
    before = _our_threads()
    yield
    deadline = time.monotonic() + 10
    leaked = _our_threads() - before
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    """A two-pool dispatcher (priority 0: 4 workers, priority 1: 2), finalized after the test."""
    d = Dispatcher({0: 4, 1: 2})
    try:
        yield d
    finally:
        d.finalize(cancel_pending=True, timeout=10)
