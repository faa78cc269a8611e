"""Introspection and the public surface: names, errors, stats, getters, priorities, closed, repr."""

from __future__ import annotations

import dataclasses
import enum
import threading

import pytest

import jobdispatch
from jobdispatch import (
    Dispatcher,
    DispatcherClosed,
    DispatcherError,
    PoolConfig,
    PoolFull,
    PoolStats,
    UnknownPriority,
)
from support import LONG, WAIT, Kit, gated, wait_for


class Level(enum.IntEnum):
    LOW = 0
    HIGH = 1


class TestPublicNames:
    def test_all_names_exist(self) -> None:
        """Every name in jobdispatch.__all__ exists, and the core API is in __all__."""
        core = {
            "DEFAULT_QUEUE_SIZE",
            "Batch",
            "Dispatcher",
            "DispatcherClosed",
            "DispatcherError",
            "Job",
            "PoolConfig",
            "PoolFull",
            "PoolStats",
            "UnknownPriority",
        }
        assert core <= set(jobdispatch.__all__)
        for name in jobdispatch.__all__:
            assert hasattr(jobdispatch, name), name
        assert isinstance(jobdispatch.__version__, str)

    def test_dispatcher_api(self) -> None:
        """Dispatcher has every method and property of the core API."""
        for name in (
            "dispatch",
            "dispatch_later",
            "wait",
            "batch",
            "finalize",
            "stats",
            "available_workers",
            "total_workers",
            "queued_jobs",
            "__enter__",
            "__exit__",
        ):
            assert callable(getattr(Dispatcher, name)), name
        assert isinstance(Dispatcher.priorities, property)
        assert isinstance(Dispatcher.closed, property)

    def test_error_hierarchy(self) -> None:
        """All errors derive from DispatcherError; closed is a RuntimeError, unknown priority a LookupError."""
        assert issubclass(DispatcherError, Exception)
        assert issubclass(DispatcherClosed, DispatcherError)
        assert issubclass(DispatcherClosed, RuntimeError)
        assert issubclass(PoolFull, DispatcherError)
        assert issubclass(UnknownPriority, DispatcherError)
        assert issubclass(UnknownPriority, LookupError)
        for error in (DispatcherError, DispatcherClosed, PoolFull, UnknownPriority):
            assert error.__doc__


class TestStats:
    def test_initial_counters(self, kit: Kit) -> None:
        """A new pool's stats are all zero, with every worker idle."""
        d = kit.dispatcher([PoolConfig(5, 3, queue_size=7)])
        assert d.stats(5) == PoolStats(
            priority=5, workers=3, busy=0, idle=3, queued=0, delayed=0, completed=0, failed=0, cancelled=0
        )

    def test_all_pools(self, kit: Kit) -> None:
        """stats() with no argument maps each priority to its PoolStats, in configured order."""
        d = kit.dispatcher({2: 1, 0: 4})
        snapshot = d.stats()
        assert list(snapshot) == [2, 0]
        assert snapshot[2] == d.stats(2)
        assert snapshot[0].workers == 4
        assert all(isinstance(s, PoolStats) for s in snapshot.values())

    def test_stats_frozen(self, kit: Kit) -> None:
        """A PoolStats snapshot cannot be changed."""
        d = kit.dispatcher(1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.stats(0).busy = 1  # type: ignore[misc]

    def test_busy_idle_queued_delayed(self, kit: Kit) -> None:
        """While jobs are parked: busy and idle add up to workers; queued and delayed are counted."""
        d = kit.dispatcher([PoolConfig(0, 2, queue_size=5), PoolConfig(1, 1)])
        gate = kit.gate()
        running = threading.Semaphore(0)

        def job() -> None:
            running.release()
            gate.wait(3 * WAIT)

        for _ in range(5):
            d.dispatch(job, priority=0)
        d.dispatch_later(LONG, job, priority=0)
        assert running.acquire(timeout=WAIT)
        assert running.acquire(timeout=WAIT)
        stats = d.stats(0)
        assert (stats.busy, stats.idle, stats.queued, stats.delayed) == (2, 0, 3, 1)
        assert stats.busy + stats.idle == stats.workers
        assert d.stats(1).busy == 0

    def test_counters_add_up(self, kit: Kit) -> None:
        """completed + failed + cancelled equals the jobs dispatched once nothing is pending."""
        d = kit.dispatcher({0: 1, 1: 2}, on_error=lambda job, exc: None)
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started), priority=0)
        for n in range(40):
            d.dispatch((lambda: 1 / 0) if n % 4 == 1 else (lambda: None), priority=n % 2)
        d.dispatch_later(LONG, lambda: None, priority=0)
        assert started.wait(WAIT)
        wait_for(lambda: d.stats(1).completed + d.stats(1).failed == 20, "pool 1 to drain")
        with pytest.raises(TimeoutError):
            d.finalize(cancel_pending=True, timeout=0.01)
        gate.set()
        d.finalize()
        s0, s1 = d.stats(0), d.stats(1)
        assert (s0.completed, s0.failed, s0.cancelled) == (1, 0, 21)
        assert (s1.completed, s1.failed, s1.cancelled) == (10, 10, 0)
        assert s0.completed + s0.failed + s0.cancelled + s1.completed + s1.failed + s1.cancelled == 42
        for s in (s0, s1):
            assert (s.busy, s.queued, s.delayed, s.idle) == (0, 0, 0, s.workers)

    @pytest.mark.parametrize("method", ["stats", "available_workers", "total_workers", "queued_jobs"])
    def test_bad_priority(self, kit: Kit, method: str) -> None:
        """stats(p) and the getters refuse an unknown priority (UnknownPriority) or a non-int one (TypeError)."""
        d = kit.dispatcher({0: 1, 1: 1})
        call = getattr(d, method)
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 50; the priorities are \(0, 1\)$"):
            call(50)
        with pytest.raises(TypeError, match=r"^priority must be an int, got 'x'$"):
            call("x")
        with pytest.raises(TypeError, match=r"^priority must be an int, got True$"):
            call(True)
        with pytest.raises(TypeError, match=r"^priority must be an int, got 1\.0$"):
            call(1.0)


class TestGetters:
    def test_values(self, kit: Kit) -> None:
        """available_workers, total_workers and queued_jobs follow the pool's state."""
        d = kit.dispatcher([PoolConfig(0, 3, queue_size=10), PoolConfig(1, 1)])
        assert (d.available_workers(0), d.total_workers(0), d.queued_jobs(0)) == (3, 3, 0)
        gate = kit.gate()
        running = threading.Semaphore(0)

        def job() -> None:
            running.release()
            gate.wait(3 * WAIT)

        for _ in range(7):
            d.dispatch(job, priority=0)
        for _ in range(3):
            assert running.acquire(timeout=WAIT)
        assert (d.available_workers(0), d.total_workers(0), d.queued_jobs(0)) == (0, 3, 4)
        assert (d.available_workers(1), d.total_workers(1), d.queued_jobs(1)) == (1, 1, 0)
        gate.set()
        assert d.wait(WAIT)
        assert (d.available_workers(0), d.queued_jobs(0)) == (3, 0)

    def test_after_finalize(self) -> None:
        """The getters and stats still answer after finalize."""
        d = Dispatcher({0: 2})
        d.dispatch(lambda: None)
        d.finalize()
        assert (d.available_workers(0), d.total_workers(0), d.queued_jobs(0)) == (2, 2, 0)
        assert d.stats(0).completed == 1

    def test_intenum(self, kit: Kit) -> None:
        """Getters accept IntEnum priorities."""
        d = kit.dispatcher({Level.LOW: 2, Level.HIGH: 5})
        assert d.total_workers(Level.HIGH) == 5
        assert d.available_workers(Level.LOW) == 2
        assert d.stats(Level.HIGH).priority == 1


class TestPrioritiesAndClosed:
    def test_priorities_in_configured_order(self, kit: Kit) -> None:
        """priorities lists the pools' priorities in configured order, as a tuple."""
        assert kit.dispatcher(1).priorities == (0,)
        assert kit.dispatcher({3: 1, -1: 1, 2: 1}).priorities == (3, -1, 2)
        assert kit.dispatcher([PoolConfig(9, 1), PoolConfig(-9, 1)]).priorities == (9, -9)

    def test_intenum_priorities_kept(self, kit: Kit) -> None:
        """IntEnum priorities are reported as the members given."""
        d = kit.dispatcher({Level.HIGH: 1, Level.LOW: 1})
        assert d.priorities == (Level.HIGH, Level.LOW)
        assert all(isinstance(p, Level) for p in d.priorities)

    def test_closed(self) -> None:
        """closed is False while open and True after finalize."""
        d = Dispatcher(1)
        assert d.closed is False
        d.finalize()
        assert d.closed is True


class TestRepr:
    def test_idle(self, kit: Kit) -> None:
        """An idle dispatcher's repr names it, its state and each pool's load."""
        d = kit.dispatcher({0: 4, 1: 2})
        assert repr(d) == "<Dispatcher 'jobdispatch' open, 2 pools: p0 0/4 busy; p1 0/2 busy>"

    def test_single_pool_and_name(self, kit: Kit) -> None:
        """One pool is '1 pool'; the name is shown with repr quoting."""
        d = kit.dispatcher(3, name="test-it's")
        assert repr(d) == '<Dispatcher "test-it\'s" open, 1 pool: p0 0/3 busy>'

    def test_busy_queued_delayed(self, kit: Kit) -> None:
        """The repr shows busy/workers, then queued and delayed jobs when there are any."""
        d = kit.dispatcher([PoolConfig(0, 1), PoolConfig(1, 2)], name="test-r")
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started), priority=0)
        d.dispatch(lambda: None, priority=0)
        d.dispatch(lambda: None, priority=0)
        d.dispatch_later(LONG, lambda: None, priority=0)
        d.dispatch_later(LONG, lambda: None, priority=1)
        assert started.wait(WAIT)
        assert (
            repr(d) == "<Dispatcher 'test-r' open, 2 pools: p0 1/1 busy, 2 queued, 1 delayed; p1 0/2 busy, 1 delayed>"
        )

    def test_negative_priority(self, kit: Kit) -> None:
        """A negative priority shows as p-<n>."""
        d = kit.dispatcher({-300: 1000, -200: 100})
        assert repr(d) == "<Dispatcher 'jobdispatch' open, 2 pools: p-300 0/1000 busy; p-200 0/100 busy>"

    def test_closed(self) -> None:
        """After finalize the repr says closed."""
        d = Dispatcher(1, name="test-c")
        d.finalize()
        assert repr(d) == "<Dispatcher 'test-c' closed, 1 pool: p0 0/1 busy>"
