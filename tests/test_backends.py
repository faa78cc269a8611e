"""Pools whose jobs run on a concurrent.futures.Executor: a real ProcessPoolExecutor (spawn)."""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import jobdispatch
import remote_jobs
from jobdispatch import (
    DaskBackend,
    Dispatcher,
    DispatcherError,
    EngineBroken,
    ExecutorBackend,
    JobNotSerializable,
    PoolConfig,
    PoolFull,
    RemoteJobError,
    ResultNotSerializable,
    _backed,
)
from support import WAIT, Counter, wait_for
from test_faults import RefusingStart

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(scope="module")
def engine() -> Iterator[ProcessPoolExecutor]:
    """One ProcessPoolExecutor (2 processes, spawned) for the module, warmed up."""
    executor = ProcessPoolExecutor(2, mp_context=SPAWN)
    list(executor.map(remote_jobs.square, range(4)))
    yield executor
    executor.shutdown(cancel_futures=True)


class Gate:
    """A gate that jobs in other processes wait on: files in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def job(self, n: int) -> functools.partial[int]:
        return functools.partial(remote_jobs.gated, str(self.directory), n)

    def started(self) -> int:
        return sum(1 for path in self.directory.iterdir() if path.name.startswith("started-"))

    def wait_started(self, count: int) -> None:
        wait_for(lambda: self.started() >= count, f"{count} gated jobs to start")

    def open(self) -> None:
        (self.directory / "open").touch()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path)
    yield g
    g.open()  # before the dispatcher fixtures finalize


@pytest.fixture
def errors() -> list[tuple[object, BaseException]]:
    return []


@pytest.fixture
def backed(engine: ProcessPoolExecutor, errors: list[tuple[object, BaseException]]) -> Iterator[Dispatcher]:
    """A dispatcher with one pool on the module's processes: 2 in flight, 3 queued."""
    d = Dispatcher(
        [PoolConfig(0, 2, queue_size=3, backend=engine)],
        on_error=lambda job, error: errors.append((job, error)),
    )
    yield d
    d.finalize(cancel_pending=True, timeout=WAIT)


class TestConfig:
    def test_backend_of_the_wrong_type_is_refused_with_its_value(self) -> None:
        """A backend that is no engine raises TypeError naming the argument and the value."""
        with pytest.raises(TypeError, match=r"^backend must be None, a concurrent.futures.Executor.*got 'processes'$"):
            PoolConfig(0, 2, backend="processes")

    def test_executor_backend_checks_its_options(self) -> None:
        """ExecutorBackend refuses a non-executor and an unknown serializer."""
        with pytest.raises(TypeError, match=r"^executor must be a concurrent.futures.Executor, got 3$"):
            ExecutorBackend(3)  # type: ignore[arg-type]
        with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError, match=r"^serializer must be one of"):
            ExecutorBackend(executor, serializer="json")

    def test_dask_backend_needs_a_client(self) -> None:
        """DaskBackend refuses anything but a distributed.Client."""
        with pytest.raises(TypeError, match=r"^client must be a distributed.Client, got None$"):
            DaskBackend(None)

    def test_the_library_imports_no_dask_for_executor_backends(self) -> None:
        """Neither importing jobdispatch nor running a process pool imports dask or distributed."""
        code = (
            "import sys, concurrent.futures as cf\n"
            "from jobdispatch import Dispatcher, PoolConfig\n"
            "with cf.ThreadPoolExecutor(1) as ex:\n"
            "    d = Dispatcher([PoolConfig(0, 1, backend=ex)])\n"
            "    d.dispatch(print); d.finalize()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'cloudpickle')))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
        assert out.stdout.strip().splitlines()[-1] == "[]"

    def test_stats_count_workers_as_jobs_in_flight(self, backed: Dispatcher) -> None:
        """A backed pool reports its in-flight limit as workers, all idle at first."""
        stats = backed.stats(0)
        assert (stats.workers, stats.busy, stats.idle, stats.queued) == (2, 0, 2, 0)


class TestRunning:
    def test_jobs_run_in_the_engine_processes_and_are_counted(self, backed: Dispatcher) -> None:
        """Jobs run in other processes; the pool counts each one completed."""
        for n in range(20):
            backed.dispatch(functools.partial(remote_jobs.square, n))
        assert backed.wait(WAIT)
        assert backed.stats(0).completed == 20
        assert backed.executor(0).submit(remote_jobs.pid).result(WAIT) != os.getpid()

    def test_executor_view_returns_results_and_exceptions(self, backed: Dispatcher) -> None:
        """The executor view of a backed pool gives each call's result, or its exception, back."""
        view = backed.executor(0)
        assert list(view.map(remote_jobs.square, range(10))) == [n * n for n in range(10)]
        future = view.submit(remote_jobs.fail, "bad input")
        with pytest.raises(ValueError, match=r"^bad input$"):
            future.result(WAIT)
        assert backed.wait(WAIT)
        stats = backed.stats(0)
        assert (stats.completed, stats.failed) == (10, 1)

    def test_job_failure_goes_to_on_error_with_its_type(
        self, backed: Dispatcher, errors: list[tuple[object, BaseException]]
    ) -> None:
        """A job that raises in a worker process reaches on_error as the same exception type."""
        job = functools.partial(remote_jobs.fail, "remote trouble")
        backed.dispatch(job)
        assert backed.wait(WAIT)
        assert len(errors) == 1
        assert errors[0][0] is job
        assert isinstance(errors[0][1], ValueError)
        assert str(errors[0][1]) == "remote trouble"
        assert "raise ValueError(text)" in str(errors[0][1].__cause__)  # the traceback from the worker, as text
        assert backed.stats(0).failed == 1

    def test_on_error_can_dispatch_a_retry_into_its_own_full_pool(self, engine: ProcessPoolExecutor) -> None:
        """on_error, on the engine's thread, re-dispatches a failed job into its full pool: it runs, nothing blocks."""
        retried: list[object] = []
        refused: list[BaseException] = []
        holder: list[Dispatcher] = []

        def retry(job: object, error: BaseException) -> None:
            if not retried:
                retried.append(job)
                try:
                    holder[0].dispatch(job, timeout=WAIT / 2)  # type: ignore[arg-type]
                except BaseException as problem:
                    refused.append(problem)

        d = Dispatcher([PoolConfig(0, 1, queue_size=0, backend=engine)], on_error=retry)
        holder.append(d)
        try:
            d.dispatch(functools.partial(remote_jobs.fail, "retry me"))
            wait_for(lambda: d.stats(0).failed == 2, "the retry to run and fail")
            assert d.wait(WAIT)
        finally:
            d.finalize(timeout=WAIT)
        assert refused == []
        stats = d.stats(0)
        assert (stats.failed, stats.busy, stats.queued) == (2, 0, 0)

    def test_exception_that_cannot_come_back_keeps_its_type_name_and_text(
        self, backed: Dispatcher, errors: list[tuple[object, BaseException]]
    ) -> None:
        """An unpicklable exception arrives as RemoteJobError with the original's type name and text."""
        backed.dispatch(remote_jobs.raise_unpicklable)
        assert backed.wait(WAIT)
        (_, error), *_ = errors
        assert isinstance(error, RemoteJobError)
        assert error.type_name == "remote_jobs.LockedError"
        assert error.text == "holds a lock"
        assert str(error).startswith("remote_jobs.LockedError: holds a lock (the job's exception could not be sent")

    def test_job_objects_go_to_their_pool_and_priority_runs_here(self, engine: ProcessPoolExecutor) -> None:
        """priority() runs in the dispatching process; changes do() makes to the job stay in the worker."""
        d = Dispatcher([PoolConfig(0, 2), PoolConfig(1, 2, backend=engine)])
        try:
            job = remote_jobs.CountingJob(1)
            d.dispatch(job)
            assert d.wait(WAIT)
            assert d.stats(1).completed == 1
            assert d.stats(0).completed == 0
            assert job.priority_pids == [os.getpid()]
            assert job.runs == 0  # do() ran on a copy, in another process
        finally:
            d.finalize(timeout=WAIT)

    def test_context_variables_do_not_cross_to_the_worker(self, backed: Dispatcher) -> None:
        """A contextvar set by the dispatching code is not seen by the job in the worker process."""
        token = remote_jobs.marker.set("set here")
        try:
            future = backed.executor(0).submit(remote_jobs.read_marker)
            assert future.result(WAIT) == "unset"
        finally:
            remote_jobs.marker.reset(token)

    def test_thread_pool_executor_backend_takes_jobs_as_they_are(self) -> None:
        """On a ThreadPoolExecutor nothing is pickled, so a lambda is fine."""
        ran = threading.Event()
        with ThreadPoolExecutor(2) as executor:
            d = Dispatcher([PoolConfig(0, 2, backend=executor)])
            d.dispatch(ran.set)
            d.dispatch(lambda: None)
            assert d.wait(WAIT)
            d.finalize(timeout=WAIT)
        assert ran.is_set()
        assert d.stats(0).completed == 2


class TestEngineInThisProcess:
    def test_job_runs_in_its_round_and_context_its_follow_up_is_let_in_while_finalize_drains(self) -> None:
        """On a ThreadPoolExecutor, a job sees the dispatching context; a draining finalize accepts its follow-up."""
        gate = threading.Event()
        seen: list[str] = []
        refused: list[BaseException] = []
        follow_up_ran = threading.Event()
        with ThreadPoolExecutor(2) as executor:
            d = Dispatcher([PoolConfig(0, 2, backend=executor), PoolConfig(1, 1)])

            def parent() -> None:
                seen.append(remote_jobs.marker.get())
                gate.wait(WAIT)
                try:
                    d.dispatch(follow_up_ran.set, priority=1)
                except BaseException as error:
                    refused.append(error)

            token = remote_jobs.marker.set("set by the dispatching code")
            try:
                d.dispatch(parent, priority=0)
            finally:
                remote_jobs.marker.reset(token)
            finisher = threading.Thread(target=d.finalize, kwargs={"timeout": WAIT}, name="test-finalize")
            finisher.start()
            wait_for(lambda: d.closed, "finalize to begin draining")
            gate.set()
            finisher.join(WAIT)
            assert not finisher.is_alive()
        assert refused == []
        assert follow_up_ran.is_set()
        assert seen == ["set by the dispatching code"]
        assert (d.stats(0).completed, d.stats(1).completed) == (1, 1)

    def test_jobdispatch_executors_run_in_this_process_and_take_lambdas(self) -> None:
        """jobdispatch's ThreadPoolExecutor, or a dispatcher's executor view, as a backend: nothing is pickled."""
        ran = Counter()
        with jobdispatch.ThreadPoolExecutor(2) as threads, Dispatcher(2) as other:
            for engine in (threads, other.executor(0)):
                d = Dispatcher([PoolConfig(0, 2, backend=engine)])
                try:
                    d.dispatch(lambda: ran())
                    assert d.executor(0).submit(lambda: 6 * 7).result(WAIT) == 42
                finally:
                    d.finalize(timeout=WAIT)
        assert ran.value == 2

    def test_jobs_of_dispatch_many_in_chunks_see_the_dispatching_context(self) -> None:
        """dispatch_many(chunksize=2) to a ThreadPoolExecutor backend runs each job in the dispatching context."""
        seen: list[str] = []
        with ThreadPoolExecutor(2) as executor:
            d = Dispatcher([PoolConfig(0, 2, backend=executor)])
            token = remote_jobs.marker.set("set by the dispatching code")
            try:
                assert d.dispatch_many([lambda: seen.append(remote_jobs.marker.get())] * 3, chunksize=2) == 3
            finally:
                remote_jobs.marker.reset(token)
            d.finalize(timeout=WAIT)
        assert seen == ["set by the dispatching code"] * 3

    def test_wait_inside_a_job_raises_instead_of_deadlocking(self) -> None:
        """wait() from a job on a ThreadPoolExecutor raises DispatcherError, as from a job on the pool's threads."""
        with ThreadPoolExecutor(1) as executor:
            d = Dispatcher([PoolConfig(0, 1, backend=executor)])
            try:
                future = d.executor(0).submit(d.wait, 0.5)
                with pytest.raises(DispatcherError, match=r"^cannot wait from inside one of the dispatcher's own jobs"):
                    future.result(WAIT)
            finally:
                d.finalize(timeout=WAIT)


class TestSerialisation:
    def test_lambda_is_refused_at_dispatch_and_not_counted(self, backed: Dispatcher) -> None:
        """A lambda cannot be pickled: dispatch raises JobNotSerializable, a TypeError, and counts nothing."""
        with pytest.raises(JobNotSerializable, match=r"^job <function .*<lambda>.* cannot be sent to ProcessPool"):
            backed.dispatch(lambda: None)
        assert issubclass(JobNotSerializable, TypeError)
        assert issubclass(JobNotSerializable, DispatcherError)
        stats = backed.stats(0)
        assert (stats.busy, stats.queued, stats.completed, stats.failed, stats.cancelled) == (0, 0, 0, 0, 0)

    def test_closure_over_a_lock_names_the_reason(self, backed: Dispatcher) -> None:
        """The error says why the job cannot be pickled."""
        reason = r"LockHolder object .*pickle failed with TypeError: cannot pickle '_thread.lock'"
        with pytest.raises(JobNotSerializable, match=reason):
            backed.dispatch(remote_jobs.LockHolder())

    def test_delayed_and_batch_dispatch_refuse_too(self, backed: Dispatcher) -> None:
        """dispatch_later and a batch raise at the call too; the batch ends empty and clean."""
        with pytest.raises(JobNotSerializable):
            backed.dispatch_later(0, lambda: None)
        with backed.batch() as batch, pytest.raises(JobNotSerializable):
            batch.dispatch(lambda: None)
        assert (batch.total, batch.done) == (0, 0)
        assert backed.stats(0).delayed == 0


class TestBulkhead:
    def test_barrier_waits_for_the_jobs_in_flight_and_queued(self, backed: Dispatcher, gate: Gate) -> None:
        """wait() returns only once every job dispatched before it is over."""
        for n in range(4):
            backed.dispatch(gate.job(n))
        gate.wait_started(2)
        assert backed.wait(0) is False
        gate.open()
        assert backed.wait(WAIT)
        assert backed.stats(0).completed == 4

    def test_dispatch_blocks_while_in_flight_and_queue_are_full(self, backed: Dispatcher, gate: Gate) -> None:
        """2 in flight and 3 queued fill the pool: a dispatch blocks until a job ends."""
        for n in range(5):
            backed.dispatch(gate.job(n))
        gate.wait_started(2)
        stats = backed.stats(0)
        assert (stats.busy, stats.queued, stats.idle) == (2, 3, 0)
        with pytest.raises(PoolFull):
            backed.dispatch(gate.job(5), timeout=0)
        done = threading.Event()

        def producer() -> None:
            backed.dispatch(gate.job(6))
            done.set()

        thread = threading.Thread(target=producer, name="test-producer")
        thread.start()
        wait_for(lambda: len(backed._pools[0]._room_waiters) == 1, "the producer to block")
        assert not done.is_set()
        gate.open()
        thread.join(WAIT)
        assert done.is_set()
        assert backed.wait(WAIT)
        assert backed.stats(0).completed == 6

    def test_many_dispatches_hold_the_bound_and_nothing_per_finished_job(self, backed: Dispatcher) -> None:
        """Thousands of dispatches never exceed the bound, and every finished job is let go."""
        alive = [0]
        lock = threading.Lock()

        def gone() -> None:
            with lock:
                alive[0] -= 1

        most = 0
        for n in range(2000):
            with lock:
                live = alive[0]
            most = max(most, live)
            job = remote_jobs.Item(n)
            with lock:
                alive[0] += 1
            weakref.finalize(job, gone)
            backed.dispatch(job)
            del job
            stats = backed.stats(0)
            assert stats.busy <= 2
            assert stats.busy + stats.queued <= 5
        assert backed.wait(WAIT)
        gc.collect()
        assert alive[0] == 0
        # The bound, plus a job whose done-callback is returning. Without the
        # GIL, CPython frees an object another thread let go of only once the
        # thread that made it (this one, which blocks on the full pool) runs
        # again: a few finished jobs can outlive their run that long (a known
        # limit, see docs/reliability.md).
        late_frees = 0 if getattr(sys, "_is_gil_enabled", lambda: True)() else 4
        assert most <= 5 + 2 + late_frees
        assert backed.stats(0).completed == 2000


class TestResults:
    def test_results_that_cannot_travel_back_fail_their_call_and_leave_the_engine_working(self) -> None:
        """A result that cannot be pickled, or unpickled here, fails its future with ResultNotSerializable only."""
        with ProcessPoolExecutor(1, mp_context=SPAWN) as executor:
            d = Dispatcher([PoolConfig(0, 1, backend=executor)])
            try:
                view = d.executor(0)
                unpicklable = view.submit(remote_jobs.LockHolder)
                unloadable = view.submit(remote_jobs.loads_nowhere)
                after = view.submit(remote_jobs.square, 3)
                reason = r"^the result of the call, a remote_jobs.LockHolder, cannot be sent back: pickle failed with"
                with pytest.raises(ResultNotSerializable, match=reason):
                    unpicklable.result(WAIT)
                reason = r"^the result of the call cannot be unpickled in this process: RuntimeError: this object"
                with pytest.raises(ResultNotSerializable, match=reason):
                    unloadable.result(WAIT)
                assert after.result(WAIT) == 9  # the engine was not broken
                assert executor.submit(remote_jobs.square, 4).result(WAIT) == 16
            finally:
                d.finalize(timeout=WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.failed) == (1, 2)
        assert issubclass(ResultNotSerializable, TypeError)

    def test_exception_that_cannot_be_unpickled_here_fails_its_job_only(
        self, errors: list[tuple[object, BaseException]]
    ) -> None:
        """An exception that unpickles in the worker but not here arrives as RemoteJobError; the engine lives on."""
        with ProcessPoolExecutor(1, mp_context=SPAWN) as executor:
            d = Dispatcher(
                [PoolConfig(0, 1, backend=executor)], on_error=lambda job, error: errors.append((job, error))
            )
            try:
                d.dispatch(remote_jobs.raise_worker_only)
                assert d.wait(WAIT)
                assert d.executor(0).submit(remote_jobs.square, 3).result(WAIT) == 9  # the engine was not broken
            finally:
                d.finalize(timeout=WAIT)
        (_, error), *_ = errors
        assert isinstance(error, RemoteJobError)
        assert (error.type_name, error.text) == ("remote_jobs.WorkerOnlyError", "only workers know it")
        assert error.reason.startswith("unpickling it in this process failed with RuntimeError: this exception")
        assert "in raise_worker_only" in str(error.__cause__)  # the traceback from the worker, as text
        assert (d.stats(0).completed, d.stats(0).failed) == (1, 1)

    def test_exception_raised_as_the_job_is_unpickled_that_cannot_come_back_leaves_the_engine_working(
        self, errors: list[tuple[object, BaseException]]
    ) -> None:
        """A job whose unpickling in the worker raises an exception that cannot come back fails with RemoteJobError."""
        with ProcessPoolExecutor(1, mp_context=SPAWN) as executor:
            d = Dispatcher(
                [PoolConfig(0, 1, backend=executor)], on_error=lambda job, error: errors.append((job, error))
            )
            try:
                d.dispatch(remote_jobs.FailsToLoad())
                assert d.wait(WAIT)
                assert d.executor(0).submit(remote_jobs.square, 3).result(WAIT) == 9  # the engine was not broken
            finally:
                d.finalize(timeout=WAIT)
        (_, error), *_ = errors
        assert isinstance(error, RemoteJobError)
        assert (error.type_name, error.text) == ("remote_jobs.UnloadableError", "raised as the job was unpickled")
        assert (d.stats(0).completed, d.stats(0).failed) == (1, 1)


class TestBatches:
    def test_batch_raises_the_group_of_remote_errors(self, backed: Dispatcher) -> None:
        """Leaving a batch raises an ExceptionGroup of its jobs' exceptions, not passed to on_error."""
        with pytest.raises(ExceptionGroup) as caught, backed.batch() as batch:
            batch.dispatch(functools.partial(remote_jobs.fail, "one"))
            batch.dispatch(functools.partial(remote_jobs.square, 2))
            batch.dispatch(functools.partial(remote_jobs.fail, "two"))
        assert sorted(str(e) for e in caught.value.exceptions) == ["one", "two"]
        assert all(isinstance(e, ValueError) for e in caught.value.exceptions)
        assert (batch.total, batch.done) == (3, 3)
        stats = backed.stats(0)
        assert (stats.completed, stats.failed) == (1, 2)

    def test_batch_waits_for_its_jobs_only(self, backed: Dispatcher, gate: Gate) -> None:
        """A batch's barrier does not wait for jobs dispatched outside it."""
        backed.dispatch(gate.job(0))
        gate.wait_started(1)
        with backed.batch() as batch:
            batch.dispatch(remote_jobs.noop)
        assert batch.done == 1
        assert backed.stats(0).busy == 1
        gate.open()

    def test_batch_left_by_an_exception_cancels_its_jobs_not_yet_sent(self, backed: Dispatcher, gate: Gate) -> None:
        """Jobs of a batch still queued when its block raises are cancelled; the block's exception propagates."""
        for n in range(2):
            backed.dispatch(gate.job(n))
        gate.wait_started(2)
        with pytest.raises(KeyError, match="stop"), backed.batch() as batch:
            for n in range(2, 5):
                batch.dispatch(gate.job(n))
            gate.open()
            raise KeyError("stop")
        assert backed.wait(WAIT)
        stats = backed.stats(0)
        assert stats.completed + stats.cancelled == 5
        assert stats.completed >= 2
        assert batch.done == 3


class TestDelayed:
    def test_delayed_jobs_run_and_the_barrier_waits_for_them(self, backed: Dispatcher) -> None:
        """dispatch_later sends the job when its time comes; wait() counts it from the call."""
        view_results = backed.executor(0)
        for n in range(3):
            backed.dispatch_later(0.05 * n, functools.partial(remote_jobs.square, n))
        assert backed.stats(0).delayed >= 1
        assert backed.wait(WAIT)
        stats = backed.stats(0)
        assert (stats.completed, stats.delayed) == (3, 0)
        assert view_results.submit(remote_jobs.square, 3).result(WAIT) == 9

    def test_due_job_waits_for_room_in_a_full_pool(self, backed: Dispatcher, gate: Gate) -> None:
        """A delayed job that falls due while the pool is full runs once room frees up."""
        for n in range(5):
            backed.dispatch(gate.job(n))
        backed.dispatch_later(0, functools.partial(remote_jobs.square, 4))
        gate.wait_started(2)
        assert backed.stats(0).delayed == 1
        gate.open()
        assert backed.wait(WAIT)
        assert backed.stats(0).completed == 6


class TestShutdown:
    def test_finalize_cancel_pending_drops_the_queue_and_leaves_the_engine_running(
        self, engine: ProcessPoolExecutor, gate: Gate
    ) -> None:
        """finalize(cancel_pending=True) cancels queued jobs, lets in-flight ones end, and keeps the engine."""
        d = Dispatcher([PoolConfig(0, 2, queue_size=3, backend=engine)])
        view = d.executor(0)
        running = [view.submit(gate.job(n)) for n in range(2)]
        queued = [view.submit(gate.job(n)) for n in range(2, 5)]
        gate.wait_started(2)
        finisher = threading.Thread(
            target=d.finalize, kwargs={"cancel_pending": True, "timeout": WAIT}, name="test-finalize"
        )
        finisher.start()
        wait_for(lambda: d.stats(0).cancelled == 3, "the queued jobs to count as cancelled")
        gate.open()
        finisher.join(WAIT)
        assert not finisher.is_alive()
        assert [f.result(WAIT) for f in running] == [0, 1]
        assert all(f.cancelled() for f in queued)
        assert wait(queued, timeout=0).not_done == set()  # done for concurrent.futures.wait too
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.busy, stats.queued) == (2, 3, 0, 0)
        assert engine.submit(remote_jobs.square, 5).result(WAIT) == 25  # not shut down

    def test_finalize_drains_in_flight_jobs(self, engine: ProcessPoolExecutor) -> None:
        """finalize() without cancel waits for every job and joins the feeder."""
        d = Dispatcher([PoolConfig(0, 2, queue_size=1, backend=engine)])
        for n in range(10):
            d.dispatch(functools.partial(remote_jobs.square, n))
        d.finalize(timeout=WAIT)
        assert d.stats(0).completed == 10

    def test_finalize_timeout_raises_while_a_job_is_in_flight(self, engine: ProcessPoolExecutor, gate: Gate) -> None:
        """finalize(timeout=...) raises TimeoutError while a job runs on the engine; a later call finishes."""
        d = Dispatcher([PoolConfig(0, 1, backend=engine)])
        d.dispatch(gate.job(0))
        gate.wait_started(1)
        with pytest.raises(TimeoutError, match=r"^jobs were still running after 0.05 s$"):
            d.finalize(timeout=0.05)
        gate.open()
        d.finalize(timeout=WAIT)
        assert d.stats(0).completed == 1


class TestEngineFaults:
    def test_killed_worker_fails_its_jobs_then_every_later_job_clearly(self) -> None:
        """A worker process that dies breaks the user's executor: its jobs and later ones fail, nothing hangs."""
        errors: list[BaseException] = []
        with ProcessPoolExecutor(2, mp_context=SPAWN) as executor:
            d = Dispatcher([PoolConfig(0, 2, queue_size=2, backend=executor)], on_error=lambda j, e: errors.append(e))
            try:
                d.dispatch(remote_jobs.die)
                assert d.wait(WAIT)
                assert d.stats(0).failed == 1
                assert isinstance(errors[0], BrokenProcessPool)
                for _ in range(3):
                    d.dispatch(remote_jobs.noop)
                with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:
                    batch.dispatch(remote_jobs.noop)
                assert d.wait(WAIT)
            finally:
                d.finalize(timeout=WAIT)
        stats = d.stats(0)
        assert (stats.failed, stats.completed, stats.busy, stats.queued) == (5, 0, 0, 0)
        later = errors[1:]
        assert len(later) == 3
        assert all(isinstance(e, EngineBroken) for e in later)
        assert "its engine, ProcessPoolExecutor" in str(later[0])
        assert isinstance(later[0].__cause__, BrokenProcessPool)
        (in_batch,) = caught.value.exceptions
        assert isinstance(in_batch, EngineBroken)

    def test_shut_down_engine_fails_jobs_with_engine_broken(self) -> None:
        """An executor the user shut down fails the jobs sent to it; the pool still finalizes."""
        executor = ThreadPoolExecutor(1)
        executor.shutdown()
        errors: list[BaseException] = []
        d = Dispatcher([PoolConfig(0, 1, backend=executor)], on_error=lambda j, e: errors.append(e))
        view = d.executor(0)
        future = view.submit(remote_jobs.square, 2)
        with pytest.raises(EngineBroken, match=r"refused it \(RuntimeError: cannot schedule new futures after"):
            future.result(WAIT)
        d.finalize(timeout=WAIT)
        assert d.stats(0).failed == 1
        assert errors == []  # the future got it

    def test_workers_without_jobdispatch_fail_the_job_and_keep_the_engine(self) -> None:
        """A job sent to processes that cannot import jobdispatch fails with ModuleNotFoundError; the engine lives."""
        errors: list[BaseException] = []
        with ProcessPoolExecutor(1, mp_context=SPAWN, initializer=remote_jobs.hide_jobdispatch) as executor:
            d = Dispatcher([PoolConfig(0, 1, backend=executor)], on_error=lambda j, e: errors.append(e))
            d.dispatch(remote_jobs.noop)
            assert d.wait(WAIT)
            d.finalize(timeout=WAIT)
            assert executor.submit(remote_jobs.square, 3).result(WAIT) == 9
        assert d.stats(0).failed == 1
        (error,) = errors
        assert isinstance(error, ModuleNotFoundError)
        assert "jobdispatch" in str(error)


class UnrulyExecutor(ThreadPoolExecutor):
    """An engine of the user's own: submit raises SystemExit, then returns a future that refuses callbacks."""

    def __init__(self) -> None:
        super().__init__(1)
        self.faults = ["raise", "refuse callbacks"]

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "raise":
            raise SystemExit("no more jobs")
        future = super().submit(fn, *args, **kwargs)
        if fault == "refuse callbacks":
            future.add_done_callback = self._refuse  # type: ignore[method-assign, assignment]
        return future

    @staticmethod
    def _refuse(callback: object) -> None:
        raise RuntimeError("callbacks are closed")


class TestEnginesOfYourOwn:
    def test_engine_that_raises_or_refuses_callbacks_fails_the_job_and_the_pool_goes_on(self) -> None:
        """A BaseException from submit, or a future refusing callbacks: the job fails once; later jobs run."""
        errors: list[BaseException] = []
        with UnrulyExecutor() as executor:
            d = Dispatcher([PoolConfig(0, 1, queue_size=4, backend=executor)], on_error=lambda j, e: errors.append(e))
            try:
                view = d.executor(0)
                futures = [view.submit(remote_jobs.square, n) for n in range(4)]
                assert d.wait(WAIT)
                refused = r"^pool 0 could not send job .*refused it \(SystemExit: no more jobs\)$"
                with pytest.raises(EngineBroken, match=refused):
                    futures[0].result(0)
                lost = r"^pool 0 sent job .*lost it \(RuntimeError: callbacks are closed\)$"
                with pytest.raises(EngineBroken, match=lost):
                    futures[1].result(0)
                assert [f.result(0) for f in futures[2:]] == [4, 9]
            finally:
                d.finalize(timeout=WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.failed, stats.busy, stats.queued) == (2, 2, 0, 0)
        assert errors == []  # the futures got them


class TestThreadPoolsBeside:
    def test_a_backed_pool_and_a_thread_pool_do_not_wait_for_each_other(
        self, engine: ProcessPoolExecutor, gate: Gate
    ) -> None:
        """A full backed pool leaves the thread pool of the same dispatcher free."""
        d = Dispatcher([PoolConfig(0, 2, queue_size=0, backend=engine), PoolConfig(1, 1)])
        try:
            d.dispatch(gate.job(0), priority=0)
            d.dispatch(gate.job(1), priority=0)
            gate.wait_started(2)
            with pytest.raises(PoolFull):
                d.dispatch(gate.job(2), priority=0, timeout=0)
            ran = threading.Event()
            d.dispatch(ran.set, priority=1)
            assert ran.wait(WAIT)
        finally:
            gate.open()
            d.finalize(timeout=WAIT)


class TestNoFeeder:
    def test_pool_whose_feeder_cannot_start_sends_jobs_from_the_caller(
        self, engine: ProcessPoolExecutor, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the pool's thread cannot start, dispatch sends the job itself and waits for it; nothing is lost."""
        refusing = RefusingStart(monkeypatch, "nofeeder-")
        errors: list[BaseException] = []
        d = Dispatcher([PoolConfig(0, 2, backend=engine)], name="nofeeder", on_error=lambda j, e: errors.append(e))
        try:
            future = d.executor(0).submit(remote_jobs.square, 7)
            assert future.done()
            assert future.result() == 49
            d.dispatch(functools.partial(remote_jobs.fail, "sent by the caller"))
            (error,) = errors
            assert isinstance(error, ValueError)
            assert refusing.refused.value == 2
            stats = d.stats(0)
            assert (stats.completed, stats.failed, stats.busy) == (1, 1, 0)
            refusing.active = False
            d.dispatch(remote_jobs.noop)
            assert d.wait(WAIT)
            assert d.stats(0).completed == 2
        finally:
            refusing.active = False
            d.finalize(timeout=WAIT)

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
    def test_ctrl_c_while_the_caller_waits_for_the_engine_settles_the_call(
        self, engine: ProcessPoolExecutor, gate: Gate, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no feeder, Ctrl-C while submit waits for the engine propagates; the view's shutdown() returns."""
        assert threading.current_thread() is threading.main_thread()
        RefusingStart(monkeypatch, "nofeeder-")
        d = Dispatcher([PoolConfig(0, 1, backend=engine)], name="nofeeder")
        view = d.executor(0)

        def strike() -> None:
            gate.wait_started(1)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

        striker = threading.Thread(target=strike, name="test-striker")
        striker.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                view.submit(gate.job(0))
        finally:
            striker.join(WAIT)
            gate.open()
        closer = threading.Thread(target=view.shutdown, name="test-shutdown")
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive()  # the call's future was settled, not left running
        d.finalize(timeout=WAIT)
        assert d.stats(0).failed == 1

    def test_pool_without_feeder_waits_for_the_engine_in_slices(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no feeder, the dispatching thread waits for the engine in slices of WAIT_SLICE: no Ctrl-C missed."""
        monkeypatch.setattr(_backed, "WAIT_SLICE", 0.01, raising=False)
        RefusingStart(monkeypatch, "nofeeder-")
        gate, started = threading.Event(), threading.Event()
        run_code = _backed.RemoteCall._run.__code__
        slices = Counter()

        def trace(frame: Any, event: str, arg: object) -> Any:
            if event == "call" and frame.f_code is threading.Event.wait.__code__ and frame.f_back.f_code is run_code:
                slices()
            return None

        def dispatch() -> None:
            sys.settrace(trace)
            try:
                d.dispatch(lambda: (started.set(), gate.wait(3 * WAIT)))
            finally:
                sys.settrace(None)

        with ThreadPoolExecutor(1) as executor:
            d = Dispatcher([PoolConfig(0, 1, backend=executor)], name="nofeeder")
            producer = threading.Thread(target=dispatch, name="test-dispatching-thread")
            producer.start()
            try:
                assert started.wait(WAIT)
                wait_for(lambda: slices.value >= 3, "the dispatching thread to wake between slices")
            finally:
                gate.set()
                producer.join(WAIT)
                d.finalize(timeout=WAIT)
        assert not producer.is_alive()
        assert d.stats(0).completed == 1

    def test_pool_without_feeder_settles_the_future_of_a_job_its_engine_refuses(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no feeder, a job a shut-down engine refuses fails its future with EngineBroken, never left running."""
        RefusingStart(monkeypatch, "nofeeder-")
        executor = ThreadPoolExecutor(1)
        executor.shutdown()
        errors: list[BaseException] = []
        d = Dispatcher([PoolConfig(0, 1, backend=executor)], name="nofeeder", on_error=lambda j, e: errors.append(e))
        try:
            future = d.executor(0).submit(remote_jobs.square, 2)
            with pytest.raises(EngineBroken, match=r"refused it \(RuntimeError: cannot schedule new futures after"):
                future.result(0)
            stats = d.stats(0)
            assert (stats.failed, stats.busy) == (1, 0)
            assert errors == []  # the future got it
        finally:
            d.finalize(timeout=WAIT)


class TestAsyncio:
    def test_dispatch_async_and_wait_async_on_a_backed_pool(self, backed: Dispatcher) -> None:
        """dispatch_async sends jobs to the engine and wait_async awaits them, without blocking the loop."""

        async def main() -> None:
            for n in range(8):
                await backed.dispatch_async(functools.partial(remote_jobs.square, n))
            assert await backed.wait_async(WAIT)

        asyncio.run(main())
        assert backed.stats(0).completed == 8
