"""The `Dispatcher`: isolated pools, one per priority, behind one API."""

from __future__ import annotations

import asyncio
import atexit
import enum
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextvars import copy_context
from queue import Empty
from types import FunctionType, TracebackType
from typing import TypeAlias, overload

from ._backed import BackedPool
from ._batch import Batch, BatchCall, ProgressCallback
from ._config import ConfigLike, check_delay, check_priority, check_timeout, normalize_config
from ._errors import DispatcherClosed, DispatcherError, PoolFull, UnknownPriority
from ._executor import PoolExecutor
from ._job import Job
from ._pool import ErrorHandler, Pool, current_pool, logger, safe_repr
from ._scheduler import Scheduler, join_thread
from ._stats import PoolStats

__all__ = ["Dispatcher", "JobLike"]

JobLike: TypeAlias = "Job | Callable[[], object]"
"""What can be dispatched: a `Job`, or any callable taking no argument."""


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# Looking a member up on an Enum class costs ~70 ns on CPython 3.11; the hot
# path compares against this module constant instead.
_OPEN = _State.OPEN


class Dispatcher:
    """Runs jobs on isolated pools of threads, one pool per priority.

    Each pool is a bulkhead: at most ``workers`` threads, started on demand,
    and a bounded queue, sharing nothing with the other pools, so a pool that is full, slow
    or failing never delays another. `dispatch` blocks while the job's pool
    is full, which bounds memory however fast jobs are produced.

    Args:
        config: The pools. A sequence of `PoolConfig`; or a mapping
            ``{priority: workers}``; or an int ``n`` for a single pool of
            priority 0 with ``n`` workers.
        name: The prefix of the names of the dispatcher's threads.
        on_error: Called as ``on_error(job, exception)`` on the worker thread
            when a job raises. Without it, the failure is logged with its
            traceback on the ``jobdispatch`` logger. Failures of batch jobs go
            to their batch instead.
        propagate_context: Run each job in a copy of the `contextvars` context
            of the code that dispatched it, as `asyncio.to_thread` does.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``config`` is empty, repeats a priority, or holds a bad
            number.

    Example:
        ```python
        with Dispatcher({0: 8, 1: 2}) as dispatcher:
            dispatcher.dispatch(fetch_page, priority=1)
            dispatcher.dispatch(download_archive, priority=0)
        ```
    """

    def __init__(
        self,
        config: ConfigLike,
        *,
        name: str = "jobdispatch",
        on_error: ErrorHandler | None = None,
        propagate_context: bool = True,
    ) -> None:
        configs = normalize_config(config)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable or None, got {on_error!r}")
        if not isinstance(propagate_context, bool):
            raise TypeError(f"propagate_context must be a bool, got {propagate_context!r}")
        self._name = name
        self._owner = object()
        self._pools: dict[int, Pool] = {
            c.priority: (Pool if c.backend is None else BackedPool)(c, owner=self._owner, name=name, on_error=on_error)
            for c in configs
        }
        self._only_pool = next(iter(self._pools.values())) if len(self._pools) == 1 else None
        # The pools on threads, for the hot path of dispatch; a pool with a backend serialises jobs in _route.
        self._thread_pools = {p: pool for p, pool in self._pools.items() if type(pool) is Pool}
        self._only_thread_pool = self._only_pool if type(self._only_pool) is Pool else None
        self._propagate_context = propagate_context
        self._scheduler = Scheduler(f"{name}-timer")
        self._state = _State.OPEN
        self._draining = False
        self._forked = False
        self._closed_reason = "cannot dispatch after finalize() was called"
        self._state_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _abandon, tuple(self._pools.values()), self._scheduler)
        self._finalizer.atexit = False
        with _live_lock:
            _live_dispatchers.add(self)

    # -- dispatching -------------------------------------------------------

    def dispatch(self, job: JobLike, *, priority: int | None = None, timeout: float | None = None) -> None:
        """Send ``job`` to the pool of its priority; block while that pool is full.

        Args:
            job: A `Job`, or any callable taking no argument.
            priority: The pool to use. Overrides ``job.priority()``; required
                for a plain callable unless the dispatcher has a single pool.
            timeout: Seconds to wait for room in the pool; ``None`` waits as
                long as it takes, ``0`` never blocks.

        Raises:
            PoolFull: The pool stayed full for ``timeout`` seconds.
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called.
            TypeError: ``job`` is neither a `Job` nor callable, or a priority
                or timeout has the wrong type.
            ValueError: ``timeout`` is negative or NaN.

        When a job dispatches into its own pool and that pool is full, the
        new job runs at once in the dispatching worker (the caller runs it),
        since waiting for room there could deadlock the pool.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._state is not _OPEN and self._refuses_dispatch():
            raise DispatcherClosed(self._closed_reason)
        # The hot path, inlined: a plain callable for a known pool.
        if priority is None:
            pool = self._only_thread_pool
        elif type(priority) is int:
            pool = self._thread_pools.get(priority)
        else:
            pool = None
        if pool is None or (
            type(job) is not FunctionType and (getattr(job, "do", None) is not None or not callable(job))
        ):
            pool, fn = self._route(job, priority)
        else:
            fn = job
        context = copy_context() if self._propagate_context else None
        # Pool.submit inlined for the common case, a free place: the call
        # alone would add a tenth to the cost of a dispatch.
        try:
            place = pool._take_slot(False)
        except Empty:
            pool.submit(job, fn, None, context, timeout)
            return
        queued = False
        spawn = None
        try:
            with pool._lock:
                if pool._closed and pool.refuses():
                    raise DispatcherClosed(self._closed_reason)
                # Every call first, then the counters, then the hand-off (a C
                # call) last: Ctrl-C strikes only at a call, so it cannot leave
                # a counted job out of the queue.
                spawn = pool._spawning and pool._reserve_worker_locked()
                generation = pool._generation
                queued = True
                generation.pending += 1
                pool._entered += 1
                pool._put_job((job, fn, generation, None, context, place))
            if spawn:
                pool.start_reserved(spawn)
        except BaseException as error:
            pool.enqueue_failed(error, place, queued, spawn, job, fn, None, context)

    def dispatch_later(self, delay: float, job: JobLike, *, priority: int | None = None) -> None:
        """Dispatch ``job`` ``delay`` seconds from now, without blocking.

        The job counts as dispatched at once: `wait` and `finalize` wait for
        it, and ``stats().delayed`` shows it until its time comes. A delayed
        job never holds up other dispatches, other delayed jobs or other
        pools; when its time comes and its pool is full, it takes the next
        place that frees up, ahead of blocked producers.

        Args:
            delay: Seconds from now, a finite number >= 0.
            job: A `Job`, or any callable taking no argument.
            priority: As for `dispatch`.

        Raises:
            ValueError: ``delay`` is negative, NaN or infinite.
            TypeError: ``delay`` is not a number; or as for `dispatch`.
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called.
        """
        self._submit_later(delay, job, priority, None)

    def _submit(self, job: JobLike, priority: int | None, timeout: float | None, call: BatchCall | None) -> None:
        """Dispatch for a batch (``call``) or a caller off the hot path."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._state is not _OPEN and self._refuses_dispatch():
            raise DispatcherClosed(self._closed_reason)
        pool, fn = self._route(job, priority)
        context = copy_context() if self._propagate_context else None
        if call is None:
            pool.submit(job, fn, None, context, timeout)
        else:
            call.fn = fn
            pool.submit(job, call, call.batch, context, timeout)

    def _submit_later(self, delay: float, job: JobLike, priority: int | None, call: BatchCall | None) -> None:
        due = time.monotonic() + check_delay(delay)
        if self._state is not _OPEN and self._refuses_dispatch():
            raise DispatcherClosed(self._closed_reason)
        pool, fn = self._route(job, priority)
        context = copy_context() if self._propagate_context else None
        if call is None:
            pool.add_delayed(job, fn, None, context, due, self._scheduler)
        else:
            call.fn = fn
            pool.add_delayed(job, call, call.batch, context, due, self._scheduler)
        self._scheduler.yield_if_overdue()

    def _route(self, job: JobLike, priority: int | None) -> tuple[Pool, Callable[[], object]]:
        """Return the pool for ``job`` and the callable that runs it."""
        fn = getattr(job, "do", None)
        if fn is None or not callable(fn):
            if not callable(job):
                raise TypeError(f"job must be a Job or a callable, got {safe_repr(job)}")
            fn = job
        elif priority is None:
            get_priority = getattr(job, "priority", None)
            if callable(get_priority):
                priority = get_priority()
                if type(priority) is not int:
                    priority = check_priority(priority, f"{safe_repr(job)}.priority()")
            elif get_priority is not None:  # a plain attribute is accepted too
                priority = check_priority(get_priority, f"{safe_repr(job)}.priority")
        if priority is None:
            if self._only_pool is None:
                raise TypeError(
                    f"priority is required for {safe_repr(job)}: the dispatcher has "
                    f"{len(self._pools)} pools {tuple(self._pools)}"
                )
            pool = self._only_pool
        else:
            found = self._pools.get(priority) if type(priority) is int else None
            pool = self._pool(priority) if found is None else found
        if type(pool) is BackedPool:  # the job runs elsewhere: serialise it now
            fn = pool.prepare(job, fn)
        return pool, fn

    def _pool(self, priority: object) -> Pool:
        number = check_priority(priority)
        try:
            return self._pools[number]
        except KeyError:
            raise UnknownPriority(f"no pool has priority {number!r}; the priorities are {tuple(self._pools)}") from None

    def executor(self, priority: int) -> PoolExecutor:
        """Return a `concurrent.futures.Executor` that submits to one pool.

        ``Dispatcher(8).executor(0)`` drops in for ``ThreadPoolExecutor(8)``.
        Shutting the view down never finalizes the dispatcher.

        Raises:
            UnknownPriority: No pool has this priority.
        """
        return PoolExecutor(self, self._pool(priority).priority)

    async def dispatch_async(self, job: JobLike, *, priority: int | None = None) -> None:
        """Dispatch ``job``, waiting for room in its pool without blocking the event loop.

        Cancelling the awaiting task cancels the dispatch: the job is then
        never run nor counted.

        Args:
            job: A `Job`, or any callable taking no argument.
            priority: As for `dispatch`.

        Raises:
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called.
            TypeError: As for `dispatch`.
        """
        await self._submit_async(job, priority, None)

    async def _submit_async(self, job: JobLike, priority: int | None, call: BatchCall | None) -> None:
        if self._state is not _OPEN and self._refuses_dispatch():
            raise DispatcherClosed(self._closed_reason)
        pool, fn = self._route(job, priority)
        context = copy_context() if self._propagate_context else None
        batch = None
        if call is not None:
            call.fn = fn
            fn, batch = call, call.batch
        loop = asyncio.get_running_loop()
        while True:
            try:
                pool.submit(job, fn, batch, context, 0)
            except PoolFull:
                pass
            else:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            if not pool.add_room_waiter(waiter):
                continue
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.pass_room_on()  # woken, then cancelled: hand the wake-up on
                raise
            finally:
                pool.remove_room_waiter(waiter)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Like `wait`, but awaits without blocking the event loop.

        Returns:
            ``True`` when the jobs are done, ``False`` if ``timeout`` ran out.
        """
        seconds = check_timeout(timeout)
        if self._forked:
            raise DispatcherClosed(self._closed_reason)
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = []
        for pool in self._pools.values():
            for generation in pool.close_generation():
                waiter: asyncio.Future[None] = loop.create_future()
                if pool.add_generation_waiter(generation, waiter):
                    waiters.append(waiter)
        if not waiters:
            return True
        try:
            _, pending = await asyncio.wait(waiters, timeout=seconds)
        finally:
            for waiter in waiters:
                waiter.cancel()  # a no-op on the ones that are done
        return not pending

    # -- barriers ----------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job dispatched before the call has finished.

        Delayed jobs count from the moment `dispatch_later` was called. Jobs
        dispatched by other threads during the wait are not waited for, so
        the call returns even under a steady stream of new work. The
        dispatcher stays open for the next round.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.

        Returns:
            ``True`` when those jobs are done, ``False`` if ``timeout`` ran out.

        Raises:
            DispatcherError: Called from one of the dispatcher's own jobs.
            DispatcherClosed: The dispatcher was inherited through ``fork()``.
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is negative or NaN.
        """
        self._refuse_in_own_worker("wait")
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        return self._wait_until(deadline)

    def _wait_until(self, deadline: float | None) -> bool:
        if self._forked:
            raise DispatcherClosed(self._closed_reason)
        generations = [g for pool in self._pools.values() for g in pool.close_generation()]
        for generation in generations:
            assert generation.done is not None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not generation.done.wait(remaining):
                return False
        return True

    def _pending_anywhere(self) -> bool:
        return any(pool.has_pending() for pool in self._pools.values())

    def batch(self, *, progress: bool | ProgressCallback | None = None) -> Batch:
        """Return a new `Batch`: use it as ``with dispatcher.batch() as b:``.

        ``async with dispatcher.batch() as b:`` works too, and waits without
        blocking the event loop.

        Args:
            progress: ``True`` shows a tqdm progress bar (needs the
                ``jobdispatch[progress]`` extra); a callable is called as
                ``progress(done, total)`` each time a job of the batch ends,
                on the thread that ran it (or that cancelled it), one call at
                a time.

        Raises:
            DispatcherClosed: `finalize` was called.
            ModuleNotFoundError: ``progress=True`` without tqdm installed.
            TypeError: ``progress`` is neither a bool, a callable nor None.
        """
        if self._state is not _OPEN:
            raise DispatcherClosed("cannot start a batch after finalize() was called")
        return Batch(self, progress=progress)

    def _refuses_dispatch(self) -> bool:
        """Whether a dispatch now must be refused (the dispatcher is not open).

        While `finalize` drains without cancelling, the dispatcher's own jobs
        may still dispatch follow-up jobs.
        """
        if not self._draining:
            return True
        pool = current_pool()
        return pool is None or pool.owner is not self._owner

    def _refuse_in_own_worker(self, action: str) -> None:
        pool = current_pool()
        if pool is not None and pool.owner is self._owner:
            raise DispatcherError(f"cannot {action} from inside one of the dispatcher's own jobs: it would deadlock")

    # -- shutdown ----------------------------------------------------------

    def finalize(self, *, cancel_pending: bool = False, timeout: float | None = None) -> None:
        """Wait for every dispatched job, then stop and join every thread.

        Idempotent; a finalized dispatcher refuses new jobs with
        `DispatcherClosed` and cannot be reused.

        Args:
            cancel_pending: Drop the jobs that have not started yet, delayed
                ones included (they are counted in ``stats().cancelled``);
                running jobs still finish.
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            TimeoutError: Jobs or threads were still running when ``timeout``
                ran out. The dispatcher stays closed; call again to finish.
            DispatcherError: Called from one of the dispatcher's own jobs.
            TypeError: ``cancel_pending`` is not a bool, or ``timeout`` not a
                number.
            ValueError: ``timeout`` is negative or NaN.

        While it drains (without ``cancel_pending``), the dispatcher's own
        jobs may still dispatch follow-up jobs, and those are waited for too;
        any other thread gets `DispatcherClosed`.
        """
        self._refuse_in_own_worker("finalize")
        if not isinstance(cancel_pending, bool):
            raise TypeError(f"cancel_pending must be a bool, got {cancel_pending!r}")
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        with self._state_lock:
            if self._state is _State.CLOSED:
                return  # finalized already, or inherited through fork: no threads here
            self._state = _State.CLOSING
            self._draining = not cancel_pending
        for pool in self._pools.values():
            pool.close(draining=not cancel_pending)
        if cancel_pending:
            self._scheduler.cancel_all()
            for pool in self._pools.values():
                pool.cancel_queued()
        # Jobs may dispatch follow-up jobs while we drain: wait until a pass
        # finds nothing left.
        while self._pending_anywhere():
            if not self._wait_until(deadline):
                raise TimeoutError(f"jobs were still running after {seconds} s")
        if not self._scheduler.stop(_remaining(deadline)):
            raise TimeoutError(f"the timer thread was still running after {seconds} s")
        for pool in self._pools.values():
            for thread in pool.stop():
                join_thread(thread, deadline)
                if thread.is_alive():
                    raise TimeoutError(f"thread {thread.name} was still running after {seconds} s")
        with self._state_lock:
            self._state = _State.CLOSED
        self._finalizer.detach()
        with _live_lock:
            _live_dispatchers.discard(self)

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.finalize()
            except BaseException:
                # Interrupted while draining: drop what has not started.
                self.finalize(cancel_pending=True)
                raise
        else:
            self.finalize(cancel_pending=True)

    # -- introspection -----------------------------------------------------

    @property
    def priorities(self) -> tuple[int, ...]:
        """The priorities of the pools, in configured order."""
        return tuple(self._pools)

    @property
    def closed(self) -> bool:
        """Whether `finalize` was called."""
        return self._state is not _OPEN

    @overload
    def stats(self) -> dict[int, PoolStats]: ...
    @overload
    def stats(self, priority: int) -> PoolStats: ...
    def stats(self, priority: int | None = None) -> PoolStats | dict[int, PoolStats]:
        """Return a snapshot of one pool's counters, or of every pool's.

        Args:
            priority: The pool; leave it out for ``{priority: PoolStats}``.

        Raises:
            UnknownPriority: No pool has this priority.
        """
        if priority is None:
            return {p: pool.stats() for p, pool in self._pools.items()}
        return self._pool(priority).stats()

    def available_workers(self, priority: int) -> int:
        """Return how many more jobs the pool could start right now."""
        return self._pool(priority).stats().idle

    def total_workers(self, priority: int) -> int:
        """Return the pool's limit on threads."""
        return self._pool(priority).workers

    def queued_jobs(self, priority: int) -> int:
        """Return how many jobs wait in the pool's queue."""
        return self._pool(priority).stats().queued

    def __repr__(self) -> str:
        pools = "; ".join(pool.describe() for pool in self._pools.values())
        count = len(self._pools)
        return f"<Dispatcher {self._name!r} {self._state.value}, {count} pool{'s' if count > 1 else ''}: {pools}>"

    # -- process events ----------------------------------------------------

    def _cancel_delayed_at_exit(self) -> None:
        if self._state is _State.OPEN:
            pending = sum(pool.stats().delayed for pool in self._pools.values())
            if pending:
                logger.warning(
                    "interpreter exit: cancelling %d delayed jobs of dispatcher %r that was not finalized",
                    pending,
                    self._name,
                )
                self._scheduler.cancel_all()

    def _activity(self) -> tuple[int, int]:
        """Return (jobs not over, jobs ever over), summed over the pools."""
        stats = [pool.stats() for pool in self._pools.values()]
        return (
            sum(s.busy + s.queued + s.delayed for s in stats),
            sum(s.completed + s.failed + s.cancelled for s in stats),
        )

    def _forget_after_fork(self) -> None:
        self._state_lock = threading.Lock()
        self._state = _State.CLOSED
        self._forked = True
        self._closed_reason = "cannot use a dispatcher inherited through fork(): create a new one in the child"
        self._finalizer.detach()
        self._scheduler.forget_after_fork()
        for pool in self._pools.values():
            pool.forget_after_fork()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _abandon(pools: tuple[Pool, ...], scheduler: Scheduler) -> None:
    """Stop the threads of a dispatcher that was collected without finalize.

    Runs in whatever thread dropped the last reference, so it never blocks:
    delayed jobs not yet due are cancelled (and logged), queued jobs still
    run, then every worker exits.
    """
    delayed = sum(pool.stats().delayed for pool in pools)
    if delayed:
        logger.warning("a dispatcher was garbage-collected without finalize(): %d delayed jobs cancelled", delayed)
    scheduler.cancel_all()
    for pool in pools:
        pool.cancel_due()
        pool.close(draining=False)
        pool.stop()
    scheduler.stop(0)


# Open dispatchers, for the exit hook. A WeakSet is not thread-safe by itself.
_live_dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
_live_lock = threading.Lock()


def _live() -> list[Dispatcher]:
    with _live_lock:
        return list(_live_dispatchers)


@atexit.register
def _finalize_live_dispatchers() -> None:
    """Run the queued jobs of every dispatcher left open at interpreter exit.

    Jobs of one dispatcher may feed another, so all of them are drained
    together, until a whole pass over them finds nothing running and nothing
    new finished, before any is finalized.
    """
    dispatchers = [d for d in _live() if d._state is _OPEN]
    for dispatcher in dispatchers:
        dispatcher._cancel_delayed_at_exit()
    last_seen = None
    while True:
        for dispatcher in dispatchers:
            dispatcher.wait()
        activity = [dispatcher._activity() for dispatcher in dispatchers]
        if all(running == 0 for running, _ in activity) and activity == last_seen:
            break
        last_seen = activity
    for dispatcher in _live():
        dispatcher.finalize()


def _after_fork_in_child() -> None:
    # The child has none of the parent's threads: its dispatchers cannot run
    # anything, so they are closed; new ones work as usual.
    global _live_dispatchers, _live_lock
    _live_lock = threading.Lock()  # it may have been held by another thread at the fork
    for dispatcher in list(_live_dispatchers):
        dispatcher._forget_after_fork()
    _live_dispatchers = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
