"""Fault injection: jobs, hooks and handlers that misbehave never cost a worker, a pool or a count."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobdispatch import Dispatcher, PoolConfig, PoolStats
from support import Counter

WAIT = 10.0  # seconds to wait for a state that should come at once; the test fails after that


class CustomBaseError(BaseException):
    """A BaseException that is neither Exception, SystemExit nor KeyboardInterrupt."""


class Raiser:
    """A job (callable) that raises a fresh instance of ``error_type`` each call."""

    def __init__(self, error_type: type[BaseException]) -> None:
        self.error_type = error_type
        self.calls = Counter()

    def __call__(self) -> None:
        self.calls()
        raise self.error_type("injected")


class Errors:
    """An on_error hook that records (job, exception) pairs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[tuple[object, BaseException]] = []

    def __call__(self, job: object, error: BaseException) -> None:
        with self._lock:
            self.seen.append((job, error))


@pytest.fixture
def made() -> Iterator[list[Dispatcher]]:
    """Dispatchers made by a test, finalized (cancelling what is left) afterwards."""
    dispatchers: list[Dispatcher] = []
    yield dispatchers
    for d in dispatchers:
        d.finalize(cancel_pending=True, timeout=WAIT)


def make(made: list[Dispatcher], config: Any = None, **kwargs: Any) -> Dispatcher:
    d = Dispatcher({0: 2, 1: 1} if config is None else config, **kwargs)
    made.append(d)
    return d


def settled(d: Dispatcher, priority: int) -> PoolStats:
    """Wait for every job so far and return the pool's stats, checking nothing is in flight."""
    assert d.wait(WAIT)
    s = d.stats(priority)
    assert (s.busy, s.queued, s.delayed, s.idle) == (0, 0, 0, s.workers)
    return s


def assert_pool_still_works(d: Dispatcher, priority: int, jobs: int = 20) -> None:
    """Later jobs on every worker of the pool still run (no worker died)."""
    before = d.stats(priority).completed
    counter = Counter()
    # A barrier of `workers` parties proves that every worker thread is alive at once.
    workers = d.total_workers(priority)
    barrier = threading.Barrier(workers, timeout=WAIT)
    for _ in range(workers):
        d.dispatch(barrier.wait, priority=priority, timeout=WAIT)
    for _ in range(jobs):
        d.dispatch(counter, priority=priority, timeout=WAIT)
    s = settled(d, priority)
    assert counter.value == jobs
    assert s.completed == before + jobs + workers


JOB_ERRORS = [ValueError, CustomBaseError, SystemExit, KeyboardInterrupt]


class TestFailingJobs:
    @pytest.mark.parametrize("error_type", JOB_ERRORS)
    def test_failure_goes_to_on_error_and_is_counted(self, made: list[Dispatcher], error_type: type) -> None:
        """A job raising Exception, a BaseException, SystemExit or KeyboardInterrupt is failed, reported once."""
        errors = Errors()
        d = make(made, on_error=errors)
        job = Raiser(error_type)
        for _ in range(10):
            d.dispatch(job, priority=0, timeout=WAIT)
        s = settled(d, 0)
        assert (s.completed, s.failed, s.cancelled) == (0, 10, 0)
        assert job.calls.value == 10
        assert len(errors.seen) == 10
        assert all(j is job and type(e) is error_type for j, e in errors.seen)
        assert_pool_still_works(d, 0)
        assert d.stats(1) == PoolStats(1, 1, 0, 1, 0, 0, 0, 0, 0)

    @pytest.mark.parametrize("error_type", JOB_ERRORS)
    def test_failure_without_hook_is_logged(
        self, made: list[Dispatcher], caplog: pytest.LogCaptureFixture, error_type: type
    ) -> None:
        """Without on_error, each failure is logged once at ERROR with its traceback; workers survive."""
        caplog.set_level(logging.ERROR, logger="jobdispatch")
        d = make(made)
        job = Raiser(error_type)
        for _ in range(5):
            d.dispatch(job, priority=1, timeout=WAIT)
        s = settled(d, 1)
        assert (s.completed, s.failed) == (0, 5)
        records = [r for r in caplog.records if r.name == "jobdispatch"]
        assert len(records) == 5
        assert all(r.levelno == logging.ERROR and r.exc_info and r.exc_info[0] is error_type for r in records)
        assert_pool_still_works(d, 1)

    @pytest.mark.parametrize("error_type", JOB_ERRORS)
    def test_delayed_and_inline_failures_are_counted(self, made: list[Dispatcher], error_type: type) -> None:
        """A failing delayed job and a failing job run inline (own full pool) are counted failed and reported."""
        errors = Errors()
        d = make(made, [PoolConfig(0, 1, 0)], on_error=errors)
        job = Raiser(error_type)
        d.dispatch_later(0, job)

        def parent() -> None:
            d.dispatch(job)  # the pool (1 worker, no queue) is full: runs inline here

        d.dispatch(parent, timeout=WAIT)
        s = settled(d, 0)
        assert job.calls.value == 2
        assert (s.completed, s.failed) == (1, 2)
        assert len(errors.seen) == 2
        assert_pool_still_works(d, 0)

    @pytest.mark.parametrize("error_type", JOB_ERRORS)
    def test_batch_collects_every_kind_of_failure(self, made: list[Dispatcher], error_type: type) -> None:
        """Batch exit raises a group holding each failure, on_error sees none, and the pool keeps working."""
        errors = Errors()
        d = make(made, on_error=errors)
        job = Raiser(error_type)
        ok = Counter()
        with pytest.raises(BaseExceptionGroup) as info, d.batch() as b:
            for _ in range(3):
                b.dispatch(job, priority=0, timeout=WAIT)
                b.dispatch(ok, priority=0, timeout=WAIT)
            b.dispatch_later(0, job, priority=1)
        assert str(info.value).startswith("4 of 7 jobs in the batch failed")
        assert [type(e) for e in info.value.exceptions] == [error_type] * 4
        assert errors.seen == []
        assert ok.value == 3
        assert (settled(d, 0).failed, settled(d, 0).completed, settled(d, 1).failed) == (3, 3, 1)
        assert_pool_still_works(d, 0)

    def test_mixed_faults_exact_accounting(self, made: list[Dispatcher]) -> None:
        """Hundreds of jobs with every kind of failure: completed + failed equals dispatched, per pool."""
        errors = Errors()
        d = make(made, {0: 3, 1: 2}, on_error=errors)
        ok = Counter()
        raisers = [Raiser(t) for t in JOB_ERRORS]
        expected_failed = {0: 0, 1: 0}
        for n in range(400):
            priority = n % 2
            if n % 5 == 4:
                d.dispatch(ok, priority=priority, timeout=WAIT)
            else:
                d.dispatch(raisers[n % 4], priority=priority, timeout=WAIT)
                expected_failed[priority] += 1
        for priority in (0, 1):
            s = settled(d, priority)
            assert s.failed == expected_failed[priority]
            assert s.completed + s.failed == 200
        assert ok.value == 80
        assert len(errors.seen) == 320


class ChangingPriority:
    """A job whose priority() returns 0, 1, 0, 1, ... and counts its calls."""

    def __init__(self) -> None:
        self.priority_calls = 0
        self.ran_on: list[str] = []
        self._lock = threading.Lock()

    def do(self) -> None:
        with self._lock:
            self.ran_on.append(threading.current_thread().name)

    def priority(self) -> int:
        self.priority_calls += 1
        return (self.priority_calls - 1) % 2


class BadPriority:
    """A job whose priority() raises or returns ``value``."""

    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.ran = Counter()

    def do(self) -> None:
        self.ran()

    def priority(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class TestPriorityFaults:
    @pytest.mark.parametrize("error", [RuntimeError("boom"), CustomBaseError("boom"), KeyboardInterrupt()])
    def test_priority_that_raises(self, made: list[Dispatcher], error: BaseException) -> None:
        """priority() raising propagates to the dispatching caller; nothing is counted or run."""
        d = make(made, name="jobdispatch-prio")
        job = BadPriority(error=error)
        for call in (
            lambda: d.dispatch(job),
            lambda: d.dispatch_later(0, job),
        ):
            with pytest.raises(type(error)) as info:
                call()
            assert info.value is error
        with pytest.raises(type(error)), d.batch() as b:
            b.dispatch(job)
        assert b.total == 0
        assert job.ran.value == 0
        for priority in (0, 1):
            assert settled(d, priority) == PoolStats(
                priority, d.total_workers(priority), 0, d.total_workers(priority), 0, 0, 0, 0, 0
            )
        assert_pool_still_works(d, 0)

    @pytest.mark.parametrize("value", ["1", 1.5, True, None, 2**100 + 0.5])
    def test_priority_that_returns_a_non_int(self, made: list[Dispatcher], value: object) -> None:
        """priority() returning a non-int raises TypeError naming the job; nothing is counted or run."""
        d = make(made)
        job = BadPriority(value=value)
        with pytest.raises(TypeError, match=r"priority\(\) must be an int, got "):
            d.dispatch(job)
        with pytest.raises(TypeError, match=r"priority\(\) must be an int, got "):
            d.dispatch_later(0, job)
        assert job.ran.value == 0
        assert settled(d, 0).completed == 0
        assert settled(d, 1).completed == 0

    def test_priority_called_exactly_once_per_dispatch(self, made: list[Dispatcher]) -> None:
        """priority() is called once per dispatch (plain, delayed, batch), and the job runs in that pool."""
        d = make(made, {0: 1, 1: 1}, name="jobdispatch-once")
        job = ChangingPriority()
        for _ in range(10):
            d.dispatch(job, timeout=WAIT)
        for _ in range(4):
            d.dispatch_later(0, job)
        with d.batch() as b:
            for _ in range(6):
                b.dispatch(job, timeout=WAIT)
        assert d.wait(WAIT)
        assert job.priority_calls == 20
        assert settled(d, 0).completed == 10
        assert settled(d, 1).completed == 10
        assert sorted(job.ran_on) == sorted(["jobdispatch-once-p0-1"] * 10 + ["jobdispatch-once-p1-1"] * 10)

    def test_explicit_priority_does_not_call_priority(self, made: list[Dispatcher]) -> None:
        """With priority= given, job.priority() is never called (even one that would raise)."""
        d = make(made)
        job = BadPriority(error=RuntimeError("must not be called"))
        d.dispatch(job, priority=1, timeout=WAIT)
        d.dispatch_later(0, job, priority=0)
        assert settled(d, 1).completed == 1
        assert settled(d, 0).completed == 1
        assert job.ran.value == 2


class TestHookFaults:
    @pytest.mark.parametrize("hook_error", [RuntimeError, CustomBaseError, SystemExit, KeyboardInterrupt])
    def test_on_error_that_raises_is_logged(
        self, made: list[Dispatcher], caplog: pytest.LogCaptureFixture, hook_error: type
    ) -> None:
        """on_error raising is itself logged; the job is counted failed once; workers survive."""
        caplog.set_level(logging.ERROR, logger="jobdispatch")
        calls = Counter()

        def hook(job: object, error: BaseException) -> None:
            calls()
            raise hook_error("hook broke")

        d = make(made, on_error=hook)
        for _ in range(6):
            d.dispatch(Raiser(ValueError), priority=0, timeout=WAIT)
        s = settled(d, 0)
        assert (s.failed, s.completed) == (6, 0)
        assert calls.value == 6
        records = [r for r in caplog.records if r.name == "jobdispatch"]
        hook_records = [r for r in records if "on_error raised" in r.getMessage()]
        job_records = [r for r in records if "failed in pool 0" in r.getMessage()]
        assert (len(hook_records), len(job_records), len(records)) == (6, 6, 12)
        assert all(r.exc_info and r.exc_info[0] is hook_error for r in hook_records)
        assert all(r.exc_info and r.exc_info[0] is ValueError for r in job_records)
        assert_pool_still_works(d, 0)

    @pytest.mark.parametrize("where", ["emit", "filter"])
    def test_logging_handler_that_raises_is_swallowed(self, made: list[Dispatcher], where: str) -> None:
        """A logging handler (or filter) raising Exception loses no worker and no count."""
        raised = Counter()

        class Broken(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if where == "emit":
                    raised()
                    raise RuntimeError("handler broke")

            def filter(self, record: logging.LogRecord) -> bool:
                if where == "filter":
                    raised()
                    raise RuntimeError("filter broke")
                return True

        handler = Broken()
        logger = logging.getLogger("jobdispatch")
        logger.addHandler(handler)
        try:
            d = make(made)
            for _ in range(5):
                d.dispatch(Raiser(ValueError), priority=0, timeout=WAIT)
            s = settled(d, 0)
            assert (s.failed, raised.value) == (5, 5)
            assert_pool_still_works(d, 0)
        finally:
            logger.removeHandler(handler)

    def test_logging_handler_raising_base_exception(self) -> None:
        """A logging handler raising a BaseException subclass loses no worker and no count."""
        # In a child process: if the worker died, its job would stay pending forever and
        # the atexit hook's finalize() would hang this test run.
        script = textwrap.dedent(
            """
            import logging, os, sys, threading
            from jobdispatch import Dispatcher

            class CustomBaseError(BaseException):
                pass

            class Broken(logging.Handler):
                def emit(self, record):
                    raise CustomBaseError("handler broke")

            logging.getLogger("jobdispatch").addHandler(Broken())
            dead = []
            threading.excepthook = lambda args: dead.append(args.thread.name)
            d = Dispatcher(1)

            def fail():
                raise ValueError("job failed")

            d.dispatch(fail)
            done = d.wait(2)
            print(f"done={done} failed={d.stats(0).failed} dead={dead}", flush=True)
            os._exit(0)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "done=True failed=1 dead=[]"

    def test_progress_callback_that_raises(self, made: list[Dispatcher], caplog: pytest.LogCaptureFixture) -> None:
        """A batch progress callback raising is logged; every job still runs and the batch exits cleanly."""
        caplog.set_level(logging.ERROR, logger="jobdispatch")
        d = make(made)
        ok = Counter()

        def progress(done: int, total: int) -> None:
            raise RuntimeError("progress broke")

        with d.batch(progress=progress) as b:
            for _ in range(8):
                b.dispatch(ok, priority=0, timeout=WAIT)
        assert (ok.value, b.done, b.total) == (8, 8, 8)
        assert settled(d, 0).completed == 8
        assert len([r for r in caplog.records if "progress callback" in r.getMessage()]) == 8


class BadRepr:
    """A job whose __repr__ raises; do() runs ``body``."""

    def __init__(self, body: Callable[[], None]) -> None:
        self.body = body

    def do(self) -> None:
        self.body()

    def priority(self) -> int:
        return 0

    def __repr__(self) -> str:
        raise RuntimeError("repr broke")


class TestBadRepr:
    def test_failing_job_with_bad_repr_is_logged(
        self, made: list[Dispatcher], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failing job whose __repr__ raises is logged with a fallback description and counted failed."""
        caplog.set_level(logging.ERROR, logger="jobdispatch")
        d = make(made)
        d.dispatch(BadRepr(Raiser(ValueError)), timeout=WAIT)
        assert settled(d, 0).failed == 1
        messages = [r.getMessage() for r in caplog.records if r.name == "jobdispatch"]
        assert len(messages) == 1
        assert "BadRepr object at 0x" in messages[0]
        assert "(repr failed)" in messages[0]
        assert_pool_still_works(d, 0)

    def test_succeeding_job_with_bad_repr_runs(self, made: list[Dispatcher]) -> None:
        """A job whose __repr__ raises runs and is counted like any other, repr(dispatcher) included."""
        d = make(made)
        ok = Counter()
        gate = threading.Event()
        d.dispatch(BadRepr(lambda: gate.wait(WAIT) and None), timeout=WAIT)
        text = repr(d)  # once: the worker may pick the job up between two calls
        assert "p0 1/2 busy" in text or "p0 0/2 busy" in text
        gate.set()
        d.dispatch(BadRepr(ok), timeout=WAIT)
        assert settled(d, 0).completed == 2
        assert ok.value == 1

    def test_bad_input_with_bad_repr_gets_a_clear_error(self, made: list[Dispatcher]) -> None:
        """Rejecting a non-job or a bad priority() whose object's __repr__ raises still gives a TypeError."""
        d = make(made)

        class NotAJob:
            def __repr__(self) -> str:
                raise RuntimeError("repr broke")

        class WrongPriority(BadRepr):
            def priority(self) -> Any:
                return "0"

        with pytest.raises(TypeError, match=r"NotAJob object at 0x.*\(repr failed\)"):
            d.dispatch(NotAJob())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"repr failed"):
            d.dispatch(WrongPriority(lambda: None))
        assert settled(d, 0).completed == 0


def thread_recorder() -> tuple[list[str], Callable[[], None]]:
    """Return a list and a job that appends to it the name of the thread running it."""
    names: list[str] = []
    return names, lambda: names.append(threading.current_thread().name)


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


class TestThreadStartFailure:
    """A worker thread that cannot start (a thread limit; interpreter shutdown on 3.12.0-1) loses no job."""

    @pytest.fixture(autouse=True)
    def _capture_warnings(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="jobdispatch")

    def test_pool_without_thread_runs_the_job_in_the_caller(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The first thread cannot start: dispatch runs the job itself and logs a warning; later a thread starts."""
        refusing = RefusingStart(monkeypatch, "nothread-")
        d = make(made, {0: 2}, name="nothread")
        ran_in, record_thread = thread_recorder()
        d.dispatch(record_thread)
        assert ran_in == [threading.current_thread().name]
        assert refusing.refused.value == 1
        assert "pool 0 could not start a worker thread (can't start new thread)" in caplog.text
        refusing.active = False
        d.dispatch(record_thread)
        assert d.wait(WAIT)
        assert ran_in[1] == "nothread-p0-1"
        assert d.stats()[0].completed == 2

    def test_second_thread_that_cannot_start_leaves_the_job_to_the_first(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A later thread cannot start: the dispatch returns normally and the running worker runs the job."""
        d = make(made, {0: 2}, name="onethread")
        gate, started = threading.Event(), threading.Event()
        d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
        assert started.wait(WAIT)
        refusing = RefusingStart(monkeypatch, "onethread-")
        ran = Counter()
        d.dispatch(ran)
        assert refusing.refused.value == 1
        assert "its queued jobs wait for the running workers" in caplog.text
        gate.set()
        assert d.wait(WAIT)
        assert ran.value == 1
        assert [t.name for t in threading.enumerate() if t.name.startswith("onethread-")] == ["onethread-p0-1"]

    def test_delayed_job_of_a_pool_without_thread_runs_in_the_timer(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A due delayed job whose pool cannot start a thread runs in the timer thread; wait() returns."""
        RefusingStart(monkeypatch, "latethread-p")
        d = make(made, {0: 1}, name="latethread")
        ran_in, record_thread = thread_recorder()
        d.dispatch_later(0, record_thread)
        assert d.wait(WAIT)
        assert ran_in == ["latethread-timer"]
        stats = d.stats()[0]
        assert (stats.completed, stats.delayed, stats.queued) == (1, 0, 0)

    def test_delayed_job_due_while_finalize_drains_runs_in_the_timer(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A closed, draining pool with no thread still runs a delayed job that falls due: finalize returns."""
        RefusingStart(monkeypatch, "drainthread-p")
        d = make(made, {0: 1}, name="drainthread")
        ran_in, record_thread = thread_recorder()
        d.dispatch_later(0.2, record_thread)
        d.finalize(timeout=WAIT)  # closes the pool at once; the job falls due while it drains
        assert ran_in == ["drainthread-timer"]
        stats = d.stats()[0]
        assert (stats.completed, stats.delayed, stats.cancelled) == (1, 0, 0)

    def test_due_job_of_a_pool_without_thread_or_place_runs_in_the_timer(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With its only place held and no thread, a pool's due job runs in the timer instead of waiting for ever."""
        RefusingStart(monkeypatch, "heldthread-p")
        d = make(made, [PoolConfig(0, 1, 0)], name="heldthread")
        d.dispatch(lambda: None)  # runs in the caller; the pool has made its one place
        pool = d._pools[0]
        with pool._lock:
            pool._room -= 1  # the one place held, as by a job not over yet
        ran_in, record_thread = thread_recorder()
        d.dispatch_later(0, record_thread)
        assert d.wait(WAIT)
        assert ran_in == ["heldthread-timer"]
        with pool._lock:
            pool.free_place_locked()
        d.dispatch(lambda: None, timeout=0)  # the place is back

    def test_ctrl_c_during_a_job_run_by_the_main_thread_propagates(
        self, made: list[Dispatcher], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A KeyboardInterrupt raised while the main thread runs a job itself reaches the caller, counted failed."""
        RefusingStart(monkeypatch, "mainthread-p")
        errors = Errors()
        d = make(made, {0: 1}, name="mainthread", on_error=errors)

        def interrupted() -> None:
            raise KeyboardInterrupt  # as Ctrl-C while the job runs

        assert threading.current_thread() is threading.main_thread()
        with pytest.raises(KeyboardInterrupt):
            d.dispatch(interrupted)
        assert errors.seen == []
        assert d.stats()[0].failed == 1
