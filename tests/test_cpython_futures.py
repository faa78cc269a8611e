"""CPython's own thread-pool tests of concurrent.futures, run against jobdispatch.ThreadPoolExecutor.

The tests are imported from the running interpreter's ``test`` package (a
package ``test.test_concurrent_futures`` on Python 3.12+, a single module on
3.11); where the interpreter ships without it, this module skips. Each
excluded test is listed below with the reason.
"""

from __future__ import annotations

import importlib
import unittest
from collections.abc import Callable
from typing import Any

import pytest

import jobdispatch

# The modules of the package, on Python 3.12+.
_PARTS = ("util", "executor", "test_thread_pool", "test_wait", "test_as_completed", "test_shutdown", "test_init")


def _load() -> tuple[dict[str, Any], str]:
    """Return the names the suite defines, or ``({}, why it is missing)``."""
    try:
        suite = importlib.import_module("test.test_concurrent_futures")
    except ImportError as error:
        return {}, f"this interpreter ships without test.test_concurrent_futures ({error})"
    except unittest.SkipTest as error:
        return {}, f"test.test_concurrent_futures skips on this interpreter ({error})"
    names: dict[str, Any] = {}
    if hasattr(suite, "__path__"):
        for part in _PARTS:
            names.update(vars(importlib.import_module(f"{suite.__name__}.{part}")))
    else:
        names.update(vars(suite))
    return names, ""


_SUITE, _MISSING = _load()

_STDLIB_CLASS = "creates concurrent.futures.ThreadPoolExecutor itself, not the class under test"
_STDLIB_SUBPROCESS = (
    "runs concurrent.futures.ThreadPoolExecutor (by name) in a subprocess, not the class under test; "
    "tests/test_executor.py or tests/test_executor_parity.py runs the same scenario with jobdispatch.ThreadPoolExecutor"
)

EXCLUDED: dict[str, dict[str, str]] = {
    "ThreadPoolExecutorTest": {
        "test_hang_global_shutdown_lock": _STDLIB_CLASS + " (and 50 fork-based process pools)",
    },
    "ThreadPoolShutdownTest": {
        "test_context_manager_shutdown": _STDLIB_CLASS + ", and reads the private _threads set",
        "test_del_shutdown": _STDLIB_CLASS + ", and reads the private _threads set",
        "test_shutdown_no_wait": _STDLIB_CLASS + ", and reads the private _threads set",
        "test_thread_names_assigned": _STDLIB_CLASS + ", and reads the private _threads set",
        "test_thread_names_default": _STDLIB_CLASS + ", and reads the private _threads set",
        "test_interpreter_shutdown": _STDLIB_SUBPROCESS,
        "test_submit_after_interpreter_shutdown": _STDLIB_SUBPROCESS,
        "test_hang_gh83386": _STDLIB_SUBPROCESS,
        "test_cancel_futures_wait_false": _STDLIB_SUBPROCESS,
    },
}


def _adapt(base_name: str, *mixins: str) -> type[Any]:
    """Return a subclass of the suite's class (or of mixins over its base) that tests our executor."""
    bases = tuple(_SUITE[name] for name in (base_name, *mixins))
    skips: dict[str, Callable[..., None]] = {}
    for method, reason in EXCLUDED.get(base_name, {}).items():
        if hasattr(bases[0], method):
            skips[method] = unittest.skip(f"excluded: {reason}")(lambda self: None)
    return type(base_name, bases, {"executor_type": jobdispatch.ThreadPoolExecutor, **skips})


def _first(*names: str) -> str:
    """Return the first of ``names`` the suite defines (class names changed between versions)."""
    for name in names:
        if name in _SUITE:
            return name
    raise LookupError(f"none of {names} in test.test_concurrent_futures")


if not _SUITE:

    def test_cpython_suite_runs_where_the_interpreter_ships_it() -> None:
        """CPython's concurrent.futures tests run against our executor where the interpreter has them."""
        pytest.skip(_MISSING)

else:
    # pytest collects these TestCase subclasses; no class of the suite itself
    # is bound in this module, so none of them runs against the standard library.
    TestExecutor = _adapt("ThreadPoolExecutorTest")
    TestShutdown = _adapt("ThreadPoolShutdownTest")
    TestWait = _adapt(_first("ThreadPoolWaitTests", "ThreadPoolWaitTest"))
    TestAsCompleted = _adapt("AsCompletedTests", "ThreadPoolMixin", "BaseTestCase")
    TestInitializer = _adapt("InitializerMixin", "ThreadPoolMixin", "BaseTestCase")
    TestFailingInitializer = _adapt("FailingInitializerMixin", "ThreadPoolMixin", "BaseTestCase")
