"""Defects found by an adversarial review of the seams between backed pools, chunks, the asyncio calls and timers.

Each test fails on the code it was written against (it is marked
``xfail(strict=True)``: remove the mark with the fix). Every wait is bounded:
a test that would hang fails instead.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import remote_jobs
from jobdispatch import Dispatcher, PoolConfig
from support import WAIT, wait_for

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(scope="module")
def engine() -> Iterator[ProcessPoolExecutor]:
    """One ProcessPoolExecutor (2 processes, spawned) for the module, warmed up."""
    executor = ProcessPoolExecutor(2, mp_context=SPAWN)
    list(executor.map(remote_jobs.square, range(4)))
    yield executor
    executor.shutdown(cancel_futures=True)


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """What threads die of during the test (a feeder thread, say)."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


@pytest.fixture
def backed(engine: ProcessPoolExecutor) -> Iterator[Dispatcher]:
    """A dispatcher with one pool on the module's processes: 2 in flight, 4 queued."""
    d = Dispatcher([PoolConfig(0, 2, queue_size=4, backend=engine)])
    yield d
    d.finalize(cancel_pending=True, timeout=WAIT)


def test_dispatch_many_in_chunks_runs_every_job_on_a_backed_pool(
    backed: Dispatcher, thread_errors: list[BaseException]
) -> None:
    """dispatch_many(chunksize=2) on a pool backed by processes runs all its jobs, and the feeder lives on."""
    assert backed.dispatch_many([remote_jobs.noop] * 4, priority=0, chunksize=2) == 4
    wait_for(lambda: backed.stats(0).completed == 4 or thread_errors, "the jobs to complete or a thread to die")
    assert thread_errors == []
    assert backed.wait(WAIT)
    stats = backed.stats(0)
    assert (stats.completed, stats.failed, stats.cancelled, stats.busy, stats.queued) == (4, 0, 0, 0, 0)


def test_run_on_a_backed_pool_is_refused_clearly_and_the_executor_view_works(backed: Dispatcher) -> None:
    """Dispatcher.run on a pool backed by processes says what to use instead, which returns the result."""

    async def main() -> int:
        with pytest.raises(TypeError, match=r"run\(\) runs a call on a pool of threads.*run_in_executor"):
            await backed.run(remote_jobs.square, 7)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(backed.executor(0), remote_jobs.square, 7), WAIT)

    assert asyncio.run(main()) == 49
    assert backed.wait(WAIT)  # the future settles just before the pool counts the job
    assert backed.stats(0).completed == 1


def test_cancelling_a_delayed_job_queued_in_a_backed_pool_counts_it_cancelled(
    engine: ProcessPoolExecutor, thread_errors: list[BaseException], tmp_path: Path
) -> None:
    """Cancelling a delayed job queued in a backed pool counts it cancelled, and the feeder lives on."""
    d = Dispatcher([PoolConfig(0, 1, queue_size=2, backend=engine)])
    try:
        d.dispatch(functools.partial(remote_jobs.gated, str(tmp_path), 1), priority=0)  # holds the one slot in flight
        wait_for(lambda: (tmp_path / "started-1").exists(), "the gated job to start")
        handle = d.dispatch_later(0, remote_jobs.noop, priority=0)
        wait_for(lambda: d.stats(0).queued == 1, "the timer to hand the delayed job to the pool")
        assert handle.cancel()
        (tmp_path / "open").touch()
        wait_for(lambda: d.stats(0).completed == 1, "the gated job to complete")
        wait_for(lambda: d.stats(0).cancelled == 1 or thread_errors, "the cancel to be counted or a thread to die")
        assert thread_errors == []
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled, stats.busy, stats.queued) == (1, 1, 0, 0)
    finally:
        (tmp_path / "open").touch()
        d.finalize(cancel_pending=True, timeout=WAIT)
