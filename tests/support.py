"""Helpers shared by the test modules: patient waits, gates and counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jobdispatch import Dispatcher

WAIT = 10.0  # seconds to wait for a state that should come at once; the test fails after that
LONG = 60.0  # a delay no test ever waits for: such jobs are cancelled by finalize


def wait_for(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


class Kit:
    """The dispatchers and gates of one test; gates open before dispatchers finalize."""

    def __init__(self) -> None:
        self.dispatchers: list[Dispatcher] = []
        self.gates: list[threading.Event] = []

    def dispatcher(self, config: Any, **kwargs: Any) -> Dispatcher:
        d = Dispatcher(config, **kwargs)
        self.dispatchers.append(d)
        return d

    def gate(self) -> threading.Event:
        event = threading.Event()
        self.gates.append(event)
        return event


def gated(gate: threading.Event, started: threading.Event | None = None) -> Callable[[], None]:
    """Return a job that signals ``started`` and then blocks until ``gate`` opens."""

    def job() -> None:
        if started is not None:
            started.set()
        gate.wait(3 * WAIT)

    return job


class Counter:
    """A thread-safe counter that can be dispatched as a job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def __call__(self) -> None:
        with self._lock:
            self.value += 1


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def refuse_thread_starts(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Make ``threading.Thread.start`` fail for threads named ``prefix...``, as at the system's thread limit."""
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith(prefix):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)


def on_round_closed(monkeypatch: pytest.MonkeyPatch, event: threading.Event) -> None:
    """Set ``event`` each time a barrier of any dispatcher has closed its round (a test driver patch)."""
    real = Dispatcher._close_round

    def close_and_tell(self: Dispatcher) -> Any:
        rounds = real(self)
        event.set()
        return rounds

    monkeypatch.setattr(Dispatcher, "_close_round", close_and_tell)
