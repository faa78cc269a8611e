"""The timer behind dispatch_later: huge delays and timeouts, what it keeps alive, its errors, thread limits, exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from jobdispatch import Dispatcher, PoolConfig, _dispatcher, _scheduler
from support import LONG, WAIT, Counter, Kit, gated, wait_for

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


class Payload:
    """Something a job refers to, whose collection a test can watch."""


class Holder:
    """A job that keeps a reference to ``target``."""

    def __init__(self, target: object) -> None:
        self.target = target

    def __call__(self) -> None:
        pass


def timer_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{name}-timer"]


HUGE_DELAYS = [1e10, threading.TIMEOUT_MAX, 1e300, sys.float_info.max, 10**30]
LONGEST_WAIT = threading.TIMEOUT_MAX - 1.0  # the longest timeout still passed on as a number
TIMEOUTS = [1e10, LONGEST_WAIT, threading.TIMEOUT_MAX, 1e300, sys.float_info.max, 10**400]


class TestHugeDelays:
    @pytest.mark.parametrize("delay", HUGE_DELAYS)
    def test_a_delay_past_the_clock_leaves_the_timer_working(self, kit: Kit, delay: float) -> None:
        """A delay longer than any wait the platform allows neither kills the timer nor holds up later jobs."""
        d = kit.dispatcher(1, name="test-huge")
        d.dispatch_later(delay, lambda: None)
        ran = threading.Event()
        d.dispatch_later(0, ran.set)
        assert ran.wait(WAIT)
        assert len(timer_threads("test-huge")) == 1
        assert d.stats(0).delayed == 1
        assert not d.wait(0.01)  # the far job is still pending: wait() times out instead of hanging or raising

    @pytest.mark.parametrize("delay", HUGE_DELAYS)
    def test_a_job_delayed_past_the_clock_is_cancelled_by_finalize(self, delay: float) -> None:
        """finalize(cancel_pending=True) cancels a job delayed for longer than the clock can wait, and returns."""
        d = Dispatcher(1, name="test-hugefin")
        d.dispatch_later(delay, lambda: None)
        d.finalize(cancel_pending=True, timeout=WAIT)
        assert (d.stats(0).cancelled, d.stats(0).delayed) == (1, 0)
        assert not timer_threads("test-hugefin")

    def test_with_block_left_by_an_exception_cancels_a_huge_delay(self) -> None:
        """Leaving a with block by an exception returns promptly with a job delayed for 1e10 s pending."""
        with pytest.raises(LookupError), Dispatcher(1, name="test-hugewith") as d:
            d.dispatch_later(1e10, lambda: None)
            raise LookupError
        assert d.stats(0).cancelled == 1

    def test_an_int_delay_too_large_for_a_float_is_refused(self, kit: Kit) -> None:
        """A delay no float can hold is refused with a ValueError naming it, not an OverflowError."""
        d = kit.dispatcher(1)
        with pytest.raises(ValueError, match=r"^delay must be a finite number of seconds >= 0, got 1000000"):
            d.dispatch_later(10**400, lambda: None)
        assert d.stats(0).delayed == 0


class TestHugeTimeouts:
    """Any timeout the validator accepts works; one longer than the platform can wait means forever."""

    @pytest.mark.parametrize("timeout", TIMEOUTS)
    def test_wait(self, kit: Kit, timeout: float) -> None:
        """wait(timeout) returns True once the jobs are done."""
        d = kit.dispatcher(1)
        ran = Counter()
        d.dispatch(ran)
        d.dispatch_later(0.001, ran)
        assert d.wait(timeout) is True
        assert ran.value == 2

    @pytest.mark.parametrize("timeout", TIMEOUTS)
    def test_wait_async(self, kit: Kit, timeout: float) -> None:
        """wait_async(timeout) returns True once the jobs are done."""
        d = kit.dispatcher(1)
        d.dispatch_later(0.001, lambda: None)
        assert asyncio.run(d.wait_async(timeout)) is True

    @pytest.mark.parametrize("timeout", TIMEOUTS)
    @pytest.mark.parametrize("how", ["dispatch", "batch"])
    def test_dispatch_into_a_full_pool(self, kit: Kit, timeout: float, how: str) -> None:
        """dispatch(timeout=...) and Batch.dispatch(timeout=...) on a full pool wait for room, then enqueue."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate, started = kit.gate(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        ran = Counter()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                if how == "dispatch":
                    d.dispatch(ran, timeout=timeout)
                else:
                    with d.batch() as batch:
                        batch.dispatch(ran, timeout=timeout)
            except BaseException as error:
                errors.append(error)

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        wait_for(lambda: len(d._pools[0]._room_waiters) == 1, "the producer to block on the full pool")
        gate.set()
        producer.join(WAIT)
        assert not producer.is_alive()
        assert errors == []
        assert d.wait(WAIT)
        assert ran.value == 1

    @pytest.mark.parametrize("timeout", TIMEOUTS)
    def test_finalize(self, timeout: float) -> None:
        """finalize(timeout=...) drains, joins and closes the dispatcher."""
        d = Dispatcher(2, name="test-bigfin")
        ran = Counter()
        d.dispatch(ran)
        d.dispatch_later(0.01, ran)
        d.finalize(timeout=timeout)
        assert ran.value == 2
        assert d.closed
        assert not [t for t in threading.enumerate() if t.name.startswith("test-bigfin-")]

    @pytest.mark.parametrize("timeout", TIMEOUTS)
    def test_executor_map(self, kit: Kit, timeout: float) -> None:
        """PoolExecutor.map(timeout=...) yields every result."""
        d = kit.dispatcher(2)
        assert list(d.executor(0).map(lambda x: x * 2, range(5), timeout=timeout)) == [0, 2, 4, 6, 8]


class TestNothingOutlivesItsJob:
    def test_a_delayed_job_is_released_once_it_ran(self, kit: Kit) -> None:
        """What a delayed job refers to is freed after it ran, without a later delayed job to push it out."""
        d = kit.dispatcher(1)
        payload = Payload()
        gone = weakref.ref(payload)
        d.dispatch_later(0, Holder(payload))
        del payload
        assert d.wait(WAIT)
        wait_for(lambda: gone() is None, "the job's payload to be freed")

    def test_a_dispatcher_its_delayed_job_refers_to_is_collected(self, caplog: pytest.LogCaptureFixture) -> None:
        """A dispatcher whose delayed job refers to it is collected once the job ran, and its threads end."""
        d = Dispatcher(1, name="test-selfref")
        d.dispatch_later(0, Holder(d))
        assert d.wait(WAIT)
        threads = [t for t in threading.enumerate() if t.name.startswith("test-selfref-")]
        assert len(threads) == 2  # a worker and the timer
        gone = weakref.ref(d)
        del d

        def collected() -> bool:
            gc.collect()
            return gone() is None

        wait_for(collected, "the dispatcher to be collected")
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads)

    def test_a_kept_handle_holds_neither_a_finished_nor_a_cancelled_job(self, kit: Kit) -> None:
        """The DelayedJob of a job that ran, or was cancelled, does not keep the job alive."""
        d = kit.dispatcher(1)
        ran_payload, cancelled_payload = Payload(), Payload()
        ran_gone, cancelled_gone = weakref.ref(ran_payload), weakref.ref(cancelled_payload)
        ran = d.dispatch_later(0, Holder(ran_payload))
        cancelled = d.dispatch_later(LONG, Holder(cancelled_payload))
        del ran_payload, cancelled_payload
        assert cancelled.cancel()
        assert cancelled_gone() is None  # counted, and dropped, before cancel() returned
        assert d.wait(WAIT)
        wait_for(lambda: ran_gone() is None, "the payload of the job that ran to be freed")
        assert ran.done()
        assert cancelled.cancelled()

    @pytest.mark.parametrize("engine", ["threads", "executor backend"])
    def test_a_kept_handle_holds_nothing_of_a_job_cancelled_in_its_pool_queue(self, kit: Kit, engine: str) -> None:
        """The DelayedJob of a due job cancelled in its pool's queue keeps nothing of it once a worker dropped it."""
        with ThreadPoolExecutor(1) as executor:
            backend = None if engine == "threads" else executor
            d = kit.dispatcher([PoolConfig(0, 1, queue_size=4, backend=backend)])
            gate, started = kit.gate(), threading.Event()
            d.dispatch(gated(gate, started))
            assert started.wait(WAIT)
            payload = Payload()
            gone = weakref.ref(payload)
            handle = d.dispatch_later(0, Holder(payload))
            del payload
            wait_for(lambda: d.stats(0).queued == 1, "the due job to be queued")
            assert handle.cancel()
            gate.set()
            assert d.wait(WAIT)
            assert d.stats(0).cancelled == 1
            gc.collect()
            assert gone() is None, "the handle keeps the dropped job"
            assert handle.cancelled()
            d.finalize(timeout=WAIT)


class TestDroppedAsAJobFallsDue:
    @pytest.mark.parametrize("room", [True, False], ids=["room", "full"])
    def test_a_job_handed_over_as_its_dispatcher_is_collected_is_cancelled(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, room: bool
    ) -> None:
        """A due job the timer hands over as its dispatcher is collected is cancelled, not stranded behind the stop."""
        d = Dispatcher([PoolConfig(0, 1, queue_size=0)], name="test-dropped-due")
        pool = d._pools[0]
        gate, started = threading.Event(), threading.Event()
        if room:
            d.dispatch(lambda: None)  # the pool has its worker, and room
            assert d.wait(WAIT)
        else:
            d.dispatch(gated(gate, started))
            assert started.wait(WAIT)
        unpatched = type(pool).submit_due

        def submit_due(self: Any, item: Any) -> None:
            if self is pool:
                # The dispatcher is collected between the timer's pop and its hand-over.
                d._finalizer.detach()
                _dispatcher._abandon(tuple(d._pools.values()), d._scheduler)
            unpatched(self, item)

        monkeypatch.setattr(type(pool), "submit_due", submit_due)
        ran = threading.Event()
        handle = d.dispatch_later(0, ran.set)
        try:
            wait_for(handle.done, "the job's handle to settle")
        finally:
            gate.set()
            for thread in threading.enumerate():
                if thread.name.startswith("test-dropped-due-"):
                    thread.join(WAIT)
        assert handle.cancelled()
        assert not ran.is_set()
        stats = d.stats(0)
        assert (stats.queued, stats.delayed, stats.cancelled) == (0, 0, 1)
        assert "1 delayed jobs cancelled" in caplog.text

    @pytest.mark.parametrize("race", ["due as the pools close", "a place frees as the pools stop"])
    def test_a_due_job_of_a_full_pool_is_cancelled_whatever_comes_between_the_steps_of_the_collection(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, race: str
    ) -> None:
        """A due job of a full pool is cancelled, never stranded, if it or a free place comes amid the collection."""
        d = Dispatcher([PoolConfig(0, 1, queue_size=0)], name="test-dropped-full")
        pool = d._pools[0]
        gate, started = threading.Event(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        closing, handed = threading.Event(), threading.Event()
        cls = type(pool)
        close, submit_due, cancel_due = cls.close, cls.submit_due, cls.cancel_due

        def patched_close(self: Any, *, draining: bool) -> None:
            if self is pool and threading.current_thread().name == "test-collector":
                closing.set()
                if race == "due as the pools close":
                    assert handed.wait(WAIT), "the timer never handed the job over"
            close(self, draining=draining)

        def patched_submit_due(self: Any, item: Any) -> None:
            if self is pool and race == "due as the pools close":
                assert closing.wait(WAIT), "the collection never began"
            submit_due(self, item)
            handed.set()

        def patched_cancel_due(self: Any) -> None:
            if self is pool and race == "a place frees as the pools stop":
                gate.set()  # the running job ends: a place frees up for the due job
                wait_for(lambda: pool.stats().busy == 0, "the running job to end")
            cancel_due(self)

        monkeypatch.setattr(cls, "close", patched_close)
        monkeypatch.setattr(cls, "submit_due", patched_submit_due)
        monkeypatch.setattr(cls, "cancel_due", patched_cancel_due)
        ran = threading.Event()
        handle = d.dispatch_later(0, ran.set)
        if race == "a place frees as the pools stop":
            assert handed.wait(WAIT)
            assert pool.stats().delayed == 1  # due, and waiting for room
        d._finalizer.detach()
        collector = threading.Thread(
            target=_dispatcher._abandon, args=(tuple(d._pools.values()), d._scheduler), name="test-collector"
        )
        collector.start()
        try:
            collector.join(WAIT)
            wait_for(handle.done, "the job's handle to settle")
        finally:
            gate.set()
            for thread in threading.enumerate():
                if thread.name.startswith("test-dropped-full-"):
                    thread.join(WAIT)
        assert handle.cancelled()
        assert not ran.is_set()
        stats = d.stats(0)
        assert (stats.queued, stats.delayed, stats.cancelled, stats.completed) == (0, 0, 1, 1)


class TestTimerSurvivesErrors:
    def test_a_hand_over_that_raises_fails_that_job_only(self, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unexpected error handing a due job over counts that job failed; the timer and later jobs go on."""
        seen: list[tuple[object, BaseException]] = []
        d = kit.dispatcher(1, name="test-handfail", on_error=lambda job, error: seen.append((job, error)))
        pool = d._pools[0]
        real = pool.submit_due
        error = RuntimeError("hand-over broke")
        calls = Counter()

        def submit_due(item: Any) -> bool:
            calls()
            if calls.value == 1:
                raise error
            return real(item)

        unpatched = type(pool).submit_due
        monkeypatch.setattr(
            type(pool), "submit_due", lambda self, item: submit_due(item) if self is pool else unpatched(self, item)
        )

        def first() -> None:
            pass

        d.dispatch_later(0, first)
        assert d.wait(WAIT)
        assert seen == [(first, error)]
        later = threading.Event()
        d.dispatch_later(0, later.set)
        assert later.wait(WAIT)
        stats = d.stats(0)
        assert (stats.failed, stats.completed, stats.delayed) == (1, 1, 0)

    def test_an_error_in_the_timer_loop_is_logged_and_the_timer_goes_on(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unexpected error in the timer's own loop is logged; the timer does not die, delayed jobs run."""
        d = kit.dispatcher(1, name="test-loopfail")
        scheduler = d._scheduler
        real = scheduler._pop_due_locked
        calls = Counter()

        def pop_due_locked(now: float) -> Any:
            calls()
            if calls.value == 1:
                raise RuntimeError("timer loop broke")
            return real(now)

        monkeypatch.setattr(scheduler, "_pop_due_locked", pop_due_locked)
        ran = threading.Event()
        with caplog.at_level(logging.ERROR, logger="jobdispatch"):
            d.dispatch_later(0, ran.set)
            assert ran.wait(WAIT)
        assert "the timer thread of test-loopfail-timer hit an unexpected error; it goes on" in caplog.text
        assert d.wait(WAIT)
        assert len(timer_threads("test-loopfail")) == 1


class RacyHeap(list[Any]):
    """A heap whose emptiness check, from one thread, lets the timer take the last entry first."""

    def __init__(self, producer: threading.Thread) -> None:
        super().__init__()
        self.producer = producer

    def __bool__(self) -> bool:
        full = len(self) > 0
        if full and threading.current_thread() is self.producer:
            wait_for(lambda: len(self) == 0, "the timer to take the last entry")
        return full


class TestOverdueCheckRace:
    """A producer checks for overdue jobs without the lock while the timer empties the heap."""

    def test_dispatch_later_does_not_raise(self, kit: Kit) -> None:
        """dispatch_later returns normally, and its job runs, when the timer empties the heap meanwhile."""
        d = kit.dispatcher(1)
        d._scheduler._heap = RacyHeap(threading.current_thread())
        ran = threading.Event()
        d.dispatch_later(0, ran.set)
        assert ran.wait(WAIT)
        assert d.wait(WAIT)

    def test_a_batch_job_is_not_dropped(self, kit: Kit) -> None:
        """Through a batch, the job still runs and the batch ends without error."""
        d = kit.dispatcher(1)
        d._scheduler._heap = RacyHeap(threading.current_thread())
        ran = Counter()
        with d.batch() as batch:
            batch.dispatch_later(0, ran)
        assert ran.value == 1
        assert d.stats(0).cancelled == 0


class RefusingStart:
    """Make threading.Thread.start raise for threads named with ``prefix`` while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
        real_start = threading.Thread.start
        self.refused = Counter()
        self.active = True

        def start(thread: threading.Thread) -> None:
            if self.active and thread.name.startswith(prefix):
                self.refused()
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)


class TestRefusedThreadStarts:
    @pytest.fixture(autouse=True)
    def _quiet(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.ERROR, logger="jobdispatch")  # the start warnings are expected here

    def test_workers_that_never_started_are_forgotten(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Refused worker starts are not kept, and finalize(timeout=) is not slowed down by them."""
        monkeypatch.setattr(_scheduler, "_INTERRUPTED_START_GRACE", 5.0)  # what a kept thread would cost finalize
        d = Dispatcher({0: 2}, name="test-refused")
        gate, started = threading.Event(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        refusing = RefusingStart(monkeypatch, "test-refused-")
        ran = Counter()
        for _ in range(50):
            d.dispatch(ran)
        assert refusing.refused.value == 50
        assert len(d._pools[0]._threads) == 1
        gate.set()
        begun = time.monotonic()
        d.finalize(timeout=WAIT)
        assert time.monotonic() - begun < WAIT / 2
        assert ran.value == 50

    def test_join_thread_keeps_its_deadline_for_a_thread_that_never_started(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """join_thread gives a thread that never started a moment to show up, but never past its deadline."""
        monkeypatch.setattr(_scheduler, "_INTERRUPTED_START_GRACE", 3 * WAIT)
        never = threading.Thread(target=lambda: None, name="test-never")
        begun = time.monotonic()
        _scheduler.join_thread(never, time.monotonic() + 0.01)
        assert time.monotonic() - begun < WAIT

    def test_a_timer_that_cannot_start_refuses_the_job_clearly(self, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
        """A timer thread that cannot start refuses the delayed job with a clear error; nothing is counted."""
        d = kit.dispatcher(1, name="test-notimer")
        refusing = RefusingStart(monkeypatch, "test-notimer-timer")
        with pytest.raises(RuntimeError, match=r"^cannot start the timer thread for delayed jobs: can't start new"):
            d.dispatch_later(0, lambda: None)
        assert d.stats(0).delayed == 0
        assert d.wait(0)
        refusing.active = False
        ran = threading.Event()
        d.dispatch_later(0, ran.set)
        assert ran.wait(WAIT)


def run_child(script: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child interpreter that must exit within WAIT seconds."""
    env = {**os.environ, "PYTHONPATH": SRC}
    try:
        return subprocess.run(
            [python, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=WAIT, env=env
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the child did not exit within {WAIT} s; stderr: {expired.stderr!r}")


# The child signals when the exit hook starts: its first step lists the live dispatchers.
HOOK_SPY = """
import threading
import jobdispatch._dispatcher as hooks

hook_started = threading.Event()
listing = hooks._live

def spy():
    hook_started.set()
    return listing()

hooks._live = spy
"""


class TestCancelWhileTheTimerIsBusy:
    def test_cancel_waits_for_the_timer_in_slices(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """cancel() waits for a timer busy with a job in slices of WAIT_SLICE: no Ctrl-C missed; then it cancels."""
        caplog.set_level(logging.ERROR, logger="jobdispatch")  # the refused worker start is expected
        monkeypatch.setattr(_scheduler, "WAIT_SLICE", 0.01)
        RefusingStart(monkeypatch, "test-busy-timer-p0")
        d = Dispatcher({0: 1}, name="test-busy-timer")
        gate, started = threading.Event(), threading.Event()
        d.dispatch_later(0, gated(gate, started))  # no worker can start: the timer runs it itself
        assert started.wait(WAIT)
        handle = d.dispatch_later(LONG, int)
        cancel_code = _scheduler.DelayedJob.cancel.__code__
        slices = Counter()
        outcome: list[bool] = []

        def trace(frame: Any, event: str, arg: object) -> Any:
            if event == "call" and frame.f_code is threading.Event.wait.__code__ and frame.f_back.f_code is cancel_code:
                slices()
            return None

        def cancel() -> None:
            sys.settrace(trace)
            try:
                outcome.append(handle.cancel())
            finally:
                sys.settrace(None)

        canceller = threading.Thread(target=cancel, name="test-canceller")
        canceller.start()
        try:
            wait_for(lambda: slices.value >= 3, "cancel() to wake between slices")
        finally:
            gate.set()
            canceller.join(WAIT)
            d.finalize(timeout=WAIT)
        assert not canceller.is_alive()
        assert outcome == [True]
        assert handle.cancelled()
        assert d.stats(0).cancelled == 1


class TestExitWithDelayedJobs:
    def test_a_job_that_delays_itself_again_does_not_keep_the_process_alive(self) -> None:
        """A job re-dispatching itself with dispatch_later, running as the exit hook starts, lets the process exit."""
        child = run_child(
            HOOK_SPY
            + """
from jobdispatch import Dispatcher

d = Dispatcher(2, name="periodic")
running = threading.Event()

def tick():
    running.set()
    hook_started.wait(30)
    d.dispatch_later(0.01, tick)

d.dispatch(tick)
running.wait(30)
print("leaving", flush=True)
"""
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout == "leaving\n"
        assert "cannot delay a job at interpreter exit" in child.stderr

    @pytest.mark.parametrize("period", [0, 0.001])
    def test_periodic_jobs_left_running_do_not_keep_the_process_alive(self, period: float) -> None:
        """Jobs that delay themselves again and again on forgotten dispatchers end at interpreter exit."""
        child = run_child(
            f"""
import threading
from jobdispatch import Dispatcher

ticks = threading.Semaphore(0)
dispatchers = [Dispatcher(2, name=f"periodic{{i}}") for i in range(3)]

def every(d):
    def tick():
        ticks.release()
        d.dispatch_later({period}, tick)
    return tick

for d in dispatchers:
    d.dispatch(every(d))
for _ in range(30):
    ticks.acquire(timeout=30)
print("leaving", flush=True)
"""
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout == "leaving\n"

    def test_a_dispatcher_draining_in_a_daemon_thread_does_not_keep_the_process_alive(self) -> None:
        """At exit, a dispatcher that a daemon thread is finalizing has its far-off delayed jobs cancelled too."""
        child = run_child(
            """
import threading, time
from jobdispatch import Dispatcher

d = Dispatcher(1, name="draining")
d.dispatch_later(3600, lambda: print("the delayed job ran", flush=True))
threading.Thread(target=d.finalize, name="closer", daemon=True).start()
deadline = time.monotonic() + 30
while not d.closed and time.monotonic() < deadline:
    time.sleep(0.001)
print("leaving while", repr(d).split()[2].rstrip(","), flush=True)
"""
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout == "leaving while draining\n"
        assert "interpreter exit: cancelling 1 delayed jobs of dispatcher 'draining'" in child.stderr


def python_refusing_threads_at_exit() -> str | None:
    """Return a CPython 3.12.0 or 3.12.1 (they refuse thread starts in exit hooks), if one is installed."""
    candidates = [
        os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3.12"),
        os.path.expanduser("~/.pyenv/versions/3.12.0/bin/python3.12"),
        "/usr/bin/python3.12",
        "/usr/local/bin/python3.12",
    ]
    for path in candidates:
        if not os.path.exists(path):
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info[:3] in ((3, 12, 0), (3, 12, 1)))"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        if probe.stdout.strip() == "True":
            return path
    return None


EXIT_DRAIN = """
import atexit, threading, time

def report():
    pool = d._pools[0]
    print(f"kept threads: {len(pool._threads)}; exit took {time.monotonic() - hook_began:.1f} s", flush=True)

atexit.register(report)  # before jobdispatch's hook: runs after it
"""

EXIT_DRAIN_BODY = """
from jobdispatch import Dispatcher, DispatcherClosed

d = Dispatcher(4, name="drain")
running = threading.Event()
hook_began = 0.0

def follow_ups():
    global hook_began
    running.set()
    hook_started.wait(30)
    hook_began = time.monotonic()
    for _ in range(100):
        d.dispatch(lambda: None)
    try:
        d.dispatch_later(0, lambda: None)
    except DispatcherClosed as error:
        print(f"refused: {error}", flush=True)

d.dispatch(follow_ups)
running.wait(30)
"""


class TestThreadStartsRefusedAtExit:
    """On CPython 3.12.0-1 no thread starts in an exit hook; jobs that dispatch during the drain lose nothing."""

    def check(self, child: subprocess.CompletedProcess[str]) -> None:
        assert child.returncode == 0, child.stderr
        lines = child.stdout.splitlines()
        assert lines[0] == "refused: cannot delay a job at interpreter exit: delayed jobs are cancelled then"
        kept, took = lines[1].split("; ")
        assert int(kept.removeprefix("kept threads: ")) <= 4
        assert float(took.removeprefix("exit took ").removesuffix(" s")) < WAIT / 2

    def test_simulated(self) -> None:
        """Thread starts refused once the exit hook runs: the drain is prompt and dispatch_later is refused cleanly."""
        refuse = """
real_start = threading.Thread.start

def start(thread):
    if hook_started.is_set():
        raise RuntimeError("can't create new thread at interpreter shutdown")
    real_start(thread)

threading.Thread.start = start
"""
        self.check(run_child(EXIT_DRAIN + HOOK_SPY + refuse + EXIT_DRAIN_BODY))

    def test_on_cpython_3_12_1(self) -> None:
        """The same on a real CPython 3.12.0 or 3.12.1."""
        python = python_refusing_threads_at_exit()
        if python is None:
            pytest.skip("needs CPython 3.12.0 or 3.12.1")
        self.check(run_child(EXIT_DRAIN + HOOK_SPY + EXIT_DRAIN_BODY, python))
