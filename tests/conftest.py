"""Shared fixtures: every test must leave no dispatcher thread behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from jobdispatch import Dispatcher
from support import WAIT, Kit

# CI runs a bounded number of examples; `--hypothesis-profile=long` runs thousands.
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow], stateful_step_count=80
)
settings.load_profile("ci")


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


@pytest.fixture
def kit() -> Iterator[Kit]:
    k = Kit()
    yield k
    for gate in k.gates:
        gate.set()
    for d in k.dispatchers:
        d.finalize(cancel_pending=True, timeout=WAIT)
