"""The line of producers waiting for room: wake-ups that race a timed wait running out.

Races are forced, not hoped for: a trace function holds the producer at a
chosen point until the test has made the pool act, and a profile function
tells when the producer really blocks on its own lock.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType, SimpleNamespace
from typing import Any

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, PoolConfig, _aio, _pool
from support import WAIT, Counter, Kit, gated, wait_for

FORGET_WAITER = _pool.Pool._forget_waiter.__code__
SUBMIT = _pool.Pool.submit.__code__
ENTER_FULL = _aio._enter_full.__code__
DISPATCH = Dispatcher.dispatch.__code__


def line_of(code: CodeType, text: str) -> int:
    """The number of the first line of ``code``'s function that contains ``text``."""
    lines, start = inspect.getsourcelines(code)
    return start + next(i for i, line in enumerate(lines) if text in line)


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


def test_a_wait_that_runs_out_as_the_pool_wakes_it_hands_the_wake_up_on(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer whose timed wait runs out as a place wakes it passes the wake-up to the next producer in line."""
    d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-room-stale")
    pool = d._pools[0]
    first, second = kit.gate(), kit.gate()
    started = threading.Event()
    d.dispatch(gated(first, started))
    assert started.wait(WAIT)
    # The producer's clock: its deadline (timeout 100 s) is 0.05 s away when
    # it first sleeps, and has passed when it wakes.
    readings = iter([0.0, 100.0 - 0.05])
    monkeypatch.setattr(
        _pool,
        "time",
        SimpleNamespace(monotonic=lambda: next(readings, 200.0), perf_counter=time.perf_counter, sleep=time.sleep),
    )
    producer = Producer(lambda: d.dispatch(gated(second), timeout=100))
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
        late.start()  # in line behind the producer, which has not left it yet
        wait_for(lambda: len(pool._room_waiters) == 2, "the late producer to block")
        first.set()  # the job ends: its place wakes the producer, whose wait has just run out
        wait_for(lambda: len(pool._room_waiters) == 1 and pool._room == 1, "the pool to wake the producer")
        producer.release.set()
        producer.thread.join(WAIT)
        assert producer.outcome == ["PoolFull"]
        late.join(WAIT)
        assert not late.is_alive(), "a producer sleeps next to a free place: its wake-up went to a stale waiter"
        assert late_outcome == ["queued"]
        assert d.wait(WAIT)
        assert not pool._room_waiters
        assert pool._room == pool._places
    finally:
        producer.release.set()
        first.set()
        second.set()
        producer.thread.join(WAIT)
        d.finalize(cancel_pending=True, timeout=WAIT)  # refuses a producer left blocked
        if late.is_alive():
            late.join(WAIT)


def test_a_producer_blocked_on_a_full_pool_wakes_in_slices(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer blocked on a full pool wakes every WAIT_SLICE and keeps its place in line: Ctrl-C is never missed."""
    monkeypatch.setattr(_pool, "WAIT_SLICE", 0.01, raising=False)
    d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-room-slices")
    pool = d._pools[0]
    gate, started = kit.gate(), threading.Event()
    d.dispatch(gated(gate, started))
    assert started.wait(WAIT)
    sleep_code = _pool.Pool.sleep_until_woken.__code__
    blocking_line = line_of(sleep_code, "woken = waiter.acquire(")
    sleeps = Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is sleep_code:
            if event == "line" and frame.f_lineno == blocking_line:
                sleeps()
            return trace
        return None

    outcome: list[str] = []

    def produce() -> None:
        previous = sys.gettrace()
        sys.settrace(trace)
        try:
            d.dispatch(lambda: outcome.append("ran"))
        finally:
            sys.settrace(previous)

    producer = threading.Thread(target=produce, name="test-room-slicing-producer")
    producer.start()
    try:
        wait_for(lambda: sleeps.value >= 3, "the blocked producer to wake between slices")
        assert len(pool._room_waiters) == 1, "a slice that ends must keep the producer in line"
    finally:
        gate.set()
        producer.join(WAIT)
    assert not producer.is_alive()
    assert d.wait(WAIT)
    assert outcome == ["ran"]


class StruckOwnerCheck:
    """The pool's lock, seen through a wrapper that raises KeyboardInterrupt once, just after ``_is_owned()`` returns.

    CPython delivers a pending Ctrl-C as a C call returns: the owner check
    of an except block that is handling another exception is such a call.
    """

    def __init__(self, real: Any, thread: int) -> None:
        self.real, self.thread, self.struck = real, thread, False

    def acquire(self, *args: Any) -> bool:
        return bool(self.real.acquire(*args))

    def release(self) -> None:
        self.real.release()

    def _is_owned(self) -> bool:
        owned = bool(self.real._is_owned())
        if not self.struck and threading.get_ident() == self.thread:
            self.struck = True
            raise KeyboardInterrupt
        return owned

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.real.release()


def lock_is_free(lock: Any) -> bool:
    """Whether another thread can take ``lock`` within WAIT."""
    taken: list[bool] = []

    def take() -> None:
        if lock.acquire(True, WAIT):
            lock.release()
            taken.append(True)

    thread = threading.Thread(target=take, name="test-room-taker")
    thread.start()
    thread.join(2 * WAIT)
    return taken == [True]


class TestInterruptAsARefusalLeavesTheLock:
    """A dispatch refused with the pool's lock held: Ctrl-C in the except block must not keep the lock."""

    @pytest.mark.parametrize("how", ["dispatch", "dispatch_async"])
    def test_ctrl_c_after_the_owner_check_of_a_full_pool_refusal_leaves_the_lock_free(self, kit: Kit, how: str) -> None:
        """Ctrl-C just after the owner check, as a full pool refuses a dispatch that may not wait, frees the lock."""
        d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-room-owner")
        pool = d._pools[0]
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        real = pool._lock
        pool._lock = StruckOwnerCheck(real, threading.get_ident())
        try:
            with pytest.raises(KeyboardInterrupt):
                if how == "dispatch":
                    d.dispatch(lambda: None, timeout=0)
                else:
                    asyncio.run(d.dispatch_async(lambda: None))
            assert pool._lock.struck
        finally:
            pool._lock = real
            owned = real._is_owned()
            while real._is_owned():  # so that the rest of the run is not stuck behind it
                real.release()
        assert not owned, "Ctrl-C left the pool's lock held by the interrupted thread"
        assert lock_is_free(real)
        gate.set()
        assert d.wait(WAIT)
        d.dispatch(lambda: None, timeout=0)  # the pool has its place
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.busy, stats.queued, stats.completed) == (0, 0, 2)
        assert pool._room == pool._places

    def test_ctrl_c_after_the_owner_check_of_a_closed_pool_refusal_leaves_the_lock_free(self, kit: Kit) -> None:
        """Ctrl-C just after the owner check, as a pool closed meanwhile refuses a dispatch, frees the lock."""
        d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-room-owner-closed")
        pool = d._pools[0]
        real = pool._lock
        after_state_check = line_of(DISPATCH, "kind = type(job)")
        hold = threading.Event()
        go = threading.Event()
        leave = threading.Event()
        outcome: list[str] = []

        def trace(frame: FrameType, event: str, arg: object) -> Any:
            if frame.f_code is not DISPATCH:
                return None

            def local(frame: FrameType, event: str, arg: object) -> Any:
                if event == "line" and frame.f_lineno == after_state_check and not hold.is_set():
                    hold.set()
                    go.wait(WAIT)
                return local

            return local

        def produce() -> None:
            previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(trace)
            try:
                d.dispatch(lambda: None)
            except BaseException as error:
                outcome.append(type(error).__name__)
            finally:
                sys.settrace(previous_trace)
            # Alive until the test has looked: a new thread could get this
            # one's identity, and with it, an RLock it left held.
            leave.wait(WAIT)

        producer = threading.Thread(target=produce, name="test-room-producer")
        producer.start()
        try:
            assert hold.wait(WAIT), "the producer never got past the dispatcher's own check"
            pool._lock = StruckOwnerCheck(real, producer.ident or 0)
            d.finalize(timeout=WAIT)  # the pool closes while the producer is on its way to it
            go.set()
            wait_for(lambda: outcome, "the producer to be refused")
            assert outcome == ["KeyboardInterrupt"]
            assert lock_is_free(real), "Ctrl-C left the pool's lock held by the interrupted thread"
        finally:
            go.set()
            leave.set()
            producer.join(WAIT)
            pool._lock = real


class TestAsyncWakeUpInterrupted:
    def test_ctrl_c_as_a_woken_async_producer_looks_again_hands_the_wake_up_on(self, kit: Kit) -> None:
        """Ctrl-C as an async producer woken for room enters the pool again passes its wake-up to the next producer."""
        d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-room-async-wake")
        pool = d._pools[0]
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        struck: list[str] = []

        def strike(frame: FrameType, event: str, arg: object) -> None:
            # Ctrl-C delivered at the entry of the pool's submit, called by
            # the woken async producer to take its place.
            back = frame.f_back
            if (
                event == "call"
                and frame.f_code is SUBMIT
                and back is not None
                and back.f_code is ENTER_FULL
                and not struck
            ):
                struck.append("struck")
                raise KeyboardInterrupt

        def produce_async() -> None:
            previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(strike)  # type: ignore[arg-type]
            try:
                asyncio.run(d.dispatch_async(lambda: None))
            except KeyboardInterrupt:
                struck.append("interrupted")
            finally:
                sys.settrace(previous_trace)

        outcome: list[str] = []

        def produce_behind() -> None:
            try:
                d.dispatch(lambda: None)
            except DispatcherClosed:  # left blocked until the end of the test
                outcome.append("refused")
            else:
                outcome.append("queued")

        first = threading.Thread(target=produce_async, name="test-room-async")
        behind = threading.Thread(target=produce_behind, name="test-room-behind")
        try:
            first.start()
            wait_for(lambda: len(pool._room_waiters) == 1, "the async producer to wait for room")
            behind.start()
            wait_for(lambda: len(pool._room_waiters) == 2, "the thread producer to wait behind it")
            gate.set()  # a place: it wakes the async producer, which is interrupted as it takes it
            first.join(WAIT)
            assert struck == ["struck", "interrupted"]
            behind.join(WAIT)
            assert outcome == ["queued"], "the producer behind sleeps next to a free place"
            assert d.wait(WAIT)
            assert not pool._room_waiters
            assert pool._room == pool._places
        finally:
            gate.set()
            d.finalize(cancel_pending=True, timeout=WAIT)  # refuses a producer left blocked
            first.join(WAIT)
            behind.join(WAIT)
