"""Defects found by an adversarial review of rounds, wake-ups, dispatch_many and the fast path.

Each test fails on the code it was written against (it is marked
``xfail(strict=True)``: remove the mark with the fix). Races are forced, not
hoped for: a trace function holds one thread at a chosen line until the test
has made the other thread act, so every test is deterministic.
"""

from __future__ import annotations

import gc
import inspect
import re
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeAlias

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, PoolConfig, _dispatcher, _pool
from support import WAIT, Counter, Kit, wait_for

TraceFunction: TypeAlias = "Callable[[FrameType, str, Any], Any]"

REFUSED_WITHIN = WAIT / 2  # seconds a producer blocked on a full pool may take to be refused by finalize


def line_of(code: CodeType, text: str) -> int:
    """The number of the first line of ``code``'s function that contains ``text``."""
    lines, start = inspect.getsourcelines(code)
    return start + next(i for i, line in enumerate(lines) if text in line)


class Hold:
    """Holds a thread at one point of one function until the test releases it.

    The point is the function's entry (``line=None``) or a line of it; ``when``
    picks the call. Only the first matching moment holds.
    """

    def __init__(
        self, code: CodeType, line: int | None = None, when: Callable[[FrameType], bool] = lambda frame: True
    ) -> None:
        self.code = code
        self.line = line
        self.when = when
        self.reached = threading.Event()
        self.release = threading.Event()

    def _hold(self) -> None:
        self.reached.set()
        self.release.wait(WAIT)

    def tracer(self, frame: FrameType, event: str, arg: object) -> TraceFunction | None:
        if frame.f_code is not self.code or self.reached.is_set() or not self.when(frame):
            return None
        if self.line is None:
            self._hold()
            return None

        def local(frame: FrameType, event: str, arg: object) -> TraceFunction | None:
            if event == "line" and frame.f_lineno == self.line and not self.reached.is_set():
                self._hold()
            return local

        return local

    def run(self, fn: Callable[[], object]) -> Callable[[], None]:
        """Return a thread target that runs ``fn`` under this hold."""

        def target() -> None:
            previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(self.tracer)
            try:
                fn()
            finally:
                sys.settrace(previous_trace)

        return target


def settled(thread: threading.Thread) -> bool:
    """Whether ``thread`` (a finalize) blocks: draining in a barrier, or joining the workers."""
    frame = sys._current_frames().get(thread.ident or 0)
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names & {"_wait_round", "join_thread"})


def held_thread(hold: Hold, fn: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=hold.run(fn), name=name)
    thread.start()
    assert hold.reached.wait(WAIT), f"{name} never reached the point to hold"
    return thread


OPEN_GENERATIONS = _dispatcher.Dispatcher._open_generations.__code__
OPEN_GENERATIONS_RETURN = line_of(OPEN_GENERATIONS, "return ")


def close_a_round_while_held(d: Dispatcher, hold: Hold) -> None:
    """Have another thread's wait(timeout=0) close a round while finalize is held collecting generations.

    Where the collection holds the round lock, the waiter can only close its
    round once finalize has read them all: it is then released to do so.
    """
    waiter = threading.Thread(target=lambda: d.wait(timeout=0), name="test-adv-waiter")
    waiter.start()
    wait_for(lambda: not waiter.is_alive() or d._round_lock.locked(), "the waiter to close a round or to queue")
    hold.release.set()
    waiter.join(WAIT)
    assert not waiter.is_alive()


class TestFinalizeRacingWait:
    """wait() on another thread closes a round while finalize collects the open generations."""

    def test_cancel_pending_drops_the_queued_jobs_of_a_round_closed_meanwhile(self, kit: Kit) -> None:
        """finalize(cancel_pending=True) drops every queued job, even of a round a concurrent wait() closes."""
        d = kit.dispatcher([PoolConfig(0, 1, 4)], name="test-adv-cancel")
        gate, started = kit.gate(), threading.Event()
        d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
        assert started.wait(WAIT)
        ran = Counter()
        for _ in range(3):
            d.dispatch(ran)
        hold = Hold(OPEN_GENERATIONS, OPEN_GENERATIONS_RETURN)
        finalizer = held_thread(hold, lambda: d.finalize(cancel_pending=True, timeout=WAIT), "test-adv-finalizer")
        close_a_round_while_held(d, hold)  # closes the round finalize has not read yet
        wait_for(lambda: d._pools[0]._queue_cancelled, "finalize to cancel the queue")
        gate.set()
        finalizer.join(WAIT)
        assert not finalizer.is_alive()
        s = d.stats(0)
        assert (ran.value, s.completed, s.cancelled) == (0, 1, 3), s

    def test_drain_waits_for_a_round_closed_meanwhile(self, kit: Kit) -> None:
        """finalize() waits for a running job and its follow-up even when a concurrent wait() closes their round."""
        d = kit.dispatcher([PoolConfig(0, 1, 4)], name="test-adv-drain")
        gate, started, follow_up_ran = kit.gate(), threading.Event(), threading.Event()

        def parent() -> None:
            started.set()
            gate.wait(WAIT)
            d.dispatch(follow_up_ran.set)  # accepted: an own job while finalize drains

        d.dispatch(parent)
        assert started.wait(WAIT)
        hold = Hold(OPEN_GENERATIONS, OPEN_GENERATIONS_RETURN)
        finalizer = held_thread(hold, lambda: d.finalize(timeout=WAIT), "test-adv-finalizer")
        close_a_round_while_held(d, hold)
        wait_for(lambda: settled(finalizer), "finalize to drain or to stop the workers")
        stopped_early = d._pools[0]._stopping
        gate.set()
        finalizer.join(WAIT)
        assert not finalizer.is_alive()
        assert not stopped_early, "finalize stopped the workers while a job still ran"
        assert follow_up_ran.is_set(), f"the follow-up was accepted but never ran: {d.stats(0)}"


class TestDrainPass:
    def test_drain_sees_a_follow_up_sent_to_a_pool_already_read(self, kit: Kit) -> None:
        """finalize() drains a follow-up sent to a pool it has looked at already, by a job that ends before it looks."""
        d = kit.dispatcher([PoolConfig(0, 1, 2), PoolConfig(1, 1, 2)], name="test-adv-pass")
        gate1, gate2 = kit.gate(), kit.gate()
        started, second_started, third_ran = threading.Event(), threading.Event(), threading.Event()

        def second() -> None:  # pool 0
            second_started.set()
            gate2.wait(WAIT)
            d.dispatch(third_ran.set, priority=0)

        def first() -> None:  # pool 1
            started.set()
            gate1.wait(WAIT)
            d.dispatch(second, priority=0)

        d.dispatch(first, priority=1)
        assert started.wait(WAIT)
        hold = Hold(
            _pool.Pool.generation_state.__code__,
            when=lambda frame: frame.f_locals["self"].index == 1,  # pool 0 read, pool 1 not yet
        )
        finalizer = held_thread(hold, lambda: d.finalize(timeout=WAIT), "test-adv-finalizer")
        gate1.set()
        assert second_started.wait(WAIT)
        wait_for(lambda: d.stats(1).busy == 0, "the first job to end")
        hold.release.set()
        wait_for(lambda: settled(finalizer), "finalize to drain or to stop the workers")
        stopped_early = d._pools[0]._stopping
        gate2.set()
        finalizer.join(WAIT)
        assert not finalizer.is_alive()
        assert not stopped_early, "finalize stopped the workers while a job still ran"
        assert third_ran.is_set(), f"the follow-up was accepted but never ran: {d.stats()}"


SLEEP_UNTIL_WOKEN = _pool.Pool.sleep_until_woken.__code__
BLOCKING_WAIT = line_of(SLEEP_UNTIL_WOKEN, "woken = waiter.acquire(")


class TestWakeUpsGoToBlockedProducers:
    """finalize() wakes each producer blocked on a full pool; nobody else may keep it waiting."""

    def _outsider_blocked(self, d: Dispatcher, outcome: list[str]) -> tuple[threading.Thread, Hold]:
        """Start an outsider that dispatches to full pool 0; hold it counted as blocked, just before it blocks."""

        def produce() -> None:
            try:
                d.dispatch(lambda: None, priority=0)
            except DispatcherClosed:
                outcome.append("refused")
            else:
                outcome.append("queued")

        hold = Hold(SLEEP_UNTIL_WOKEN, BLOCKING_WAIT)
        return held_thread(hold, produce, "test-adv-outsider"), hold

    def _refused_while_full(
        self,
        d: Dispatcher,
        gate: threading.Event,
        outsider: threading.Thread,
        hold: Hold,
        outcome: list[str],
        thief_came: Callable[[], bool],
    ) -> None:
        wait_for(thief_came, "the other taker to come by the wake-up")
        hold.release.set()  # the outsider now blocks for a place
        outsider.join(REFUSED_WITHIN)
        refused_while_full = not outsider.is_alive()
        gate.set()
        outsider.join(WAIT)
        assert refused_while_full, "the outsider stayed blocked on the full pool after finalize began"
        assert outcome == ["refused"]

    def test_own_job_does_not_use_up_an_outsiders_wake_up(self, kit: Kit) -> None:
        """An own job that dispatches to the full pool while finalize drains leaves the outsider's wake-up alone."""
        d = kit.dispatcher([PoolConfig(0, 1, 0), PoolConfig(1, 1, 0)], name="test-adv-wake")
        gate, started, go = kit.gate(), threading.Event(), kit.gate()
        d.dispatch(lambda: (started.set(), gate.wait(WAIT)), priority=0)
        assert started.wait(WAIT)
        outcome: list[str] = []
        outsider, hold = self._outsider_blocked(d, outcome)
        d.dispatch(lambda: (go.wait(WAIT), d.dispatch(lambda: None, priority=0)), priority=1)
        finalizer = threading.Thread(target=lambda: d.finalize(timeout=WAIT), name="test-adv-finalizer")
        finalizer.start()
        wait_for(lambda: d.closed, "finalize to begin")
        go.set()
        pool = d._pools[0]
        came = lambda: len(pool._room_waiters) == 1  # noqa: E731 (the own job waits, the outsider was woken)
        try:
            self._refused_while_full(d, gate, outsider, hold, outcome, came)
        finally:
            gate.set()
            hold.release.set()
            finalizer.join(WAIT)

    def test_timer_does_not_use_up_an_outsiders_wake_up(self, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
        """A due delayed job waiting for a place keeps no blocked outsider from being refused."""
        d = kit.dispatcher([PoolConfig(0, 1, 0)], name="test-adv-wake-timer")
        gate, started = kit.gate(), threading.Event()
        d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
        assert started.wait(WAIT)
        outcome: list[str] = []
        outsider, hold = self._outsider_blocked(d, outcome)
        d.dispatch_later(0, lambda: None)
        wait_for(lambda: len(d._pools[0]._due) == 1, "the due job to wait for a place")
        finalizer = threading.Thread(target=lambda: d.finalize(timeout=WAIT), name="test-adv-finalizer")
        finalizer.start()
        try:
            self._refused_while_full(d, gate, outsider, hold, outcome, lambda: d.closed)
        finally:
            gate.set()
            hold.release.set()
            finalizer.join(WAIT)


class TestDispatchManyInterrupted:
    def test_note_counts_every_job_that_runs(self, kit: Kit) -> None:
        """Ctrl-C right after a chunk is queued: the note's count is the number of jobs that then run."""
        d = kit.dispatcher({0: 2}, name="test-adv-many")
        gate = kit.gate()
        d.dispatch(lambda: gate.wait(WAIT))  # one busy worker: the next item reserves a second one
        ran = Counter()
        start_reserved = _pool.Pool.start_reserved.__code__

        def tracer(frame: FrameType, event: str, arg: object) -> None:
            if event == "call" and frame.f_code is start_reserved:
                raise KeyboardInterrupt

        previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt) as caught:
                d.dispatch_many([ran] * 4, chunksize=2)
        finally:
            sys.settrace(previous_trace)
        gate.set()
        assert d.wait(WAIT)
        match = re.search(r"dispatched (\d+) jobs", " ".join(getattr(caught.value, "__notes__", [])))
        assert match is not None
        assert int(match.group(1)) == ran.value


class TestFastPath:
    """dispatch() takes Jobs of a class it has seen by a fast path; it must accept and refuse what _route does."""

    @pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
    def test_instance_with_a_coroutine_do_is_refused_after_its_class_was_seen(self, kit: Kit) -> None:
        """A Job whose instance sets do to a coroutine function is refused, also once its class is known."""

        class Job:
            def do(self) -> None:
                pass

            def priority(self) -> int:
                return 0

        async def body() -> None:
            pass

        d = kit.dispatcher({0: 1}, name="test-adv-fast")
        d.dispatch(Job())
        job = Job()
        job.do = body  # type: ignore[method-assign]
        try:
            with pytest.raises(TypeError, match="coroutine function"):
                d.dispatch(job)
        finally:
            assert d.wait(WAIT)
            gc.collect()

    def test_instance_priority_attribute_works_after_its_class_was_seen(self, kit: Kit) -> None:
        """A Job whose instance sets priority to an int goes to that pool, also once its class is known."""

        class Job:
            def __init__(self, ran: Counter) -> None:
                self.ran = ran

            def do(self) -> None:
                self.ran()

            def priority(self) -> int:
                return 0

        d = kit.dispatcher({0: 1, 1: 1}, name="test-adv-fast-priority")
        ran = Counter()
        first = Job(ran)
        first.priority = 1  # type: ignore[assignment,method-assign]
        d.dispatch(first)  # the class is not known yet: accepted
        d.dispatch(Job(ran))  # now it is
        second = Job(ran)
        second.priority = 1  # type: ignore[assignment,method-assign]
        d.dispatch(second)
        assert d.wait(WAIT)
        assert (ran.value, d.stats(1).completed) == (3, 2)

    @pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
    def test_class_whose_do_becomes_a_coroutine_function_is_refused(self, kit: Kit) -> None:
        """Once a known Job class's do is replaced by a coroutine function, its jobs are refused."""

        class Job:
            def do(self) -> None:
                pass

            def priority(self) -> int:
                return 0

        async def body(self: Job) -> None:
            pass

        d = kit.dispatcher({0: 1}, name="test-adv-fast-class")
        d.dispatch(Job())
        assert d.wait(WAIT)
        Job.do = body  # type: ignore[assignment,method-assign]
        try:
            with pytest.raises(TypeError, match="coroutine function"):
                d.dispatch(Job())
        finally:
            assert d.wait(WAIT)
            gc.collect()


class TestChunkRunInline:
    def test_ctrl_c_from_a_chunk_run_on_the_main_thread_propagates(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A chunk run on the main thread (its pool has no thread) lets KeyboardInterrupt through, as dispatch does."""
        real_start = threading.Thread.start

        def refuse(thread: threading.Thread) -> None:
            if thread.name.startswith("test-adv-nothread-p"):
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", refuse)
        d = kit.dispatcher({0: 1}, name="test-adv-nothread")
        ran = Counter()

        def interrupted() -> None:
            raise KeyboardInterrupt

        assert threading.current_thread() is threading.main_thread()
        with pytest.raises(KeyboardInterrupt):
            d.dispatch(interrupted)  # what a job run on the main thread does
        with pytest.raises(KeyboardInterrupt):
            d.dispatch_many([interrupted, ran], chunksize=2)
        assert ran.value == 0
