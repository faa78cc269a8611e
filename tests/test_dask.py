"""Pools whose jobs run on a real Dask cluster (LocalCluster, 2 worker processes); skipped without distributed."""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import remote_jobs  # noqa: E402
from jobdispatch import (  # noqa: E402
    DaskBackend,
    Dispatcher,
    EngineBroken,
    JobNotSerializable,
    PoolConfig,
    PoolFull,
    RemoteJobError,
    ResultNotSerializable,
)
from support import WAIT, Counter, wait_for  # noqa: E402
from test_backends import Gate  # noqa: E402


def start_cluster(allowed_failures: int) -> tuple[Any, Any]:
    """Start a LocalCluster of 2 worker processes of 1 thread; a task may kill ``allowed_failures`` workers."""
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
        )
        return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One cluster for the module's tests that kill no worker."""
    cluster, dask_client = start_cluster(1)
    yield dask_client
    dask_client.close()
    cluster.close()


@pytest.fixture
def doomed() -> Iterator[Any]:
    """A cluster of its own for a test that kills a worker (restarted workers come back slowly and not always)."""
    cluster, dask_client = start_cluster(1)
    yield dask_client
    dask_client.close()
    cluster.close()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path)
    yield g
    g.open()


def worker_addresses(client: Any) -> list[str]:
    """Return the addresses of the two workers, once both run."""
    client.wait_for_workers(2, timeout=WAIT)
    return sorted(client.scheduler_info()["workers"])


@pytest.fixture
def on_dask(client: Any) -> Iterator[tuple[Dispatcher, list[tuple[object, BaseException]]]]:
    """A dispatcher with one pool on the cluster (2 in flight, 3 queued), and the errors it reports."""
    errors: list[tuple[object, BaseException]] = []
    worker_addresses(client)
    d = Dispatcher([PoolConfig(0, 2, queue_size=3, backend=client)], on_error=lambda j, e: errors.append((j, e)))
    yield d, errors
    d.finalize(cancel_pending=True, timeout=WAIT)


class TestDask:
    def test_jobs_and_executor_view_results_on_the_cluster(self, on_dask: Any) -> None:
        """Jobs run in the worker processes; the executor view brings results back."""
        d, errors = on_dask
        for n in range(10):
            d.dispatch(functools.partial(remote_jobs.square, n))
        assert list(d.executor(0).map(remote_jobs.square, range(5))) == [0, 1, 4, 9, 16]
        assert d.executor(0).submit(remote_jobs.pid).result(WAIT) != os.getpid()
        assert d.wait(WAIT)
        assert d.stats(0).completed == 16
        assert errors == []

    def test_closures_travel_by_cloudpickle_but_locks_do_not(self, on_dask: Any) -> None:
        """A lambda is fine on Dask (cloudpickle); a job holding a lock raises JobNotSerializable at dispatch."""
        d, _ = on_dask
        base = 7
        assert d.executor(0).submit(lambda: base * 6).result(WAIT) == 42
        reason = r"cloudpickle failed with TypeError: cannot pickle '_thread.lock'"
        with pytest.raises(JobNotSerializable, match=reason):
            d.dispatch(remote_jobs.LockHolder())
        assert d.wait(WAIT)
        assert d.stats(0).completed == 1

    def test_barrier_and_backpressure(self, on_dask: Any, gate: Gate) -> None:
        """2 jobs in flight and 3 queued fill the pool; wait() holds until they are all over."""
        d, _ = on_dask
        for n in range(5):
            d.dispatch(gate.job(n))
        gate.wait_started(2)
        stats = d.stats(0)
        assert (stats.busy, stats.queued) == (2, 3)
        with pytest.raises(PoolFull):
            d.dispatch(gate.job(5), timeout=0)
        assert d.wait(0) is False
        gate.open()
        assert d.wait(WAIT)
        assert d.stats(0).completed == 5

    def test_many_dispatches_hold_the_bound_and_nothing_per_finished_job(self, client: Any) -> None:
        """Hundreds of dispatches stay within the bound; finished jobs leave no object here and no key on Dask."""
        d = Dispatcher([PoolConfig(0, 4, queue_size=4, backend=client)])
        alive = Counter()
        gone = Counter()
        try:
            for n in range(300):
                job = remote_jobs.Item(n)
                alive()
                weakref.finalize(job, gone)
                d.dispatch(job)
                del job
                stats = d.stats(0)
                assert stats.busy <= 4
                assert stats.busy + stats.queued <= 8
                assert alive.value - gone.value <= 8 + 2  # the bound, plus jobs whose done-callback is returning
            assert d.wait(WAIT)
        finally:
            d.finalize(timeout=WAIT)
        gc.collect()
        assert gone.value == 300
        wait_for(lambda: not any(key.startswith("jobdispatch-") for key in client.futures), "Dask to drop the keys")
        assert d.stats(0).completed == 300

    def test_results_that_cannot_travel_back_fail_their_call_only(self, on_dask: Any, client: Any) -> None:
        """A result that cannot be pickled on the worker, or unpickled here, fails its call: ResultNotSerializable."""
        d, errors = on_dask
        view = d.executor(0)
        unpicklable = view.submit(remote_jobs.LockHolder)
        unloadable = view.submit(remote_jobs.loads_nowhere)
        with pytest.raises(ResultNotSerializable, match=r"^the result of the call, a remote_jobs.LockHolder, "):
            unpicklable.result(WAIT)
        with pytest.raises(ResultNotSerializable, match=r"^the result of the call cannot be unpickled in this process"):
            unloadable.result(WAIT)
        assert view.submit(remote_jobs.square, 5).result(WAIT) == 25
        assert d.wait(WAIT)
        assert (d.stats(0).completed, d.stats(0).failed) == (1, 2)
        assert errors == []
        # The exceptions, still held here, keep no Dask future: the cluster lets the results go.
        gc.collect()
        wait_for(lambda: not any(key.startswith("jobdispatch-") for key in client.futures), "Dask to drop the keys")

    def test_exception_that_cannot_be_unpickled_here_fails_its_job_only(self, on_dask: Any, client: Any) -> None:
        """An exception that unpickles on the workers but not here arrives as RemoteJobError, and keeps no key."""
        d, errors = on_dask
        d.dispatch(remote_jobs.raise_worker_only)
        assert d.wait(WAIT)
        (_, error), *_ = errors
        assert isinstance(error, RemoteJobError)
        assert (error.type_name, error.text) == ("remote_jobs.WorkerOnlyError", "only workers know it")
        assert "in raise_worker_only" in str(error.__cause__)
        assert d.stats(0).failed == 1
        gc.collect()
        wait_for(lambda: not any(key.startswith("jobdispatch-") for key in client.futures), "Dask to drop the keys")

    def test_result_slow_to_arrive_holds_up_no_other_pool(self, client: Any) -> None:
        """While one pool's result is still being fetched and loaded, another pool's results come back."""
        d = Dispatcher([PoolConfig(0, 1, backend=client), PoolConfig(1, 1, backend=client)])
        loading = remote_jobs.LOADING["slow"] = threading.Event()
        gate = remote_jobs.GATES["slow"] = threading.Event()
        try:
            slow = d.executor(0).submit(remote_jobs.loads_after_gate, "slow")
            assert loading.wait(WAIT)  # its result is arriving, and waits for the gate
            assert d.executor(1).submit(remote_jobs.square, 3).result(WAIT) == 9
            assert not slow.done()
            gate.set()
            assert slow.result(WAIT) == "slow"
        finally:
            gate.set()
            d.finalize(timeout=WAIT)
        assert (d.stats(0).completed, d.stats(1).completed) == (1, 1)

    def test_batch_raises_the_group_of_remote_errors(self, on_dask: Any) -> None:
        """A batch's failed jobs come back as an ExceptionGroup of their own exceptions."""
        d, errors = on_dask
        with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:
            batch.dispatch(functools.partial(remote_jobs.fail, "on dask"))
            batch.dispatch(remote_jobs.noop)
        (error,) = caught.value.exceptions
        assert isinstance(error, ValueError)
        assert str(error) == "on dask"
        assert errors == []

    def test_delayed_jobs_and_cancel_on_finalize(self, client: Any, gate: Gate) -> None:
        """Delayed jobs run when due; finalize(cancel_pending=True) cancels what is queued and delayed."""
        d = Dispatcher([PoolConfig(0, 1, queue_size=2, backend=client)])
        view = d.executor(0)
        d.dispatch_later(0, functools.partial(remote_jobs.square, 3))
        assert d.wait(WAIT)
        assert d.stats(0).completed == 1
        running = view.submit(gate.job(0))
        queued = [view.submit(gate.job(n)) for n in (1, 2)]
        d.dispatch_later(remote_jobs.BOUND, remote_jobs.noop)
        gate.wait_started(1)
        finisher = threading.Thread(
            target=d.finalize, kwargs={"cancel_pending": True, "timeout": WAIT}, name="test-finalize"
        )
        finisher.start()
        wait_for(lambda: d.stats(0).cancelled == 3, "the queued and delayed jobs to count as cancelled")
        gate.open()
        finisher.join(WAIT)
        assert not finisher.is_alive()
        assert running.result(WAIT) == 0
        assert all(f.cancelled() for f in queued)
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.delayed) == (2, 3, 0)
        assert client.submit(remote_jobs.square, 4, pure=False).result(WAIT) == 16  # the client stays open

    def test_two_pools_on_one_cluster_do_not_queue_behind_each_other(self, client: Any, gate: Gate) -> None:
        """Pools pinned to different workers: one pool's backlog never delays the other's jobs."""
        first, second = worker_addresses(client)
        d = Dispatcher(
            [
                PoolConfig(0, 2, backend=DaskBackend(client, workers=[first])),
                PoolConfig(1, 2, backend=DaskBackend(client, workers=[second])),
            ]
        )
        try:
            busy = [d.executor(0).submit(gate.job(n)) for n in range(2)]  # one runs, one waits on the first worker
            gate.wait_started(1)
            where = d.executor(1).submit(lambda: distributed.get_worker().address)
            assert where.result(WAIT) == second
            assert not any(f.done() for f in busy)
            gate.open()
            assert sorted(f.result(WAIT) for f in busy) == [0, 1]
        finally:
            gate.open()
            d.finalize(timeout=WAIT)

    def test_retries_rerun_a_job_that_raised(self, client: Any, tmp_path: Path) -> None:
        """DaskBackend(retries=1) reruns a job that failed once; it counts as completed."""
        d = Dispatcher([PoolConfig(0, 1, backend=DaskBackend(client, retries=1))])
        try:
            assert d.executor(0).submit(remote_jobs.fail_once, str(tmp_path)).result(WAIT) == "second try"
        finally:
            d.finalize(timeout=WAIT)
        assert (d.stats(0).completed, d.stats(0).failed) == (1, 0)

    def test_retries_do_not_rerun_a_job_whose_result_cannot_be_sent_back(self, client: Any, tmp_path: Path) -> None:
        """A job that ran but whose result cannot be pickled is not rerun by retries; its call fails once."""
        d = Dispatcher([PoolConfig(0, 1, backend=DaskBackend(client, retries=2))])
        try:
            future = d.executor(0).submit(remote_jobs.count_run_then_return_a_lock, str(tmp_path))
            with pytest.raises(ResultNotSerializable, match=r"^the result of the call, a _thread.lock, cannot be sent"):
                future.result(WAIT)
        finally:
            d.finalize(timeout=WAIT)
        assert len(list(tmp_path.iterdir())) == 1
        assert d.stats(0).failed == 1


class TestDaskBackendOptions:
    def test_bad_options_are_refused_with_their_values(self, client: Any) -> None:
        """DaskBackend names the option and the value it refuses."""
        with pytest.raises(TypeError, match=r"^workers must be a str, a sequence of str or None, got \[1\]$"):
            DaskBackend(client, workers=[1])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"^resources must be a mapping or None, got 'gpu'$"):
            DaskBackend(client, resources="gpu")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^retries must be an int or None, got True$"):
            DaskBackend(client, retries=True)
        with pytest.raises(ValueError, match=r"^retries must be >= 0, got -1$"):
            DaskBackend(client, retries=-1)
        with pytest.raises(TypeError, match=r"^allow_other_workers must be a bool, got 1$"):
            DaskBackend(client, allow_other_workers=1)  # type: ignore[arg-type]

    def test_options_no_worker_could_satisfy_are_refused_with_their_values(self, client: Any) -> None:
        """Options under which a job would wait on the cluster for ever, or run anywhere, raise naming the value."""
        with pytest.raises(ValueError, match=r"^workers must name at least one worker, got \[\]$"):
            DaskBackend(client, workers=[])
        with pytest.raises(TypeError, match=r"^resources amounts must be numbers, got 'one' for 'gpu'$"):
            DaskBackend(client, resources={"gpu": "one"})  # type: ignore[dict-item]
        keys = r"^resources must map names \(str\) to amounts, got the key 1 in \{1: 1\}$"
        with pytest.raises(TypeError, match=keys):
            DaskBackend(client, resources={1: 1})  # type: ignore[dict-item]
        for amount in (-1, float("inf"), float("nan")):
            with pytest.raises(ValueError, match=r"^resources amounts must be finite and >= 0, got .* for 'gpu'$"):
                DaskBackend(client, resources={"gpu": amount})
        with pytest.raises(ValueError, match=r"^allow_other_workers=True needs workers, got workers=None$"):
            DaskBackend(client, allow_other_workers=True)
        assert DaskBackend(client, resources={"gpu": 0.5}).resources == {"gpu": 0.5}

    def test_resources_route_jobs_to_the_workers_that_declare_them(self, client: Any) -> None:
        """A pool asking for a resource no worker has keeps its jobs in flight, unrun, until cancelled."""
        d = Dispatcher([PoolConfig(0, 1, backend=DaskBackend(client, resources={"unicorn": 1}))])
        future = d.executor(0).submit(remote_jobs.square, 2)
        wait_for(lambda: d.stats(0).busy == 1, "the job to be in flight")
        assert not future.done()
        keys = [f for f in client.futures if f.startswith("jobdispatch-")]
        assert len(keys) == 1
        client.cancel([distributed.Future(key, client) for key in keys])
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(WAIT)
        d.finalize(timeout=WAIT)
        assert d.stats(0).failed == 1


class TestWorkerDeath:
    def test_job_whose_worker_died_reruns_at_least_once(self, doomed: Any, tmp_path: Path) -> None:
        """Dask reruns a job whose worker process died: it ran twice and counts once, completed."""
        worker_addresses(doomed)
        d = Dispatcher([PoolConfig(0, 1, backend=doomed)])
        try:
            assert d.executor(0).submit(remote_jobs.die_once, str(tmp_path)).result(WAIT) == "second try"
        finally:
            d.finalize(timeout=WAIT)
        assert (tmp_path / "died").exists()
        assert (d.stats(0).completed, d.stats(0).failed) == (1, 0)

    def test_job_that_kills_every_worker_fails_and_the_pool_goes_on(self, doomed: Any) -> None:
        """A job that kills its worker each time fails once Dask gives up (KilledWorker); later jobs run."""
        worker_addresses(doomed)
        errors: list[BaseException] = []
        d = Dispatcher([PoolConfig(0, 2, backend=doomed)], on_error=lambda j, e: errors.append(e))
        scheduler = doomed.cluster.scheduler
        scheduler.allowed_failures = 0  # give up at the first death
        try:
            d.dispatch(remote_jobs.die)
            assert d.wait(3 * WAIT)
            assert d.executor(0).submit(remote_jobs.square, 6).result(3 * WAIT) == 36
        finally:
            d.finalize(timeout=WAIT)
        (error,) = errors
        assert type(error).__name__ == "KilledWorker"
        assert (d.stats(0).failed, d.stats(0).completed) == (1, 1)


class TestWorkersWithoutJobdispatch:
    def test_job_fails_with_module_not_found_and_the_cluster_works_on(self, doomed: Any) -> None:
        """On workers without jobdispatch, a job fails with ModuleNotFoundError, counted; nothing hangs."""
        import dask_plugins

        doomed.register_plugin(dask_plugins.HideJobdispatch())
        errors: list[BaseException] = []
        d = Dispatcher([PoolConfig(0, 2, backend=doomed)], on_error=lambda j, e: errors.append(e))
        try:
            d.dispatch(remote_jobs.noop)
            assert d.wait(WAIT)
        finally:
            d.finalize(timeout=WAIT)
        (error,) = errors
        assert isinstance(error, ModuleNotFoundError)
        assert "jobdispatch" in str(error)
        assert d.stats(0).failed == 1
        assert doomed.submit(remote_jobs.square, 5, pure=False).result(WAIT) == 25


class TestClosedClient:
    def test_jobs_sent_to_a_closed_client_fail_with_engine_broken(self, client: Any) -> None:
        """A client closed under the pool fails each job with EngineBroken, counted; nothing hangs."""
        second = distributed.Client(client.cluster, set_as_default=False)
        errors: list[BaseException] = []
        d = Dispatcher([PoolConfig(0, 1, backend=second)], on_error=lambda j, e: errors.append(e))
        try:
            second.close()
            d.dispatch(remote_jobs.noop)
            assert d.wait(WAIT)
        finally:
            d.finalize(timeout=WAIT)
        (error,) = errors
        assert isinstance(error, EngineBroken)
        assert "refused it (ClosedClientError" in str(error)
        assert d.stats(0).failed == 1

    def test_client_closed_under_jobs_in_flight_leaves_no_job_pending(self, client: Any, gate: Gate) -> None:
        """Closing the client while jobs are in flight and queued: every job is counted over, wait() returns."""
        second = distributed.Client(client.cluster, set_as_default=False)
        d = Dispatcher([PoolConfig(0, 4, queue_size=4, backend=second)])
        try:
            view = d.executor(0)
            futures = [view.submit(gate.job(n)) for n in range(8)]
            gate.wait_started(2)
            # The close cancels the jobs in flight; the pool sends its queued
            # jobs as their slots free up, while the client is closing.
            second.close()
            gate.open()
            assert d.wait(WAIT)
        finally:
            gate.open()
            d.finalize(timeout=WAIT)
        stats = d.stats(0)
        assert (stats.completed + stats.failed, stats.busy, stats.queued) == (8, 0, 0)
        assert all(f.done() for f in futures)
        for future in futures:
            if future.exception() is not None:
                assert isinstance(future.exception(), EngineBroken | concurrent.futures.CancelledError)


class TestClientExecutor:
    def test_dask_executor_runs_jobs_with_cloudpickle(self, client: Any) -> None:
        """Client.get_executor() works as a plain Executor backend; it is serialised with cloudpickle, as Dask does."""
        d = Dispatcher([PoolConfig(0, 2, backend=client.get_executor(pure=False))])
        try:
            base = 5
            assert d.executor(0).submit(lambda: base + 1).result(WAIT) == 6
            for n in range(4):
                d.dispatch(functools.partial(remote_jobs.square, n))
            assert d.wait(WAIT)
        finally:
            d.finalize(timeout=WAIT)
        assert d.stats(0).completed == 5
