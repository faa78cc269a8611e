"""Stress: many threads on several pools at once, and every stats() snapshot checked against the pool's limits.

Producers dispatch with every entry point (``dispatch`` blocking and with
``timeout=0``, ``dispatch_later(0)`` storms, batches entered and left
concurrently, ``dispatch_async``), jobs dispatch follow-ups (into their own
pool, into another, into a pool whose threads cannot start), and reader
threads take snapshots all along. Each job has an id: at the end every
accepted job ran exactly once or was cancelled, and each pool's counters
match the ledger exactly.

The default sizes take a few seconds; ``pytest -m long tests/test_stress.py``
runs the same tests longer. CI runs this module on the free-threaded build
and, on the GIL build, with ``JOBDISPATCH_SWITCH_INTERVAL=1e-6`` (see
conftest.py), which forces a thread switch every few bytecodes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dis
import functools
import itertools
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeAlias

import pytest

from jobdispatch import (
    Dispatcher,
    DispatcherClosed,
    DispatcherError,
    PoolConfig,
    PoolFull,
    PoolStats,
    ThreadPoolExecutor,
)
from support import WAIT, gated, wait_for

_names = itertools.count()

TraceFunction: TypeAlias = "Callable[[FrameType, str, Any], Any]"


def unique(prefix: str) -> str:
    """A dispatcher name no other test uses, so its threads can be found by name."""
    return f"test-{prefix}-{next(_names)}"


@dataclass(frozen=True)
class Size:
    """How much work one test does."""

    producers: int
    rounds: int  # per producer; each round dispatches a handful of jobs one way or another
    readers: int
    finalizes: int  # dispatchers finalized under load, per test
    timeout: float  # pytest-timeout for the test


SHORT = Size(producers=6, rounds=200, readers=2, finalizes=12, timeout=120)
LONG = Size(producers=10, rounds=3000, readers=3, finalizes=300, timeout=1200)


@pytest.fixture(params=[pytest.param(SHORT, id="short"), pytest.param(LONG, id="long", marks=pytest.mark.long)])
def size(request: pytest.FixtureRequest) -> Size:
    """The test's size: short by default, long under ``-m long``."""
    value: Size = request.param
    request.applymarker(pytest.mark.timeout(value.timeout))
    return value


class Injected(Exception):
    """Raised on purpose by a failing job."""


class Abort(Exception):
    """Raised on purpose inside a batch block, to cancel its jobs that have not started."""


class Ledger:
    """Every job accepted and every job run, by id, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._ids = itertools.count()
        self.accepted: dict[int, tuple[int, bool]] = {}  # id -> (priority, fails)
        self.ran: dict[int, str] = {}  # id -> name of the thread that ran it
        self.twice: list[int] = []
        self.refused: Counter[str] = Counter()
        self.cancellable: set[int] = set()  # ids dispatched in a batch left by an exception
        self.batch_failures = 0  # failures reported by a batch rather than to on_error

    def new_id(self) -> int:
        with self.lock:
            return next(self._ids)

    def accept(self, job_id: int, priority: int, fails: bool) -> None:
        with self.lock:
            self.accepted[job_id] = (priority, fails)

    def run(self, job_id: int) -> None:
        with self.lock:
            if job_id in self.ran:
                self.twice.append(job_id)
            self.ran[job_id] = threading.current_thread().name

    def refuse(self, why: str) -> None:
        with self.lock:
            self.refused[why] += 1

    def has_run(self, job_id: int) -> bool:
        with self.lock:
            return job_id in self.ran

    def check(self, stats: dict[int, PoolStats], *, all_ran: bool) -> None:
        """Each pool's counters match the ledger exactly; nothing ran twice or without being accepted."""
        with self.lock:
            assert not self.twice, f"jobs ran twice: {self.twice[:10]}"
            unaccepted = set(self.ran) - set(self.accepted)
            assert not unaccepted, f"jobs ran whose dispatch raised: {sorted(unaccepted)[:10]}"
            lost = set(self.accepted) - set(self.ran) - (set() if all_ran else self.cancellable)
            assert not lost, f"accepted jobs neither run nor cancellable: {sorted(lost)[:10]}"
            for priority, s in stats.items():
                mine = {i: fails for i, (p, fails) in self.accepted.items() if p == priority}
                ran = [fails for i, fails in mine.items() if i in self.ran]
                expected = (ran.count(False), ran.count(True), len(mine) - len(ran))
                assert (s.completed, s.failed, s.cancelled) == expected, f"pool {priority}: {s} != {expected}"
                assert s.completed + s.failed + s.cancelled == len(mine)
                assert (s.busy, s.queued, s.delayed, s.idle) == (0, 0, 0, s.workers), s


class Task:
    """A job with an id; it may dispatch a follow-up (to ``follow_to``) and may fail."""

    def __init__(
        self,
        d: Dispatcher,
        ledger: Ledger,
        priority: int,
        *,
        fails: bool = False,
        follow_ups: int = 0,
        follow_to: Callable[[int], int] | None = None,
        follow_timeout: float | None = WAIT,
        gate: threading.Event | None = None,
    ) -> None:
        self.d = d
        self.ledger = ledger
        self.id = ledger.new_id()
        self.priority = priority
        self.fails = fails
        self.follow_ups = follow_ups
        self.follow_to = follow_to
        self.follow_timeout = follow_timeout
        self.gate = gate

    def __call__(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(WAIT), "gate never opened"
        if self.follow_ups and self.follow_to is not None:
            target = self.follow_to(self.priority)
            child = Task(
                self.d,
                self.ledger,
                target,
                fails=self.id % 7 == 0,
                follow_ups=self.follow_ups - 1,
                follow_to=self.follow_to,
                follow_timeout=self.follow_timeout,
            )
            timeout = 0 if self.id % 5 == 0 else self.follow_timeout
            try:
                self.d.dispatch(child, priority=target, timeout=timeout)
            except PoolFull:
                self.ledger.refuse("follow-up: PoolFull")
            except DispatcherClosed:
                self.ledger.refuse("follow-up: DispatcherClosed")
            else:
                self.ledger.accept(child.id, target, child.fails)
        self.ledger.run(self.id)
        if self.fails:
            raise Injected(f"job {self.id} fails on purpose")


class Invariants:
    """Reader threads that check every snapshot of every pool until stopped.

    On each snapshot: ``0 <= busy <= workers``, ``idle == workers - busy``,
    ``queued >= 0``, ``delayed >= 0``, ``busy + queued <= workers +
    queue_size``, and completed, failed and cancelled never below the last
    snapshot of that pool taken by the same reader.
    """

    def __init__(
        self,
        d: Dispatcher,
        configs: list[PoolConfig],
        readers: int,
        name: str,
    ) -> None:
        self.d = d
        self.configs = {c.priority: c for c in configs}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.violations: list[str] = []
        self.snapshots = 0
        self.threads = [threading.Thread(target=self._read, name=f"{name}-reader-{i}") for i in range(readers)]

    def __enter__(self) -> Invariants:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT)
        assert not [t.name for t in self.threads if t.is_alive()], "a reader is stuck"

    def check(self) -> None:
        """Fail on the first violations seen; make sure the readers really read."""
        with self.lock:
            assert not self.violations, "\n".join(self.violations[:20])
            assert self.snapshots > 0, "no snapshot was taken"

    def _read(self) -> None:
        last: dict[int, PoolStats] = {}
        count = 0
        while not self.stop.is_set():
            # Both forms: one pool at a time, and every pool.
            snapshots = list(self.d.stats().values()) if count % 2 else [self.d.stats(p) for p in self.configs]
            count += 1
            for s in snapshots:
                problems = self._problems(s, last.get(s.priority))
                last[s.priority] = s
                if problems:
                    with self.lock:
                        self.violations.extend(f"{p}: {s}" for p in problems)
        with self.lock:
            self.snapshots += count

    def _problems(self, s: PoolStats, before: PoolStats | None) -> list[str]:
        c = self.configs[s.priority]
        problems = []
        if not 0 <= s.busy <= c.workers:
            problems.append("busy out of [0, workers]")
        if s.idle != c.workers - s.busy:
            problems.append("idle != workers - busy")
        if s.queued < 0 or s.delayed < 0:
            problems.append("negative queued or delayed")
        if s.busy + s.queued > c.workers + c.queue_size:
            problems.append("busy + queued > workers + queue_size")
        if before is not None:
            for field in ("completed", "failed", "cancelled"):
                if getattr(s, field) < getattr(before, field):
                    problems.append(f"{field} went down from {getattr(before, field)}")
        return problems


def run_threads(targets: list[Callable[[], None]], name: str) -> None:
    """Run each target on its own thread, join all within a bound, and re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(t), name=f"{name}-{i}") for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(6 * WAIT)
    assert not [t.name for t in threads if t.is_alive()], "a producer is still blocked"
    if errors:
        raise errors[0]


class RefusingStart:
    """Make threading.Thread.start raise for threads whose name starts with ``prefix`` (one pool's workers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
        real_start = threading.Thread.start
        self.lock = threading.Lock()
        self.refused = 0

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith(prefix):
                with self.lock:
                    self.refused += 1
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)


@pytest.fixture
def made() -> Iterator[list[Dispatcher]]:
    """Dispatchers made by a test, finalized (cancelling what is left) afterwards."""
    dispatchers: list[Dispatcher] = []
    yield dispatchers
    for d in dispatchers:
        d.finalize(cancel_pending=True, timeout=WAIT)


@pytest.fixture(autouse=True)
def _quiet_thread_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # A pool that cannot start a thread logs a warning per attempt; capture rather than print them.
    caplog.set_level(logging.WARNING, logger="jobdispatch")


# Pools of different shapes: roomy, no queue, tiny, one worker, and one whose threads cannot start.
MIXED = [PoolConfig(0, 4, 16), PoolConfig(1, 2, 0), PoolConfig(2, 3, 2), PoolConfig(3, 1, 4), PoolConfig(9, 2, 1)]
NO_THREADS = 9


def next_pool(priority: int) -> int:
    """Where a follow-up goes: up the list (never back, so blocked follow-ups cannot wait in a circle)."""
    order = [0, 2, 1, 3, NO_THREADS]
    index = order.index(priority)
    return order[index + 1] if index + 1 < len(order) else priority


class TestMixedLoad:
    def test_every_job_is_accounted_and_every_snapshot_is_possible(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch, size: Size
    ) -> None:
        """Mixed producers on five pools: stats invariants hold on every snapshot; counts match the ledger."""
        name = unique("stress-mixed")
        refusing = RefusingStart(monkeypatch, f"{name}-p{NO_THREADS}-")
        errors: Counter[type[BaseException]] = Counter()
        errors_lock = threading.Lock()

        def on_error(job: object, error: BaseException) -> None:
            with errors_lock:
                errors[type(error)] += 1

        d = Dispatcher(MIXED, name=name, on_error=on_error)
        made.append(d)
        ledger = Ledger()
        priorities = [c.priority for c in MIXED]

        def task(priority: int, n: int, follow_ups: int = 0) -> Task:
            return Task(d, ledger, priority, fails=n % 11 == 3, follow_ups=follow_ups, follow_to=next_pool)

        def plain(index: int, round_: int) -> None:
            mine: list[int] = []
            for k in range(6):
                priority = priorities[(index + round_ + k) % len(priorities)]
                t = task(priority, round_ + k, follow_ups=k % 3)
                if k % 2:
                    try:
                        d.dispatch(t, priority=priority, timeout=0)
                    except PoolFull:
                        ledger.refuse("dispatch: PoolFull")
                        continue
                else:
                    d.dispatch(t, priority=priority, timeout=WAIT)
                ledger.accept(t.id, priority, t.fails)
                mine.append(t.id)
            if round_ % 4 == 0:
                # The barrier: every job this thread dispatched has run once wait() returns.
                assert d.wait(WAIT)
                assert all(ledger.has_run(i) for i in mine), "wait() returned before a job dispatched before it ran"

        def storm(index: int, round_: int) -> None:
            mine: list[int] = []
            for k in range(12):
                priority = priorities[(index + k) % len(priorities)]
                t = task(priority, round_ + k, follow_ups=1 if k == 0 else 0)
                d.dispatch_later(0, t, priority=priority)
                ledger.accept(t.id, priority, t.fails)
                mine.append(t.id)
            if round_ % 3 == 0:
                assert d.wait(WAIT)
                assert all(ledger.has_run(i) for i in mine), "wait() returned before a delayed job ran"

        def batch(index: int, round_: int) -> None:
            abort = round_ % 5 == 4
            ids: list[tuple[int, bool]] = []
            aborted = False
            group: BaseExceptionGroup[BaseException] | None = None
            try:
                with d.batch() as b:
                    for k in range(5):
                        priority = priorities[(index * 3 + round_ + k) % len(priorities)]
                        t = task(priority, index + round_ + k, follow_ups=k % 2)
                        if k == 4:
                            b.dispatch_later(0, t, priority=priority)
                        else:
                            b.dispatch(t, priority=priority, timeout=WAIT)
                        ledger.accept(t.id, priority, t.fails)
                        ids.append((t.id, t.fails))
                        if abort:
                            with ledger.lock:
                                ledger.cancellable.add(t.id)
                    if abort:
                        raise Abort
            except Abort:
                aborted = True
            except BaseExceptionGroup as error:
                group = error
            assert (b.done, b.total) == (len(ids), len(ids))
            if aborted:
                assert abort
                # Failures of a batch left by an exception are logged, not raised.
                with ledger.lock:
                    ledger.batch_failures += sum(fails and i in ledger.ran for i, fails in ids)
                return
            failures = [] if group is None else list(group.exceptions)
            assert all(isinstance(e, Injected) for e in failures)
            assert len(failures) == sum(fails for _, fails in ids)
            with ledger.lock:
                ledger.batch_failures += len(failures)
            assert all(ledger.has_run(i) for i, _ in ids), "a batch was left before its jobs ran"

        def asynchronous(index: int, round_: int) -> None:
            async def main() -> None:
                tasks = []
                for k in range(6):
                    priority = NO_THREADS if k % 2 else 1  # no thread: runs here; no queue: waits for room
                    tasks.append(task(priority, round_ + k))
                await asyncio.gather(*(d.dispatch_async(t, priority=t.priority) for t in tasks))
                for t in tasks:
                    ledger.accept(t.id, t.priority, t.fails)

            asyncio.run(main())

        kinds = [plain, storm, batch, asynchronous]

        def producer(index: int) -> None:
            for round_ in range(size.rounds):
                kinds[(index + round_) % len(kinds)](index, round_)

        with Invariants(d, MIXED, size.readers, name) as invariants:
            run_threads([functools.partial(producer, i) for i in range(size.producers)], f"{name}-producer")
            settle(d)
        invariants.check()
        stats = d.stats()
        ledger.check(stats, all_ran=False)
        assert refusing.refused > 0, "the pool without threads never tried to start one"
        assert stats[NO_THREADS].completed > 0
        assert not [t for t in threading.enumerate() if t.name.startswith(f"{name}-p{NO_THREADS}-")]
        # Each failure was reported once: to its batch, or to on_error.
        assert set(errors) <= {Injected}
        assert errors[Injected] + ledger.batch_failures == sum(s.failed for s in stats.values())


def settle(d: Dispatcher) -> None:
    """Wait until nothing is running, queued or delayed (follow-ups dispatched during a wait need another)."""

    def idle() -> bool:
        assert d.wait(WAIT)
        return all(s.busy == s.queued == s.delayed == 0 for s in d.stats().values())

    wait_for(idle, "every job and follow-up to finish")


# A roomy pool whose jobs feed a pool with no queue, which feeds a tiny one (which feeds itself).
DRAINED = [PoolConfig(0, 3, 4), PoolConfig(1, 2, 0), PoolConfig(2, 1, 2)]


def drained_next(priority: int) -> int:
    return min(priority + 1, 2)


class TestFinalizeUnderLoad:
    @pytest.mark.parametrize("cancel", [False, True], ids=["drain", "cancel"])
    def test_follow_ups_and_producers_racing_finalize(self, made: list[Dispatcher], size: Size, cancel: bool) -> None:
        """finalize() racing producers and follow-ups into full pools: nothing lost, every snapshot possible."""
        for _ in range(size.finalizes):
            self._round(made, size, cancel)

    def _round(self, made: list[Dispatcher], size: Size, cancel: bool) -> None:
        name = unique("stress-final")
        d = Dispatcher(DRAINED, name=name, on_error=lambda job, error: None)
        made.append(d)
        ledger = Ledger()
        gate = threading.Event()

        def seed(priority: int, *, gated: bool, follow_ups: int, later: bool = False) -> None:
            t = Task(d, ledger, priority, follow_ups=follow_ups, follow_to=drained_next, gate=gate if gated else None)
            if later:
                d.dispatch_later(0, t, priority=priority)
            else:
                d.dispatch(t, priority=priority, timeout=WAIT)
            ledger.accept(t.id, priority, t.fails)

        # Pool 1 full of gated jobs; pool 0's jobs then block dispatching follow-ups into it.
        for _ in range(2):
            seed(1, gated=True, follow_ups=1)
        for _ in range(7):
            seed(0, gated=False, follow_ups=3)
        for _ in range(3):
            seed(2, gated=False, follow_ups=2, later=True)
        wait_for(lambda: d.stats(0).busy == 3, "pool 0's workers to block on pool 1")

        def producer(index: int) -> None:
            for n in itertools.count():
                priority = (index + n) % 3
                t = Task(d, ledger, priority, fails=n % 9 == 4, follow_ups=n % 2, follow_to=drained_next)
                try:
                    if n % 3 == 2:
                        d.dispatch_later(0, t, priority=priority)
                    else:
                        d.dispatch(t, priority=priority, timeout=WAIT)
                except DispatcherClosed:
                    return
                ledger.accept(t.id, priority, t.fails)

        producers = [threading.Thread(target=producer, args=(i,), name=f"{name}-producer-{i}") for i in range(3)]
        finalizer = threading.Thread(
            target=lambda: d.finalize(cancel_pending=cancel, timeout=3 * WAIT), name=f"{name}-finalizer"
        )
        with Invariants(d, DRAINED, size.readers, name) as invariants:
            for thread in producers:
                thread.start()
            finalizer.start()
            wait_for(lambda: d.closed, "finalize to begin")
            gate.set()
            finalizer.join(4 * WAIT)
            assert not finalizer.is_alive(), "finalize() did not return"
            for thread in producers:
                thread.join(WAIT)
            assert not [t.name for t in producers if t.is_alive()], "a producer is still blocked"
        invariants.check()
        stats = d.stats()
        if cancel:
            with ledger.lock:
                ledger.cancellable = set(ledger.accepted)
        else:
            # Follow-ups from the dispatcher's own jobs are part of the drain: none refused.
            assert ledger.refused["follow-up: DispatcherClosed"] == 0
        ledger.check(stats, all_ran=not cancel)
        assert not [t for t in threading.enumerate() if t.name.startswith(f"{name}-p")]


class TestFormerDefects:
    """Defects the stress tests found; each test fails until the library is fixed."""

    def test_finalize_does_not_add_places_to_a_full_pool(self, made: list[Dispatcher]) -> None:
        """Producers blocked on a full pool when finalize() drains leave it no room beyond workers + queue_size."""
        blocked = 8
        d = Dispatcher([PoolConfig(0, 1, 0), PoolConfig(1, 1, 0)], name=unique("stress-places"))
        made.append(d)
        gate0, gate1 = threading.Event(), threading.Event()
        d.dispatch(lambda: gate1.wait(WAIT), priority=1)  # pool 1 (one worker, no queue) is full
        accepted = Counter[str]()

        def parent() -> None:
            # A job of the dispatcher: its follow-ups are accepted while finalize drains.
            assert gate0.wait(WAIT)
            for _ in range(blocked):
                try:
                    d.dispatch(lambda: None, priority=1, timeout=0)
                except PoolFull:
                    accepted["full"] += 1
                else:
                    accepted["queued"] += 1

        d.dispatch(parent, priority=0)

        def outsider() -> None:
            with pytest.raises(DispatcherClosed):
                d.dispatch(lambda: None, priority=1, timeout=WAIT)

        pool = d._pools[1]
        outsiders = [threading.Thread(target=outsider, name=f"test-outsider-{i}") for i in range(blocked)]
        finalizer = threading.Thread(target=lambda: d.finalize(timeout=3 * WAIT), name="test-finalizer")
        try:
            for thread in outsiders:
                thread.start()
            wait_for(lambda: len(pool._room_waiters) == blocked, "the producers to block on the full pool")
            finalizer.start()
            for thread in outsiders:
                thread.join(WAIT)
            assert not [t for t in outsiders if t.is_alive()], "finalize did not wake a blocked producer"
            gate0.set()
            wait_for(lambda: sum(accepted.values()) == blocked, "the follow-ups to be dispatched")
            s = d.stats(1)
            assert (s.busy, s.queued, accepted["queued"]) == (1, 0, 0), f"{s}, {accepted}"
        finally:
            gate0.set()
            gate1.set()
            finalizer.join(4 * WAIT)

    def test_cancelled_never_decreases_while_finalize_cancels(self, made: list[Dispatcher]) -> None:
        """While finalize(cancel_pending=True) drops queued jobs, stats().cancelled never goes down."""
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads every few bytecodes: the window is a handful wide
        try:
            for attempt in range(100):  # the defect showed within a few attempts
                d = Dispatcher([PoolConfig(0, 2, 50)], name=unique("stress-cancelled"))
                made.append(d)
                self._cancel_and_watch(d, attempt)
        finally:
            sys.setswitchinterval(interval)

    @staticmethod
    def _cancel_and_watch(d: Dispatcher, attempt: int) -> None:
        gate = threading.Event()
        started = [threading.Event(), threading.Event()]
        for event in started:
            d.dispatch(gated(gate, event))
        # Both gated jobs running, so that neither can be cancelled: busy == 2
        # would not do, as it also counts a job a worker has taken from the
        # queue but not yet started (finalize may still drop that one).
        for event in started:
            assert event.wait(WAIT), "a gated job did not start"
        for _ in range(50):
            d.dispatch(lambda: None)
        finalizer = threading.Thread(
            target=lambda: d.finalize(cancel_pending=True, timeout=WAIT), name="test-finalizer"
        )
        finalizer.start()
        wait_for(lambda: d.stats(0).cancelled == 50, "finalize to count the queued jobs cancelled")
        gate.set()
        last = 50
        while finalizer.is_alive():
            now = d.stats(0).cancelled
            assert now >= last, f"attempt {attempt}: cancelled went down from {last} to {now}"
            last = now
        finalizer.join(WAIT)
        assert not finalizer.is_alive(), "finalize() did not return"
        assert d.stats(0).cancelled == 50

    def test_failed_thread_starts_do_not_pile_up(self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch) -> None:
        """A pool whose later threads cannot start (a thread limit) keeps at most ``workers`` threads on record."""
        name = unique("stress-limit")
        real_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            # Only the pool's first worker starts, as under a process thread limit.
            if thread.name.startswith(f"{name}-p0-") and thread.name != f"{name}-p0-1":
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)
        d = Dispatcher([PoolConfig(0, 2, 10)], name=name)
        made.append(d)
        gate, started = threading.Event(), threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        for _ in range(3):  # each finds the one worker busy and asks for a second, which cannot start
            d.dispatch(lambda: None, timeout=0)
        gate.set()
        assert d.wait(WAIT)
        # Each thread on record costs memory, and finalize() spends 0.2 s on each one that never started.
        assert len(d._pools[0]._threads) <= 2

    def test_dispatch_later_returns_whenever_the_timer_empties_its_heap(self, made: list[Dispatcher]) -> None:
        """However the timer's work interleaves with the end of dispatch_later, it returns and its job runs once."""
        from jobdispatch._scheduler import Scheduler

        code = Scheduler.yield_if_overdue.__code__
        offsets = [i.offset for i in dis.get_instructions(code)]
        assert offsets
        d = Dispatcher(1, name=unique("stress-heap"))
        made.append(d)
        for offset in offsets:
            ran = Counter[str]()

            def tracer(frame: FrameType, event: str, arg: object, offset: int = offset) -> TraceFunction | None:
                if frame.f_code is not code:
                    return None
                frame.f_trace_opcodes = True

                def at_opcode(frame: FrameType, event: str, arg: object) -> TraceFunction:
                    if event == "opcode" and frame.f_lasti == offset:
                        # Without the GIL the timer runs in parallel; here it gets its chance at this very bytecode.
                        heap = frame.f_locals.get("heap")
                        deadline = time.monotonic() + WAIT
                        while heap and time.monotonic() < deadline:
                            time.sleep(0.001)
                    return at_opcode

                return at_opcode

            previous = sys.gettrace()  # coverage's tracer, say: restored after
            sys.settrace(tracer)
            try:
                d.dispatch_later(0, functools.partial(ran.update, ["ran"]))
            finally:
                sys.settrace(previous)
            assert d.wait(WAIT)
            assert ran["ran"] == 1

    def test_cancelled_async_producer_passes_its_wake_up_on(self, made: list[Dispatcher]) -> None:
        """A waiting dispatch_async cancelled just after room came for it hands that room to the next one."""
        d = Dispatcher([PoolConfig(0, 1, 0)], name=unique("stress-wake"))
        made.append(d)
        gate = threading.Event()
        ran = threading.Event()

        async def main() -> None:
            d.dispatch(gated(gate))  # the pool's only place is taken
            first = asyncio.create_task(d.dispatch_async(lambda: None))
            second = asyncio.create_task(d.dispatch_async(ran.set))
            for _ in range(100):
                await asyncio.sleep(0)
                if len(d._pools[0]._room_waiters) == 2:
                    break
            assert len(d._pools[0]._room_waiters) == 2, "the two producers never waited for room"
            # The loop is held here: the place frees up and wakes `first`, whose task is then
            # cancelled before the wake-up can run.
            gate.set()
            assert d.wait(WAIT)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            for _ in range(100):
                if second.done():
                    break
                await asyncio.sleep(0)
            try:
                assert second.done(), f"the second producer still waits for room in an idle pool: {d.stats(0)}"
            finally:
                second.cancel()

        asyncio.run(main())
        assert ran.wait(WAIT)

    def test_polling_wait_async_keeps_nothing_per_call(self, made: list[Dispatcher]) -> None:
        """wait_async(0) polled while a long job runs does not pile up one waiter per call."""
        d = Dispatcher(1, name=unique("stress-poll"))
        made.append(d)
        gate = threading.Event()
        d.dispatch(gated(gate))

        async def poll() -> None:
            for _ in range(200):
                assert not await d.wait_async(0)

        try:
            asyncio.run(poll())
            kept = [len(g.waiters) for g in d._open_generations(d._pools[0])]
            assert sum(kept) <= 1, f"waiters kept after 200 polls: {kept}"
        finally:
            gate.set()

    def test_wait_inside_a_job_run_by_the_timer_is_refused(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """wait() from a delayed job that the timer runs (its pool cannot start a thread) raises DispatcherError."""
        name = unique("stress-timerjob")
        RefusingStart(monkeypatch, f"{name}-p0-")
        d = Dispatcher(1, name=name)
        made.append(d)
        outcome: list[object] = []

        def job() -> None:
            try:
                outcome.append(d.wait(0))  # without a timeout this would never return
            except DispatcherError as error:
                outcome.append(error)

        d.dispatch_later(0, job)
        assert d.wait(WAIT)
        assert len(outcome) == 1
        assert isinstance(outcome[0], DispatcherError), f"wait() inside the job returned {outcome[0]!r}"


class TestExecutorUnderLoad:
    @pytest.mark.parametrize("wait", [True, False], ids=["wait", "no-wait"])
    def test_shutdown_cancelling_as_threads_submit_leaves_every_future_done_for_wait(self, wait: bool) -> None:
        """shutdown(cancel_futures=True) racing submitters: concurrent.futures.wait sees every future returned done."""
        for _ in range(10):
            executor = ThreadPoolExecutor(3, thread_name_prefix=unique("stress-exec-cancel"))
            submitted: list[list[cf.Future[int]]] = [[] for _ in range(4)]
            backlog = threading.Barrier(len(submitted) + 1, timeout=WAIT)
            producers = [
                threading.Thread(target=_submit_until_refused, args=(executor, mine, backlog)) for mine in submitted
            ]
            for producer in producers:
                producer.start()
            backlog.wait()
            executor.shutdown(wait=wait, cancel_futures=True)
            for producer in producers:
                producer.join(WAIT)
                assert not producer.is_alive()
            futures = [future for mine in submitted for future in mine]
            not_done = cf.wait(futures, timeout=WAIT).not_done
            assert len(not_done) == 0, f"{len(not_done)} of {len(futures)} futures never done for wait()"
            executor.shutdown()


def _submit_until_refused(executor: ThreadPoolExecutor, mine: list[cf.Future[int]], backlog: threading.Barrier) -> None:
    """Submit small calls until the executor refuses; meet at ``backlog`` once 200 are in."""
    while True:
        try:
            mine.append(executor.submit(sum, range(300)))
        except RuntimeError:
            return
        if len(mine) == 200:
            backlog.wait()  # every producer has calls queued before the shutdown
