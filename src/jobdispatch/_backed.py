"""A pool whose jobs run on a backend: processes, a Dask cluster, any Executor.

The bulkhead is the one of `Pool`, unchanged: places, backpressure,
generations and counters. Only what runs the jobs differs. The pool's single
thread is a feeder: it takes a free in-flight slot first (``workers`` of
them), then the next queued job, and submits it to the engine; so at most
``workers`` jobs are on the engine and ``queue_size`` more wait here, and
`Dispatcher.dispatch` blocks while both are full, as for threads. The
engine's done-callback does the accounting (`job_over`) and frees the slot;
it never blocks and never submits.

Jobs are serialised at dispatch (`BackedPool.prepare`), so a job that cannot
travel fails there, uncounted, with `JobNotSerializable`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

from ._backends import Engine, engine_for, serialise
from ._batch import BatchCall
from ._calls import _Call, cancel_and_notify
from ._config import PoolConfig
from ._errors import EngineBroken
from ._outcome import CancelledBeforeStart, ReportedElsewhere, safe_repr
from ._pool import ErrorHandler, Pool, count_worker_in, job_over
from ._remote import Payload
from ._rounds import Generation, Round
from ._scheduler import Run

if TYPE_CHECKING:
    from ._batch import Batch

__all__ = ["BackedPool", "RemoteCall"]


class RemoteCall:
    """A job serialised for an engine: what a `BackedPool` queues instead of the job itself.

    Calling it runs the job on the engine and waits for it; the pool's feeder
    thread never does, but the dispatching thread does when the pool could
    not start its feeder.
    """

    __slots__ = ("engine", "future", "payload", "told")

    def __init__(self, engine: Engine, payload: Payload, future: Future[Any] | None) -> None:
        self.engine = engine
        self.payload = payload
        self.future = future  # the executor view's future, which gets the result
        self.told = False  # the future was told the job starts, or will never start

    def start(self) -> bool:
        """Mark the executor view's future running; ``False`` if it was cancelled."""
        if self.future is None:
            return True
        self.told = True  # before the call that tells it: the future is never told twice
        return self.future.set_running_or_notify_cancel()

    def settle(self, result: object, error: BaseException | None) -> None:
        """Pass the outcome to the executor view's future, if any."""
        if self.future is not None:
            if error is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(error)

    def cancel_unstarted(self) -> None:
        """Cancel the executor view's future, which `concurrent.futures.wait` then sees done: the job was dropped."""
        if self.future is None:
            return
        if self.told:  # it began (Ctrl-C struck as it did): a future still pending is cancelled
            self.future.cancel()
            return
        self.told = True
        cancel_and_notify(self.future)

    def __call__(self) -> None:
        if not self.start():
            raise CancelledBeforeStart
        done = threading.Event()
        engine_future = self.engine.submit(self.payload)
        self.engine.when_done(engine_future, lambda _: done.set())
        done.wait()
        result, error = self.engine.outcome(engine_future, self.future is not None)
        if self.future is not None:
            self.settle(result, error)
            if error is not None:
                raise ReportedElsewhere
        elif error is not None:
            raise error

    def __repr__(self) -> str:
        return f"<job serialised for {self.engine.describe()}>"


class BackedPool(Pool):
    """A pool that runs its jobs on a backend, with the limits and counters of a thread pool."""

    __slots__ = ("_engine", "_in_flight")

    def __init__(
        self,
        config: PoolConfig,
        *,
        index: int,
        round_: Round,
        name: str,
        on_error: Callable[[], ErrorHandler | None],
    ) -> None:
        super().__init__(config, index=index, round_=round_, name=name, on_error=on_error)
        self._engine = engine_for(config.backend)
        self._thread_limit = 1  # the feeder
        self._in_flight = threading.Semaphore(config.workers)

    def prepare(self, job: object, fn: Callable[[], object]) -> Callable[[], object]:
        """Serialise a job at dispatch; return what the pool queues for it.

        Raises:
            JobNotSerializable: The job cannot be serialised for the engine.
        """
        if isinstance(fn, _Call):  # the executor view: the call's result comes back
            call = (fn.fn, fn.args, fn.kwargs, True)
            future: Future[Any] | None = fn.future
        else:
            call, future = (fn, (), {}, False), None
        return RemoteCall(self._engine, serialise(self._engine, call, safe_repr(job)), future)

    def _worker_main(self) -> None:
        _feed(self)

    def send(self, job: object, fn: Callable[[], object], generation: Generation, batch: Batch | None) -> bool:
        """Submit one queued job to the engine; return whether it took the in-flight slot."""
        remote = fn.fn if isinstance(fn, BatchCall) else fn
        if generation.cancelled:  # finalize(cancel_pending=True) dropped it
            if isinstance(remote, RemoteCall | Run):
                remote.cancel_unstarted()
            job_over(self, CancelledBeforeStart, generation, batch, fn)
            return False
        started = fn.batch._start(fn) if isinstance(fn, BatchCall) else True
        if started and type(remote) is Run:  # a delayed job: its handle decides between cancel and send
            try:
                remote = remote.handle._claim()
            except CancelledBeforeStart:
                started = False
        if not started:
            job_over(self, CancelledBeforeStart, generation, batch, fn)
            return False
        assert isinstance(remote, RemoteCall)  # what prepare() made, and all that reaches a backed pool
        if not isinstance(fn, BatchCall) and not remote.start():
            job_over(self, CancelledBeforeStart, generation, batch, fn)
            return False
        began = time.perf_counter()
        try:
            future = self._engine.submit(remote.payload)
        except Exception as error:
            broken = EngineBroken(
                f"pool {self.priority} could not send job {safe_repr(job)}: its engine, "
                f"{self._engine.describe()}, refused it ({type(error).__name__}: {error})"
            )
            broken.__cause__ = error
            self._over(job, fn, remote, generation, batch, began, None, broken)
            return False
        self._engine.when_done(future, partial(self._done, job, fn, remote, generation, batch, began))
        return True

    def _done(
        self,
        job: object,
        fn: Callable[[], object],
        remote: RemoteCall,
        generation: Generation,
        batch: Batch | None,
        began: float,
        future: Any,
    ) -> None:
        """Count the job over and free its slot: the done-callback, on a thread of the engine."""
        try:
            try:
                result, error = self._engine.outcome(future, remote.future is not None)
            except BaseException as problem:  # the engine could not say: count it failed
                result, error = None, problem
            del future
            self._over(job, fn, remote, generation, batch, began, result, error)
        finally:
            self._in_flight.release()

    def _over(
        self,
        job: object,
        fn: Callable[[], object],
        remote: RemoteCall,
        generation: Generation,
        batch: Batch | None,
        began: float,
        result: object,
        error: BaseException | None,
    ) -> None:
        kind: BaseException | type[ReportedElsewhere] | None = error
        try:
            if remote.future is not None:
                remote.settle(result, error)
                if error is not None:
                    kind = ReportedElsewhere
            elif error is not None:
                self._report(job, error, batch, time.perf_counter() - began)
            if isinstance(fn, BatchCall):
                fn.ran = True
            run = fn.fn if isinstance(fn, BatchCall) else fn
            if type(run) is Run:
                run.handle._finish()
        finally:
            job_over(self, kind, generation, batch, fn)


def _feed(pool: BackedPool) -> None:
    """Send the jobs of ``pool`` to its engine, ``workers`` at a time, until a ``None`` sentinel arrives."""
    if not count_worker_in(pool):
        return
    get = pool._jobs.get
    take_slot = pool._in_flight.acquire
    free_slot = pool._in_flight.release
    holding = False
    while True:
        if not holding:
            take_slot()  # a slot first: a job taken from the queue always has one
            holding = True
        item = get()
        if item is None:
            free_slot()
            with pool._lock:
                pool._sentinels -= 1
                pool._live -= 1
            return
        job, fn, generation, batch, _ = item
        del item
        if pool.send(job, fn, generation, batch):
            holding = False  # the job holds it now; its done-callback frees it
        del job, fn, generation, batch
