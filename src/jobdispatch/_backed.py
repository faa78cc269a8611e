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

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

from ._backends import Engine, engine_for, serialise
from ._batch import BatchCall
from ._calls import _Call, cancel_and_notify
from ._config import WAIT_SLICE, PoolConfig
from ._errors import EngineBroken
from ._outcome import CancelledBeforeStart, ReportedElsewhere, interrupts_caller, safe_repr
from ._pool import ErrorHandler, Pool, count_worker_in, job_over
from ._remote import Payload
from ._rounds import Generation, Round, Running, finish_generation, role
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
        try:
            result, error = self._run()
        except BaseException as problem:
            if interrupts_caller(problem):  # Ctrl-C on the main thread: the caller's, not the job's
                self.settle(None, problem)  # the future never stays running
                raise
            result, error = None, problem.with_traceback(None)  # see BackedPool._done
        if self.future is not None:
            self.settle(result, error)
            if error is not None:
                raise ReportedElsewhere
        elif error is not None:
            raise error

    def _run(self) -> tuple[object, BaseException | None]:
        try:
            engine_future = self.engine.submit(self.payload)
        except Exception as error:
            raise engine_broken(self.engine, "could not send the job", "refused it", error) from error
        done = threading.Event()
        self.engine.when_done(engine_future, lambda _: done.set())
        lost = self.engine.lost(engine_future)
        if lost is not None:
            return None, engine_broken(self.engine, "sent the job", "lost it", lost)
        while not done.wait(WAIT_SLICE):  # in slices: see WAIT_SLICE (the dispatching thread may be the main one)
            pass
        return self.engine.outcome(engine_future, self.future is not None)

    def __repr__(self) -> str:
        return f"<job serialised for {self.engine.describe()}>"


def engine_broken(engine: Engine, subject: str, what: str, error: BaseException) -> EngineBroken:
    """Return the `EngineBroken` a job fails with when ``engine`` refused or lost it (``what``)."""
    broken = EngineBroken(f"{subject}: its engine, {engine.describe()}, {what} ({type(error).__name__}: {error})")
    broken.__cause__ = error
    return broken


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

    def send(
        self,
        job: object,
        fn: Callable[[], object],
        generation: Generation,
        batch: Batch | None,
        context: contextvars.Context | None,
    ) -> bool:
        """Submit one queued job to the engine; return whether it took the in-flight slot."""
        remote = fn.fn if isinstance(fn, BatchCall) else fn
        if generation.cancelled:  # finalize(cancel_pending=True) dropped it
            if isinstance(remote, RemoteCall | Run):
                remote.cancel_unstarted()
            job_over(self, CancelledBeforeStart, generation, batch, fn)
            return False
        started = fn.batch._start(fn) if isinstance(fn, BatchCall) else True
        if not started and type(remote) is Run:
            remote.cancel_unstarted()  # its batch dropped it: the handle learns that it never runs
        elif started and type(remote) is Run:  # a delayed job: its handle decides between cancel and send
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
        # The engine is the user's code: whatever it raises (a BaseException
        # too), the job is counted over, and the feeder lives on.
        payload = remote.payload
        if type(payload) is tuple:  # an engine in this process runs the job as a thread of the pool would
            call, args, kwargs, keep = payload
            payload = (_InRound(generation, context, call), args, kwargs, keep)
        try:
            future = self._engine.submit(payload)
        except BaseException as error:
            self._over(job, fn, remote, generation, batch, began, None, self._broken(job, "refused it", error))
            return False
        # Counted over once, by whichever takes ``claim`` first: the
        # done-callback, or this thread if the engine will never call it.
        claim = threading.Lock()
        try:
            self._engine.when_done(future, partial(self._done, claim, job, fn, remote, generation, batch, began))
            lost = self._engine.lost(future)
        except BaseException as error:
            lost = error
        if lost is None or not claim.acquire(False):
            return True  # the done-callback counts it over and frees the slot
        self._over(job, fn, remote, generation, batch, began, None, self._broken(job, "lost it", lost))
        return False

    def _broken(self, job: object, what: str, error: BaseException) -> EngineBroken:
        subject = f"pool {self.priority} {'could not send' if what == 'refused it' else 'sent'} job {safe_repr(job)}"
        return engine_broken(self._engine, subject, what, error)

    def _done(
        self,
        claim: threading.Lock,
        job: object,
        fn: Callable[[], object],
        remote: RemoteCall,
        generation: Generation,
        batch: Batch | None,
        began: float,
        future: Any,
    ) -> None:
        """Count the job over and free its slot: the done-callback, on a thread of the engine."""
        if not claim.acquire(False):
            return  # counted over already, when the engine lost it
        if remote.future is not None and self._engine.slow_results:
            # Fetching the result is a round trip to a worker, and the
            # engine's callback thread serves every pool on it (Dask has one
            # per process): the fetch gets a thread of its own, so that a
            # large or slow result holds up no other job's accounting. At
            # most ``workers`` at once: each holds its job's slot.
            fetcher = threading.Thread(
                target=self._settle,
                args=(job, fn, remote, generation, batch, began, future),
                name=f"{self._thread_name}-result",
                daemon=True,
            )
            try:
                fetcher.start()
            except Exception:  # no thread to be had: fetch it here
                pass
            else:
                return
        self._settle(job, fn, remote, generation, batch, began, future)

    def _settle(
        self,
        job: object,
        fn: Callable[[], object],
        remote: RemoteCall,
        generation: Generation,
        batch: Batch | None,
        began: float,
        future: Any,
    ) -> None:
        """Fetch the job's outcome, count it over and free its slot."""
        try:
            try:
                result, error = self._engine.outcome(future, remote.future is not None)
            except BaseException as problem:  # the engine could not say: count it failed
                # Without its traceback: its frames (outcome's, then this
                # one's and the engine's, by f_back) hold the engine's future,
                # which the job's exception must not keep alive.
                result, error = None, problem.with_traceback(None)
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
        """Count a job that was sent over, then tell whoever waits for its outcome.

        The counters and the job's place come first: what is told runs code
        of the user's (``on_error``, a future's callbacks, a batch's
        progress) on a thread of the engine, and that code may dispatch into
        this very pool. Its place then waits for it, as a thread of the pool
        would run it, where holding the place would leave it blocked for
        ever on a full pool, and the engine's thread with it. The barrier
        and the batch are told last, as for a job on threads.
        """
        with self._lock:
            if error is None:
                self._completed += 1
            else:
                self._left_otherwise += 1
                self._failed += 1
            if self._wanted:
                self.free_place_locked()
            else:
                self._room += 1
        try:
            if remote.future is not None:
                remote.settle(result, error)
            elif error is not None:
                self._report(job, error, batch, time.perf_counter() - began)
            if isinstance(fn, BatchCall):
                fn.ran = True
            run = fn.fn if isinstance(fn, BatchCall) else fn
            if type(run) is Run:
                run.handle._finish()
        finally:
            with self._lock:
                finish_generation(generation)
            if batch is not None:
                batch._job_over(fn, cancelled=False)


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
        job, fn, generation, batch, context = item
        del item
        if pool.send(job, fn, generation, batch, context):
            holding = False  # the job holds it now; its done-callback frees it
        del job, fn, generation, batch, context


class _InRound:
    """A job for an engine in this process, run as a thread of its pool would run it.

    In the dispatching code's context, and in the job's round: its follow-up
    jobs join that round (and are let in while `Dispatcher.finalize`
    drains), and `Dispatcher.wait` inside it raises instead of deadlocking.
    Pickled (an engine said to be in this process is not), it is the bare
    call: the round and the context stay here.
    """

    __slots__ = ("call", "context", "generation")

    def __init__(self, generation: Generation, context: contextvars.Context | None, call: Callable[..., Any]) -> None:
        self.generation = generation
        self.context = context
        self.call = call

    def __call__(self, *args: Any, **kwargs: Any) -> object:
        running = role.running
        if running is None:
            running = role.running = Running()
        previous, running.generation = running.generation, self.generation
        try:
            if self.context is None:
                return self.call(*args, **kwargs)
            return self.context.run(self.call, *args, **kwargs)
        finally:
            running.generation = previous

    def __reduce__(self) -> str | tuple[Any, ...]:
        return _bare, (self.call,)


def _bare(call: Callable[..., Any]) -> Callable[..., Any]:
    return call
