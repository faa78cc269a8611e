"""A port of every scenario of go-dispatcher's dispatcher_test.go.

Where jobdispatch deliberately differs from the Go library, the test says so:
unknown priorities raise instead of returning 0, a delay of 0 is valid,
delayed jobs do not run one after another, and the Go tests' sleeps (which
only shaped timing) are left out.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Callable

import pytest

from jobdispatch import Dispatcher, PoolConfig, UnknownPriority

MIN = -300
LOW = -200
ERROR_PRIORITY = 50
WAIT = 10.0  # seconds before a blocked hand-off counts as a failure


def config(workers: int, min_workers: int | None = None) -> list[PoolConfig]:
    return [PoolConfig(MIN, workers if min_workers is None else min_workers), PoolConfig(LOW, workers)]


class ResultJob:
    """testJob: do() sends True on the result queue (blocking while it is full, like a Go channel)."""

    def __init__(self, results: queue.Queue[bool | None], priority: int) -> None:
        self._results = results
        self._priority = priority

    def do(self) -> None:
        self._results.put(True, timeout=WAIT)

    def priority(self) -> int:
        return self._priority


class AccumulatorJob:
    """testAccumulatorJob: do() increments a shared total under a lock."""

    def __init__(self, lock: threading.Lock, total: list[int], priority: int) -> None:
        self._lock = lock
        self._total = total
        self._priority = priority

    def do(self) -> None:
        with self._lock:
            self._total[0] += 1

    def priority(self) -> int:
        return self._priority


class DelayCheckJob:
    """A job that records how long after its dispatch_later call it ran."""

    def __init__(self, results: queue.Queue[float], priority: int) -> None:
        self._results = results
        self._priority = priority
        self.dispatched_at = 0.0

    def do(self) -> None:
        self._results.put(time.monotonic() - self.dispatched_at)

    def priority(self) -> int:
        return self._priority


def drain(results: queue.Queue[bool | None]) -> int:
    """Count the items of ``results`` up to the None that ends them."""
    count = 0
    while results.get(timeout=WAIT) is not None:
        count += 1
    return count


def run_producer(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="test-producer")
    thread.start()
    return thread, errors


class TestGoroutineLeaks:
    def test_hundred_create_finalize_cycles_leave_no_thread(self) -> None:
        """100 create/use/finalize cycles of two 100-worker pools leave threading.enumerate() as it was."""
        gc.collect()
        before = set(threading.enumerate())
        for _ in range(100):
            d = Dispatcher(config(100))
            d.dispatch(lambda: None, priority=MIN)
            d.dispatch(lambda: None, priority=LOW)
            d.dispatch_later(0, lambda: None, priority=LOW)
            d.finalize()
        gc.collect()
        assert set(threading.enumerate()) == before


class TestInitWorkerPool:
    def test_counters_of_new_pools(self) -> None:
        """A 1000-worker and a 100-worker pool report all workers available and no job queued."""
        before = set(threading.enumerate())
        d = Dispatcher(config(100, min_workers=1000))
        try:
            assert d.available_workers(MIN) == 1000
            assert d.total_workers(MIN) == 1000
            assert d.queued_jobs(MIN) == 0
            assert d.available_workers(LOW) == 100
            assert d.total_workers(LOW) == 100
            assert d.queued_jobs(LOW) == 0
            assert set(threading.enumerate()) == before  # threads start on demand
        finally:
            d.finalize()

    def test_unknown_priority_raises(self) -> None:
        """Go returned 0 for an unknown priority; jobdispatch raises UnknownPriority instead."""
        d = Dispatcher(config(100, min_workers=1000))
        try:
            for getter in (d.available_workers, d.total_workers, d.queued_jobs):
                with pytest.raises(
                    UnknownPriority, match=r"^no pool has priority 50; the priorities are \(-300, -200\)$"
                ):
                    getter(ERROR_PRIORITY)
        finally:
            d.finalize()

    @pytest.mark.parametrize("workers", [0, -1])
    def test_invalid_number_of_workers(self, workers: int) -> None:
        """A pool with 0 or -1 workers is refused ("Invalid number of workers" in Go)."""
        with pytest.raises(ValueError, match=rf"^workers must be >= 1, got {workers}$"):
            Dispatcher([PoolConfig(MIN, workers)])


class TestFinalizingJobs:
    def test_finalize_waits_for_all_jobs(self) -> None:
        """finalize() returns only once 100 accumulator jobs have all run."""
        d = Dispatcher(config(100))
        lock, total = threading.Lock(), [0]
        for _ in range(100):
            d.dispatch(AccumulatorJob(lock, total, LOW))
        d.finalize()
        assert total[0] == 100

    @pytest.mark.parametrize("jobs", [100, 1000])
    def test_finalize_waits_for_delayed_jobs(self, jobs: int) -> None:
        """finalize() returns only once every delayed accumulator job (50 µs delay) has run."""
        d = Dispatcher(config(100))
        lock, total = threading.Lock(), [0]
        for _ in range(jobs):
            d.dispatch_later(50e-6, AccumulatorJob(lock, total, LOW))
        d.finalize()
        assert total[0] == jobs


class TestDispatchingJobs:
    def test_dispatching_jobs(self) -> None:
        """An unknown priority is refused; 100 jobs all deliver their result by finalize()."""
        results: queue.Queue[bool | None] = queue.Queue(maxsize=100)
        d = Dispatcher(config(100))
        with pytest.raises(UnknownPriority, match=r"^no pool has priority 50; the priorities are \(-300, -200\)$"):
            d.dispatch(ResultJob(results, ERROR_PRIORITY))
        for _ in range(100):
            d.dispatch(ResultJob(results, LOW))
        d.finalize()
        assert results.qsize() == 100

    def test_dispatching_jobs_with_delay(self) -> None:
        """100 delayed jobs all run, none before its delay (Go ran them one after another; here they overlap)."""
        delay = 0.01
        results: queue.Queue[float] = queue.Queue()
        d = Dispatcher(config(100))
        for _ in range(100):
            job = DelayCheckJob(results, LOW)
            job.dispatched_at = time.monotonic()
            d.dispatch_later(delay, job)
        d.finalize()
        waited = [results.get_nowait() for _ in range(100)]
        assert results.empty()
        assert min(waited) >= delay

    def test_dispatching_jobs_with_delay_errors(self) -> None:
        """A negative delay and an unknown priority are refused; a delay of 0, refused by Go, is valid."""
        results: queue.Queue[bool | None] = queue.Queue(maxsize=100)
        d = Dispatcher(config(100))
        try:
            with pytest.raises(ValueError, match=r"^delay must be >= 0, got -1$"):
                d.dispatch_later(-1, ResultJob(results, LOW))
            with pytest.raises(UnknownPriority, match=r"^no pool has priority 50; the priorities are \(-300, -200\)$"):
                d.dispatch_later(1e-9, ResultJob(results, ERROR_PRIORITY))
            d.dispatch_later(0, ResultJob(results, LOW))
        finally:
            d.finalize()
        assert results.qsize() == 1

    def test_dispatching_many_jobs_from_a_producer_thread(self) -> None:
        """10,000 jobs dispatched and finalized by a background thread all deliver their result."""
        jobs = 100 * 100
        results: queue.Queue[bool | None] = queue.Queue(maxsize=100)
        d = Dispatcher(config(100))

        def produce() -> None:
            for _ in range(jobs):
                d.dispatch(ResultJob(results, LOW))
            d.finalize()
            results.put(None, timeout=WAIT)

        producer, errors = run_producer(produce)
        count = drain(results)
        producer.join(WAIT)
        assert not producer.is_alive()
        assert errors == []
        assert count == jobs

    def test_dispatching_jobs_multi_priority(self) -> None:
        """A producer mixing two priorities (100 MIN, 200 LOW, 100 MIN) gets all 400 jobs run."""
        jobs = 10 * 20
        results: queue.Queue[bool | None] = queue.Queue(maxsize=10)
        d = Dispatcher(config(10))

        def produce() -> None:
            for _ in range(jobs // 2):
                d.dispatch(ResultJob(results, MIN))
            for _ in range(jobs):
                d.dispatch(ResultJob(results, LOW))
            for _ in range(jobs // 2):
                d.dispatch(ResultJob(results, MIN))
            d.finalize()
            results.put(None, timeout=WAIT)

        producer, errors = run_producer(produce)
        count = drain(results)
        producer.join(WAIT)
        assert not producer.is_alive()
        assert errors == []
        assert count == 2 * jobs
        assert d.stats(MIN).completed == jobs
        assert d.stats(LOW).completed == jobs
