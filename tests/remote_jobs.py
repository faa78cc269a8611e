"""Jobs for the backend tests: importable by reference in worker processes (standard library only).

Worker processes share no memory with the test, so gates and signals are
files in a directory: a job writes ``started-<n>`` and waits, within a
bound, for ``open`` to exist.
"""

from __future__ import annotations

import contextvars
import multiprocessing
import os
import threading
import time
from pathlib import Path

BOUND = 30.0  # seconds a gated job waits at most for its gate

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def square(x: int) -> int:
    return x * x


def pid() -> int:
    return os.getpid()


def noop() -> None:
    pass


def fail(text: str) -> None:
    raise ValueError(text)


def gated(directory: str, n: int) -> int:
    """Say it started, then wait for the gate of ``directory`` to open."""
    folder = Path(directory)
    (folder / f"started-{n}").touch()
    deadline = time.monotonic() + BOUND
    while not (folder / "open").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate of {directory} never opened")
        time.sleep(0.005)
    return n


def die() -> None:
    """Kill the process that runs the job, at once."""
    os._exit(3)


def die_once(directory: str) -> str:
    """Kill the first process that runs the job; succeed on the next try."""
    flag = Path(directory) / "died"
    if not flag.exists():
        flag.touch()
        os._exit(3)
    return "second try"


def fail_once(directory: str) -> str:
    """Raise on the first run; succeed on the next."""
    flag = Path(directory) / "failed"
    if not flag.exists():
        flag.touch()
        raise RuntimeError("first try")
    return "second try"


def count_run_then_return_a_lock(directory: str) -> threading.Lock:
    """Leave a file for each run in ``directory``; return what cannot be pickled."""
    (Path(directory) / f"run-{os.getpid()}-{time.monotonic_ns()}").touch()
    return threading.Lock()


def read_marker() -> str:
    return marker.get()


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise LockedError("holds a lock")


class CountingJob:
    """A `Job` that counts its runs on itself and notes where ``priority()`` ran."""

    def __init__(self, priority: int) -> None:
        self._priority = priority
        self.runs = 0
        self.priority_pids: list[int] = []

    def priority(self) -> int:
        self.priority_pids.append(os.getpid())
        return self._priority

    def do(self) -> None:
        self.runs += 1


class LockHolder:
    """A job that cannot be pickled: it closes over a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            pass


def _refuse_to_load() -> None:
    raise RuntimeError("this object cannot be unpickled")


class LoadsNowhere:
    """A result that pickles, but whose unpickling raises."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _refuse_to_load, ()


def loads_nowhere() -> LoadsNowhere:
    return LoadsNowhere()


# Gates for results whose unpickling, in the test's process, waits: by key.
LOADING: dict[str, threading.Event] = {}
GATES: dict[str, threading.Event] = {}


def _load_after_gate(key: str) -> str:
    LOADING[key].set()
    GATES[key].wait(BOUND)
    return key


class LoadsAfterGate:
    """A result whose unpickling says it began (``LOADING[key]``), then waits for ``GATES[key]``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _load_after_gate, (self.key,)


def loads_after_gate(key: str) -> LoadsAfterGate:
    return LoadsAfterGate(key)


def _load_in_a_worker_only(text: str) -> WorkerOnlyError:
    if multiprocessing.parent_process() is None:
        raise RuntimeError("this exception cannot be unpickled in the main process")
    return WorkerOnlyError(text)


class WorkerOnlyError(Exception):
    """An exception that unpickles in a worker process, but not in the main one (as if its module were missing)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _load_in_a_worker_only, (str(self),)


def raise_worker_only() -> None:
    raise WorkerOnlyError("only workers know it")


class UnloadableError(Exception):
    """An exception that pickles, but whose unpickling raises."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _refuse_to_load, ()


def _raise_unloadable() -> None:
    raise UnloadableError("raised as the job was unpickled")


class FailsToLoad:
    """A job whose unpickling, in the worker, raises an `UnloadableError`."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _raise_unloadable, ()

    def __call__(self) -> None:
        pass


class Item:
    """A plain job object that the tests follow with weak references."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self) -> None:
        pass


def hide_jobdispatch() -> None:
    """Make jobdispatch unimportable in this process, as on a worker where it is not installed."""
    import sys

    sys.modules["jobdispatch"] = None  # type: ignore[assignment]
    for name in [m for m in sys.modules if m.startswith("jobdispatch.")]:
        del sys.modules[name]
