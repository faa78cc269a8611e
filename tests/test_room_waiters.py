"""The line of producers waiting for room: wake-ups that race a timed wait running out.

Races are forced, not hoped for: a trace function holds the producer at a
chosen point until the test has made the pool act, and a profile function
tells when the producer really blocks on its own lock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, SimpleNamespace
from typing import Any

import pytest

from jobdispatch import DispatcherClosed, PoolConfig, _pool
from support import WAIT, Kit, gated, wait_for

FORGET_WAITER = _pool.Pool._forget_waiter.__code__


class Producer:
    """A thread that dispatches once, held as it first enters ``Pool._forget_waiter``.

    It also tells (``blocks``) each time, once the hold is over, it calls
    ``acquire`` on a lock that is held: it is about to sleep on it.
    """

    def __init__(self, dispatch: Callable[[], object]) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        self.blocks = threading.Event()
        self.outcome: list[str] = []
        self._dispatch = dispatch
        self.thread = threading.Thread(target=self._run, name="test-room-producer")

    def _trace(self, frame: FrameType, event: str, arg: object) -> None:
        if frame.f_code is FORGET_WAITER and not self.held.is_set():
            self.held.set()
            self.release.wait(WAIT)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and self.release.is_set() and getattr(arg, "__name__", "") == "acquire":
            lock = getattr(arg, "__self__", None)
            if type(lock) is _pool._LockType and lock.locked():
                self.blocks.set()

    def _run(self) -> None:
        previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(self._trace)  # type: ignore[arg-type]
        sys.setprofile(self._profile)
        try:
            self._dispatch()
        except BaseException as error:
            self.outcome.append(type(error).__name__)
        else:
            self.outcome.append("queued")
        finally:
            sys.setprofile(None)
            sys.settrace(previous_trace)


def test_a_wait_that_runs_out_as_the_pool_wakes_it_leaves_no_stale_waiter(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer whose timed wait ran out as a place woke it, and that looks again, leaves no stale waiter."""
    d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-room-stale")
    pool = d._pools[0]
    first, second, third = kit.gate(), kit.gate(), kit.gate()
    started = threading.Event()
    d.dispatch(gated(first, started))
    assert started.wait(WAIT)
    # The producer's clock: its first wait (timeout 100 s) runs out after
    # 0.05 s, yet the deadline has not passed when it looks at the clock
    # again (a lock wait may end a hair before the monotonic clock agrees,
    # or on a wall clock that jumped): it looks for room once more.
    readings = iter([0.0, 100.0 - 0.05])
    monkeypatch.setattr(
        _pool, "time", SimpleNamespace(monotonic=lambda: next(readings, 50.0), perf_counter=time.perf_counter)
    )
    producer = Producer(lambda: d.dispatch(gated(third), timeout=100))
    producer.thread.start()
    late_outcome: list[str] = []

    def dispatch_late() -> None:
        try:
            d.dispatch(lambda: None)
        except DispatcherClosed:  # left blocked until the end of the test
            late_outcome.append("refused")
        else:
            late_outcome.append("queued")

    late = threading.Thread(target=dispatch_late, name="test-room-late")
    try:
        assert producer.held.wait(WAIT), "the producer's wait never ran out"
        first.set()  # the job ends: its place wakes the producer, whose wait has just run out
        wait_for(lambda: not pool._room_waiters and pool._room == 1, "the pool to wake the producer")
        d.dispatch(gated(second), timeout=0)  # someone else takes the place first
        producer.release.set()
        assert producer.blocks.wait(WAIT), "the producer never went back to sleep"
        second.set()  # room again: the producer takes it, and its job holds the place
        producer.thread.join(WAIT)
        assert producer.outcome == ["queued"]
        # The pool is full, and one more producer blocks: the next place must wake it.
        waiting = len(pool._room_waiters)
        late.start()
        wait_for(lambda: len(pool._room_waiters) == waiting + 1, "the late producer to block")
        third.set()
        late.join(WAIT)
        assert not late.is_alive(), "a producer sleeps next to a free place: its wake-up went to a stale waiter"
        assert late_outcome == ["queued"]
        assert d.wait(WAIT)
        assert not pool._room_waiters
        assert pool._room == pool._places
    finally:
        producer.release.set()
        for gate in (first, second, third):
            gate.set()
        producer.thread.join(WAIT)
        d.finalize(cancel_pending=True, timeout=WAIT)  # refuses a producer left blocked
        if late.is_alive():
            late.join(WAIT)
