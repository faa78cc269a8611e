"""Shared fixtures: every test must leave no dispatcher thread behind."""

from __future__ import annotations

import os
import sys
import sysconfig
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

# Forced thread switches: JOBDISPATCH_SWITCH_INTERVAL=1e-6 makes the interpreter
# switch threads every few bytecodes, which exposes races a 5 ms interval hides.
SWITCH_INTERVAL = "JOBDISPATCH_SWITCH_INTERVAL"


def pytest_configure(config: pytest.Config) -> None:
    """Check the interpreter is what CI asked for, and apply a forced switch interval."""
    if sysconfig.get_config_var("Py_GIL_DISABLED") and os.environ.get("PYTHON_GIL") == "0":
        # The free-threaded leg must really run without the GIL: an extension
        # that does not declare support would turn it back on unless told not to.
        is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
        assert is_gil_enabled is not None, "a free-threaded build without sys._is_gil_enabled()"
        assert not is_gil_enabled(), "PYTHON_GIL=0, yet the GIL is enabled"
    value = os.environ.get(SWITCH_INTERVAL)
    if value:
        try:
            interval = float(value)
        except ValueError:
            raise pytest.UsageError(f"{SWITCH_INTERVAL} must be a number of seconds, got {value!r}") from None
        sys.setswitchinterval(interval)


def pytest_report_header(config: pytest.Config) -> str:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return f"jobdispatch: GIL {'enabled' if gil else 'disabled'}, switch interval {sys.getswitchinterval()} s"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests marked ``long`` unless a ``-m`` expression asks for markers."""
    if config.option.markexpr:
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


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
