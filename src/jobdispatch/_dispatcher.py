"""The `Dispatcher`: isolated pools, one per priority, behind one API."""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextvars import Context, copy_context
from functools import partial
from types import BuiltinFunctionType, FunctionType, MethodType, TracebackType
from typing import Any, TypeAlias, TypeVar, TypeVarTuple, overload

from . import _aio
from ._backed import BackedPool
from ._batch import Batch, BatchCall, ProgressCallback
from ._calls import submit_call
from ._config import (
    ConfigLike,
    check_delay,
    check_int,
    check_priority,
    check_timeout,
    normalize_config,
    wait_in_slices,
)
from ._errors import DispatcherClosed, DispatcherError, UnknownPriority
from ._futures import PoolExecutor
from ._job import Job, Named, check_name, job_name
from ._many import Chunk
from ._outcome import NoThread, logger, mark_queued, safe_repr, was_queued
from ._pool import ErrorHandler, Pool, take_contended
from ._progress import TqdmProgress, wait_reporting
from ._rounds import Generation, Round, runs_job_of, runs_jobs_of
from ._rounds import role as _thread_role
from ._scheduler import DelayedJob, Run, Scheduler, describe_job, join_thread
from ._state import State
from ._stats import PoolStats
from ._threads import ThreadPool

_Ts = TypeVarTuple("_Ts")

__all__ = ["Dispatcher", "JobLike"]

_T = TypeVar("_T")

JobLike: TypeAlias = "Job | Callable[[], object]"
"""What can be dispatched: a `Job`, or any callable taking no argument."""


# Looking a member up on an Enum class costs ~70 ns on CPython 3.11; the hot
# path compares against this module constant instead.
_OPEN = State.OPEN
#: How many jobs of a list `Dispatcher.dispatch_many` routes before it queues them.
_LISTED_AHEAD = 64

# Code flags of coroutine functions, async generators and @types.coroutine generators.
_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_USE_ASYNCIO = (
    ": jobdispatch runs plain callables on threads. Await coroutines in asyncio instead "
    "(asyncio.create_task, or Dispatcher.run for a blocking function)"
)


def _is_async(fn: object) -> bool:
    """Whether calling ``fn`` would only make a coroutine or an async generator."""
    code = getattr(fn, "__code__", None)  # functions, and methods through their function
    if code is not None:
        return bool(getattr(code, "co_flags", 0) & _ASYNC_FLAGS)
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


# Classes whose instances are Jobs dispatch() routes inline: ``do`` and
# ``priority`` are plain (not coroutine) functions of the class. Filled by
# _route the first time it sees a Job of the class; only ever grows.
_PLAIN_JOB_CLASSES: dict[type, FunctionType] = {}  # the class, and the do function seen on it
_PLAIN_GETATTRIBUTE: object = object.__getattribute__
_last_sync_function: object = None  # the last plain function dispatch() found not to be a coroutine function
# Callables that cannot be Jobs: _route looks for no ``do`` on them.
_PLAIN_CALLABLES = frozenset({FunctionType, MethodType, BuiltinFunctionType, functools.partial})


def _remember_if_sync(function: object) -> bool:
    """Whether ``function`` is a plain function, not a coroutine function; if so, dispatch() remembers it."""
    global _last_sync_function
    if type(function) is FunctionType and not function.__code__.co_flags & _ASYNC_FLAGS:
        _last_sync_function = function
        return True
    return False


def _plain_do(cls: type) -> FunctionType | None:
    """Return the ``do`` function of a Job class that dispatch() may route inline, or ``None``."""
    do = getattr(cls, "do", None)
    priority = getattr(cls, "priority", None)
    plain = (
        type(do) is FunctionType
        and type(priority) is FunctionType
        and not do.__code__.co_flags & _ASYNC_FLAGS
        and getattr(cls, "__getattribute__", None) is _PLAIN_GETATTRIBUTE
    )
    return do if plain else None


def _checked_priority(job: object, priority: object, what: str) -> int:
    """Return what ``job.priority()`` (``what``) gave as an int; the error text is built only when raised."""
    if type(priority) is not int and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError(f"{safe_repr(job)}.{what} must be an int, got {priority!r}")
    return int(priority)


def _note_priority_error(job: object, error: Exception) -> None:
    with contextlib.suppress(Exception):
        error.add_note(f"jobdispatch: raised by {job_name(job)}.priority(), called to choose its pool")


def _has_priority_method(job: object) -> bool:
    """Whether ``job.priority`` can be called (then an error of the call is the job's own)."""
    try:
        return callable(getattr(job, "priority", None))
    except Exception:  # a property that raises: _route reads it again and raises that
        return False


def _weak_hook(dispatcher: Dispatcher) -> Callable[[], ErrorHandler | None]:
    """Return a function that finds ``on_error`` through a weak reference to ``dispatcher``."""
    reference = weakref.ref(dispatcher)

    def on_error() -> ErrorHandler | None:
        owner = reference()
        return None if owner is None else owner._on_error

    return on_error


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
        self._on_error = on_error
        self._round = Round(self._owner, len(configs))  # the jobs the next barrier waits for
        self._closed_rounds: list[Round] = []  # closed by a barrier, not yet seen finished
        self._round_lock = threading.Lock()
        # The pools reach on_error through a weak reference to the dispatcher,
        # so that a hook referring to it (a bound method, a closure) cannot
        # keep a dropped dispatcher, and its threads, alive.
        hook = _weak_hook(self)
        self._pools: dict[int, Pool] = {
            c.priority: (ThreadPool if c.backend is None else BackedPool)(
                c, index=i, round_=self._round, name=name, on_error=hook
            )
            for i, c in enumerate(configs)
        }
        self._only_pool = next(iter(self._pools.values())) if len(self._pools) == 1 else None
        # The pools on threads, for the hot path of dispatch; a pool with a backend serialises jobs in _route.
        self._thread_pools = {p: pool for p, pool in self._pools.items() if type(pool) is ThreadPool}
        self._only_thread_pool = self._only_pool if type(self._only_pool) is ThreadPool else None
        self._propagate_context = propagate_context
        self._scheduler = Scheduler(f"{name}-timer")
        self._state = State.OPEN  # one value, read once by each caller
        self._forked = False
        self._closed_reason = "cannot dispatch after finalize() was called"
        self._state_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _abandon, tuple(self._pools.values()), self._scheduler)
        self._finalizer.atexit = False
        _add_live(self)

    # -- dispatching -------------------------------------------------------

    def dispatch(
        self,
        job: Job | Callable[[*_Ts], object],
        /,
        *args: *_Ts,
        priority: int | None = None,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        """Send ``job`` to the pool of its priority; block while that pool is full.

        Args:
            job: A `Job`, or any callable.
            *args: Arguments to call ``job`` with (a callable only), bound at
                the call: ``dispatch(fetch, url)`` inside a loop runs each
                ``url``, where a ``lambda: fetch(url)`` would see only the last.
            priority: The pool to use. Overrides ``job.priority()``; required
                for a plain callable unless the dispatcher has a single pool.
            timeout: Seconds to wait for room in the pool; ``None`` waits as
                long as it takes, ``0`` never blocks.
            name: How failure reports (exception notes, ``on_error``, the
                log) name the job. By default: the job's ``name`` attribute,
                the function's qualified name, or its ``repr()``.

        Raises:
            PoolFull: The pool stayed full for ``timeout`` seconds.
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called.
            TypeError: ``job`` is neither a `Job` nor callable; it is a `Job`
                class rather than an instance; it is a coroutine function or
                a coroutine (use asyncio for those); or a priority, timeout or
                name has the wrong type.
            ValueError: ``timeout`` is negative or NaN.
            Exception: Whatever ``job.priority()`` raised, with a note that
                says so.

        A job dispatched from inside one of the dispatcher's own jobs is a
        follow-up: it joins the round of the job that dispatched it, so
        `wait` waits for it too. When a job dispatches into its own pool and
        that pool is full, the new job runs at once in the dispatching worker
        (the caller runs it), since waiting for room there could deadlock the
        pool.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        state = self._state
        if state is not _OPEN and self._refuses(state):
            raise DispatcherClosed(self._closed_reason)
        # The hot paths, inlined: a plain function, or a Job of a class seen
        # before, for a known pool. Anything else is routed by _route.
        # _known_route does the same as a call: keep the two alike.
        kind = type(job)
        pool: Pool | None = None
        fn: Callable[[], object] = job  # type: ignore[assignment]
        if name is not None:
            pass
        elif kind is FunctionType or kind is MethodType:
            # A function (a method's function) checked once, not each time it
            # is dispatched: a producer loop sends the same one over and over.
            function = job if kind is FunctionType else job.__func__  # type: ignore[union-attr]
            if function is _last_sync_function or _remember_if_sync(function):
                if priority is None:
                    pool = self._only_thread_pool
                elif type(priority) is int:
                    pool = self._thread_pools.get(priority)
                if args and pool is not None:  # bound as _route binds them: reports name the call with them
                    job = fn = partial(job, *args)  # type: ignore[assignment, arg-type, operator, misc]
        elif args:
            pass
        elif (do := _PLAIN_JOB_CLASSES.get(kind)) is not None:
            fn = job.do  # type: ignore[union-attr]
            # The class's own do (not one the instance set, nor a later one of
            # the class), and a priority() method: else _route decides.
            if type(fn) is MethodType and fn.__func__ is do:
                if priority is None:
                    # Called as a method, with no bound method made: an
                    # instance whose priority is no method fails the call
                    # before any code of its own runs, and _route reads it.
                    try:
                        priority = job.priority()  # type: ignore[union-attr]
                    except Exception as error:
                        if _has_priority_method(job):
                            _note_priority_error(job, error)
                            raise
                        priority = None
                    else:
                        if type(priority) is not int:
                            priority = _checked_priority(job, priority, "priority()")
                        pool = self._thread_pools.get(priority)
                elif type(priority) is int:
                    pool = self._thread_pools.get(priority)
        if pool is None:  # a pool is found above only for an int priority, or None on the only pool
            pool, fn, reported = self._route(job, priority, args, name)
        else:
            reported = job
        context = copy_context() if self._propagate_context else None
        running = _thread_role.running
        # Pool.submit inlined for the common case, room in the pool: the
        # call alone would add a tenth to the cost of a dispatch. The lock is
        # taken inside the try block: a Ctrl-C that strikes as acquire()
        # returns finds it owned below (a `with` costs twice as much).
        lock = pool._lock
        queued = False
        spawn = None
        try:
            if not lock.acquire(False):
                take_contended(lock)
            if pool._state is not _OPEN and pool.refuses():
                lock.release()  # before the raise: see Pool.submit
                raise DispatcherClosed(self._closed_reason)
            if pool._room:
                # Every call first, then the counters, then the hand-off
                # (a C call) last: Ctrl-C strikes only at a call, so it
                # cannot leave a counted job out of the queue.
                try:
                    spawn = pool._spawning and pool._reserve_worker_locked()
                except NoThread:
                    lock.release()  # before the raise: see Pool.submit
                    raise
                generation = pool._generation if running is None else pool.join_round_locked(running)
                queued = True
                pool._room -= 1
                generation.pending += 1
                pool._put_job((reported, fn, generation, None, context))
            lock.release()
            if spawn:
                pool.start_reserved(spawn)
        except BaseException as error:
            if lock._is_owned():  # type: ignore[attr-defined]
                lock.release()
            if queued:
                mark_queued(error)
            pool.enqueue_failed(error, spawn, reported, fn, None, context)
            return
        if not queued:  # the pool is full (outside the except block: no chained error)
            pool.submit(reported, fn, None, context, timeout)

    def submit(
        self,
        fn: Callable[..., _T],
        /,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Future[_T]:
        """Dispatch ``fn(*args, **kwargs)`` as one job; return a future of its result.

        Backpressure is that of `dispatch`: the call blocks while the pool is
        full. The call's exception goes to the future, not to ``on_error``
        nor the log; the job counts as failed.

        Args:
            fn: The function to call.
            *args: Its positional arguments.
            priority: The pool, as for `dispatch`.
            timeout: Seconds to wait for room, as for `dispatch`.
            name: A name for the call, shown in its ``repr``.
            **kwargs: Its keyword arguments.

        Raises:
            PoolFull: The pool stayed full for ``timeout`` seconds.
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called.
            TypeError: ``fn`` is not callable, or ``name`` not a str.
        """
        return submit_call(self, fn, args, kwargs, priority=priority, timeout=timeout, name=name)

    def dispatch_later(
        self,
        delay: float,
        job: Job | Callable[[*_Ts], object],
        /,
        *args: *_Ts,
        priority: int | None = None,
        name: str | None = None,
    ) -> DelayedJob:
        """Dispatch ``job`` ``delay`` seconds from now, without blocking.

        The job counts as dispatched at once: `wait` and `finalize` wait for
        it, and ``stats().delayed`` shows it until its time comes. A delayed
        job never holds up other dispatches, other delayed jobs or other
        pools; when its time comes and its pool is full, it takes the next
        place that frees up, ahead of blocked producers.

        Args:
            delay: Seconds from now, a finite number >= 0.
            job: A `Job`, or any callable.
            *args: As for `dispatch`.
            priority: As for `dispatch`.
            name: As for `dispatch`.

        Returns:
            A `DelayedJob`, to see when the job is due or to cancel it.

        Raises:
            ValueError: ``delay`` is negative, NaN or infinite.
            TypeError: ``delay`` is not a number; or as for `dispatch`.
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called, or the interpreter is
                exiting (delayed jobs are cancelled then).
            RuntimeError: The timer thread could not start (a thread limit).
        """
        return self._submit_later(delay, job, priority, None, args, name)

    def _submit(
        self,
        job: JobLike,
        priority: int | None,
        timeout: float | None,
        call: BatchCall | None,
        args: tuple[object, ...] = (),
        name: str | None = None,
    ) -> None:
        """Dispatch for a batch (``call``) or a caller off the hot path."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        self._check_open()
        pool, fn, reported = self._route(job, priority, args, name)
        context = copy_context() if self._propagate_context else None
        if call is None:
            pool.submit(reported, fn, None, context, timeout)
        else:
            call.fn = fn
            pool.submit(reported, call, call.batch, context, timeout)

    def _submit_later(
        self,
        delay: float,
        job: JobLike,
        priority: int | None,
        call: BatchCall | None,
        args: tuple[object, ...] = (),
        name: str | None = None,
    ) -> DelayedJob:
        due = time.monotonic() + check_delay(delay)
        self._check_open()
        pool, fn, reported = self._route(job, priority, args, name)
        context = copy_context() if self._propagate_context else None
        handle = DelayedJob(self._scheduler, due, fn, describe_job(reported))
        if call is None:
            pool.add_delayed(reported, Run(handle), None, context, handle, self._scheduler)
        else:
            call.fn = Run(handle)
            pool.add_delayed(reported, call, call.batch, context, handle, self._scheduler)
        self._scheduler.yield_if_overdue()
        return handle

    def _route(
        self, job: JobLike, priority: int | None, args: tuple[object, ...] = (), name: str | None = None
    ) -> tuple[Pool, Callable[[], object], object]:
        """Return the pool for ``job``, the callable that runs it, and the job as reports name it.

        Every check of what can be dispatched lives here; error texts are
        built only when raised.
        """
        kind = type(job)
        fn = None if kind in _PLAIN_CALLABLES else getattr(job, "do", None)
        if fn is None or not callable(fn):
            if kind is FunctionType and job.__code__.co_flags & _ASYNC_FLAGS:  # type: ignore[union-attr]
                raise TypeError(f"job {job_name(job)} is a coroutine function{_USE_ASYNCIO}")
            if not callable(job):
                if inspect.isawaitable(job):
                    raise TypeError(f"job must be a Job or a callable, got {safe_repr(job)}{_USE_ASYNCIO}")
                raise TypeError(f"job must be a Job or a callable, got {safe_repr(job)}")
            fn = job
            if args:  # reports name the call with its arguments
                if kind is not FunctionType and _is_async(job):
                    raise TypeError(f"job {job_name(job)} is a coroutine function{_USE_ASYNCIO}")
                job = fn = functools.partial(job, *args)
                kind = FunctionType  # checked
        else:
            if isinstance(job, type):
                raise TypeError(
                    f"job must be a Job instance, got the class {job.__qualname__} itself: "
                    f"dispatch {job.__qualname__}(...) instead"
                )
            if args:
                raise TypeError(f"positional arguments are for a callable job, not for the Job {safe_repr(job)}")
            if priority is None:
                priority = self._job_priority(job)
        if kind is not FunctionType and kind is not BuiltinFunctionType and _is_async(fn):
            raise TypeError(f"job {job_name(job)} is a coroutine function{_USE_ASYNCIO}")
        if fn is not job and (do := _plain_do(type(job))) is not None:
            _PLAIN_JOB_CLASSES[type(job)] = do
        reported: object = job if name is None else Named(job, check_name(name))
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
        return pool, fn, reported

    @staticmethod
    def _job_priority(job: object) -> int | None:
        """Return what a `Job` says its priority is (``priority()``, or a plain attribute)."""
        get_priority = getattr(job, "priority", None)
        if callable(get_priority):
            try:
                priority = get_priority()
            except Exception as error:
                _note_priority_error(job, error)
                raise
            what = "priority()"
        elif get_priority is None:
            return None
        else:  # a plain attribute is accepted too
            priority, what = get_priority, "priority"
        return _checked_priority(job, priority, what)

    def _pool(self, priority: object) -> Pool:
        number = check_priority(priority)
        try:
            return self._pools[number]
        except KeyError:
            raise UnknownPriority(f"no pool has priority {number!r}; the priorities are {tuple(self._pools)}") from None

    def dispatch_many(
        self,
        jobs: Iterable[JobLike],
        *,
        priority: int | None = None,
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> int:
        """Dispatch every job of ``jobs``, in order, blocking while a pool is full.

        Each job is dispatched as by `dispatch`, with the same accounting,
        barrier and errors, for less per job. ``jobs`` is read lazily, one
        job at a time, so an endless iterable is fine: memory stays bounded
        by the pools. A list or a tuple goes faster still: it can be read
        ahead with no side effect, so its jobs are routed a few dozen at a
        time and as many as a pool has room for are queued at once (a list
        that changes meanwhile is read as a for loop reads it, those few
        dozen jobs ahead).

        Args:
            jobs: `Job` objects or callables taking no argument.
            priority: As for `dispatch`, for every job.
            timeout: As for `dispatch`, for each job.
            chunksize: Hand up to this many jobs of one pool to a worker as
                one item (>= 1). Fewer hand-overs make many tiny jobs much
                cheaper; the jobs of a chunk then run one after another on
                one worker, take one place in the pool, and show as one in
                ``stats().busy`` and ``queued`` (``completed``, ``failed``
                and ``cancelled`` count them one by one). A job cannot be
                cancelled on its own once its chunk has started. A pool with
                a backend sends each job on its own whatever ``chunksize``.

        Returns:
            How many jobs were dispatched.

        Raises:
            DispatcherError: As `dispatch` (`PoolFull`, `UnknownPriority`,
                `DispatcherClosed`); a note on the exception says how many
                jobs were dispatched before it, and no other was.
            TypeError: As `dispatch`, or ``chunksize`` is not an int.
            ValueError: ``chunksize`` is less than 1, or as `dispatch`.
        """
        size = check_int("chunksize", chunksize, 1)
        if timeout is not None:
            timeout = check_timeout(timeout)
        count = sending = 0  # jobs dispatched; jobs of the call under way
        if size == 1 and (type(jobs) is list or type(jobs) is tuple):
            return self._dispatch_listed(jobs, priority, timeout)
        try:
            if size == 1:
                dispatch = self.dispatch
                for job in jobs:
                    sending = 1
                    dispatch(job, priority=priority, timeout=timeout)
                    count += 1
                return count
            self._check_open()
            groups: dict[Pool, list[tuple[object, Callable[[], object]]]] = {}
            known = self._known_route
            # The pool of a plain function, found once (None: _route decides).
            if priority is None:
                function_pool = self._only_thread_pool
            else:
                function_pool = self._thread_pools.get(priority) if type(priority) is int else None
            last_pool: Pool | None = None  # the pool of the job before, and its group
            group: list[tuple[object, Callable[[], object]]] = []
            pool: Pool | None
            fn: Callable[[], object]
            for job in jobs:
                if type(job) is FunctionType and (job is _last_sync_function or _remember_if_sync(job)):
                    pool, fn, job_priority = function_pool, job, priority
                else:
                    pool, fn, job_priority = known(job, priority)
                if pool is None:
                    self._check_open()
                    pool, fn, reported = self._route(job, job_priority)
                    if type(pool) is not ThreadPool:  # an engine runs each job on its own: no chunks
                        sending = 1
                        pool.submit(reported, fn, None, copy_context() if self._propagate_context else None, timeout)
                        count += 1
                        continue
                else:
                    reported = job
                if pool is not last_pool:
                    group = groups.setdefault(pool, [])
                    last_pool = pool
                group.append((reported, fn))
                if len(group) >= size:
                    del groups[pool]
                    last_pool = None
                    sending = len(group)
                    count += self._submit_chunk(pool, group, timeout)
            while groups:
                pool, group = groups.popitem()
                sending = len(group)
                count += self._submit_chunk(pool, group, timeout)
        except BaseException as error:
            if was_queued(error):  # Ctrl-C struck after the hand-over: those run too
                count += sending
            with contextlib.suppress(Exception):
                error.add_note(f"jobdispatch: dispatch_many dispatched {count} jobs before this error, and no other")
            raise
        return count

    def _dispatch_listed(
        self, jobs: list[JobLike] | tuple[JobLike, ...], priority: int | None, timeout: float | None
    ) -> int:
        """`dispatch_many` of a list or a tuple without chunks: return how many jobs were dispatched.

        A list can be read ahead without side effects, so its jobs are routed
        up to `_LISTED_AHEAD` at a time (outside any lock: ``priority()`` is
        the job's code) and as many as there is room for go into their pool
        under one hold of its lock. A job that needs the full routing, and
        every job while a pool is full, starts threads, or when the caller
        is itself a job, goes through `dispatch` or `Pool.submit` on its own.
        """
        count = 0  # jobs dispatched: counted before each hand-over, which is the last call
        sending = 0  # jobs of a call to dispatch or submit under way
        known = self._known_route
        propagate = self._propagate_context
        if priority is None:
            function_pool = self._only_thread_pool
        else:  # None: dispatch routes them, with its errors
            function_pool = self._thread_pools.get(priority) if type(priority) is int else None
        running = _thread_role.running
        alone = running is None or running.generation is None  # runs no job: no round to join
        del running
        start = 0  # the index of the next job to read
        lock = None
        job: object
        fn: Callable[[], object] | None
        context: Context | None
        try:
            # Read in slices, which end where the list ends when they are
            # taken: a list that a job (or priority()) shortens or lengthens
            # meanwhile is read as a for loop would read it.
            while ahead := jobs[start : start + _LISTED_AHEAD]:
                # Route the next jobs, outside any lock.
                routed: list[tuple[Pool, object, Callable[[], object], Context | None]] = []
                routing_error: Exception | None = None
                unrouted = None  # a job that needs the full routing
                for job in ahead:
                    start += 1
                    pool: Pool | None
                    if type(job) is FunctionType and (job is _last_sync_function or _remember_if_sync(job)):
                        pool, fn, job_priority = function_pool, job, priority
                    else:
                        try:
                            pool, fn, job_priority = known(job, priority)
                        except Exception as raised:  # priority() failed: the jobs before it go first
                            routing_error = raised
                            break
                    if pool is None:
                        unrouted = job
                        unrouted_priority = job_priority  # what priority() said: it is not asked twice
                        break
                    routed.append((pool, job, fn, copy_context() if propagate else None))
                del ahead  # nothing holds a job once it is handed over
                # Queue them, as many as there is room for in one hold of each pool's lock.
                index = 0
                while index < len(routed):
                    pool, job, fn, context = routed[index]
                    lock = pool._lock
                    if not lock.acquire(False):
                        take_contended(lock)
                    if pool._state is not _OPEN and pool.refuses():
                        lock.release()  # before the raise: see Pool.submit
                        raise DispatcherClosed(self._closed_reason)
                    if alone and pool._room and not pool._spawning:
                        generation = pool._generation
                        put = pool._put_job
                        while True:
                            # The counters, then the hand-off (a C call) last:
                            # Ctrl-C strikes only at a call or a jump back, so
                            # what is counted is what is queued.
                            index += 1
                            count += 1
                            pool._room -= 1
                            generation.pending += 1
                            put((job, fn, generation, None, context))
                            if index == len(routed) or not pool._room:
                                break
                            following = routed[index]
                            if following[0] is not pool:
                                break
                            _, job, fn, context = following
                        lock.release()
                        del generation, put
                    else:  # full, starting threads, or a follow-up: one by one, as dispatch does
                        lock.release()
                        index += 1
                        sending = 1
                        pool.submit(job, fn, None, context, timeout)
                        count += 1
                        sending = 0
                lock = None
                routed.clear()  # nothing holds a job once it is handed over
                job = fn = context = None
                if routing_error is not None:
                    raise routing_error
                if unrouted is not None:
                    sending = 1
                    self.dispatch(unrouted, priority=unrouted_priority, timeout=timeout)
                    count += 1
                    sending = 0
                    unrouted = None
        except BaseException as error:
            if lock is not None and lock._is_owned():  # type: ignore[attr-defined]
                lock.release()
            if was_queued(error):  # Ctrl-C struck after the hand-over: that job runs too
                count += sending
            with contextlib.suppress(Exception):
                error.add_note(f"jobdispatch: dispatch_many dispatched {count} jobs before this error, and no other")
            raise
        return count

    def _known_route(self, job: object, priority: int | None) -> tuple[Pool | None, Callable[[], object], int | None]:
        """Route ``job`` as `dispatch` does inline: return its thread pool, its callable and its priority.

        The pool is ``None`` when the job needs the full routing (`_route`):
        anything but a plain function or a Job of a class seen before, or a
        priority of no thread pool. The priority returned is the one to route
        it with then (what ``priority()`` said, so that it is not called
        twice). Keep this alike with the inline routing of `dispatch`.
        """
        kind = type(job)
        if kind is FunctionType or kind is MethodType:
            function = job if kind is FunctionType else job.__func__  # type: ignore[attr-defined]
            if function is _last_sync_function or _remember_if_sync(function):
                if priority is None:
                    return self._only_thread_pool, job, None  # type: ignore[return-value]
                if type(priority) is int:
                    return self._thread_pools.get(priority), job, priority  # type: ignore[return-value]
        elif (do := _PLAIN_JOB_CLASSES.get(kind)) is not None:
            fn = job.do  # type: ignore[attr-defined]
            if type(fn) is MethodType and fn.__func__ is do:
                if priority is None:
                    try:
                        priority = job.priority()  # type: ignore[attr-defined]
                    except Exception as error:
                        if _has_priority_method(job):
                            _note_priority_error(job, error)
                            raise
                        return None, fn, None
                    if type(priority) is not int:
                        priority = _checked_priority(job, priority, "priority()")
                    return self._thread_pools.get(priority), fn, priority
                if type(priority) is int:
                    return self._thread_pools.get(priority), fn, priority
        return None, job, priority  # type: ignore[return-value]

    def _submit_chunk(self, pool: Pool, group: list[tuple[object, Callable[[], object]]], timeout: float | None) -> int:
        chunk = Chunk(pool, group, copy_context() if self._propagate_context else None)
        count = len(group)  # before the hand-over, the last call: Ctrl-C after it finds the jobs counted
        pool.submit(chunk, chunk, None, None, timeout)
        return count

    def executor(self, priority: int) -> PoolExecutor:
        """Return a `concurrent.futures.Executor` that submits to one pool.

        ``Dispatcher(8).executor(0)`` works where a ``ThreadPoolExecutor(8)``
        was used (`ThreadPoolExecutor` is the drop-in). Shutting the view
        down never finalizes the dispatcher.

        Raises:
            UnknownPriority: No pool has this priority.
        """
        return PoolExecutor(self, self._pool(priority).priority)

    async def dispatch_async(self, job: JobLike, *, priority: int | None = None) -> None:
        """Dispatch ``job``, waiting for room in its pool without blocking the event loop.

        Cancelling the awaiting task while it waits for room cancels the
        dispatch: the job is then never run nor counted. As with `dispatch`,
        a job of the dispatcher that runs an event loop and dispatches into
        its own full pool runs the new job at once, in its own thread.

        Args:
            job: A `Job`, or any callable taking no argument.
            priority: As for `dispatch`.

        Raises:
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called.
            TypeError: As for `dispatch`.
        """
        await _aio.submit(self, job, priority, None)

    async def _submit_async(self, job: JobLike, priority: int | None, call: BatchCall | None) -> None:
        await _aio.submit(self, job, priority, call)

    async def run(
        self,
        fn: Callable[..., _T],
        /,
        *args: Any,
        priority: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> _T:
        """Run ``fn(*args, **kwargs)`` on a pool and return its result, as `asyncio.to_thread` does.

        The call runs in a copy of the caller's `contextvars` context
        (whatever ``propagate_context`` says), under the limits of its pool:
        while the pool is full, this waits for room without blocking the
        event loop. Its exception is raised here; it counts as ``failed`` in
        `stats` and goes neither to ``on_error`` nor to the log.

        Cancelling the awaiting task:

        - while it waits for room: the call never enters the pool, and is
          neither run nor counted (as with `dispatch_async`);
        - once the call is in the pool but has not started: it never runs,
          and counts as ``cancelled``;
        - once the call has started: it runs to the end and counts as usual,
          but its result is dropped; if it raises, the exception goes to
          ``on_error`` or the log, since nobody awaits it any more.

        Args:
            fn: The function to call on a worker thread.
            *args: Its positional arguments.
            priority: The pool to use; required unless the dispatcher has a
                single pool.
            name: A name for the call, shown in its ``repr`` (in the log
                record of a failure nobody awaits, say).
            **kwargs: Its keyword arguments. To pass ``fn`` an argument
                named ``priority`` or ``name``, bind it with
                `functools.partial`.

        Returns:
            What ``fn`` returned.

        Raises:
            UnknownPriority: No pool has this priority.
            DispatcherClosed: `finalize` was called, or
                ``finalize(cancel_pending=True)`` dropped the call before it
                started.
            TypeError: ``fn`` is not callable or is a coroutine function,
                ``name`` is not a str, or the priority is missing or has the
                wrong type.
        """
        return await _aio.run(self, fn, args, kwargs, priority, name)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Like `wait`, but awaits without blocking the event loop.

        Returns:
            ``True`` when the jobs are done, ``False`` if ``timeout`` ran out.

        Raises:
            DispatcherError: Called from one of the dispatcher's own jobs
                (one that runs an event loop), or from its timer thread.
            DispatcherClosed: The dispatcher was inherited through ``fork()``.
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is negative or NaN.
        """
        return await _aio.wait(self, timeout)

    # -- barriers ----------------------------------------------------------

    def wait(self, timeout: float | None = None, *, progress: bool | ProgressCallback | None = None) -> bool:
        """Block until every job dispatched before the call has finished, with its follow-ups.

        Delayed jobs count from the moment `dispatch_later` was called. A job
        that one of those jobs dispatches (a follow-up, on any pool, by any
        means) is waited for too, and so are its own follow-ups: a crawl or a
        tree walk started before the call is over when it returns. Jobs that
        other threads dispatch during the wait are not waited for, so the
        call returns even under a steady stream of new work. The dispatcher
        stays open for the next round.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.
            progress: ``True`` shows a tqdm bar of the jobs waited for (needs
                tqdm: ``pip install tqdm``); a callable is called as
                ``progress(done, total)`` about ten times a second, on the
                waiting thread. ``total`` grows as follow-ups join.

        Returns:
            ``True`` when those jobs are done, ``False`` if ``timeout`` ran out.

        Raises:
            DispatcherError: Called from one of the dispatcher's own jobs, or
                from its timer thread (a batch's progress callback, or
                ``on_error``, may run there).
            DispatcherClosed: The dispatcher was inherited through ``fork()``.
            ModuleNotFoundError: ``progress=True`` without tqdm installed.
            TypeError: ``timeout`` is not a number, or ``progress`` neither a
                bool, a callable nor None.
            ValueError: ``timeout`` is negative or NaN.
        """
        if self._forked:
            raise DispatcherClosed(self._closed_reason)
        self._refuse_in_own_worker("wait")
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        if progress is None or progress is False:
            return self._wait_until(deadline)
        if progress is True:
            bar = TqdmProgress(unit="job")
            try:
                return self._wait_until(deadline, bar)
            finally:
                bar.close()
        if not callable(progress):
            raise TypeError(f"progress must be a bool, a callable or None, got {progress!r}")
        return self._wait_until(deadline, progress)

    def _wait_until(self, deadline: float | None, progress: ProgressCallback | None = None) -> bool:
        if self._forked:
            raise DispatcherClosed(self._closed_reason)
        rounds = self._close_round()
        counts = None if progress is None else self._progress_counts(rounds)
        return all(self._wait_round(round_, deadline, progress, counts) for round_ in rounds)

    def _progress_counts(self, rounds: list[Round]) -> Callable[[], tuple[int, int]]:
        """Return a function that says how many jobs of ``rounds`` are over, of how many, since each closed.

        Counted from the counts taken as each round closed, in the same hold
        of each pool's lock: a job that ends just after is still counted.
        """

        def totals() -> tuple[int, int]:
            pending = follow_ups = 0
            for round_ in rounds:
                for pool in self._pools.values():
                    p, f = pool.generation_state(round_.generations[pool.index])
                    pending, follow_ups = pending + p, follow_ups + f
            return pending, follow_ups

        generations = [round_.generations[pool.index] for round_ in rounds for pool in self._pools.values()]
        pending_at_start = sum(generation.pending_at_close for generation in generations)
        follow_ups_at_start = sum(generation.follow_ups_at_close for generation in generations)

        def counts() -> tuple[int, int]:
            pending, follow_ups = totals()
            total = pending_at_start + follow_ups - follow_ups_at_start
            return total - pending, total

        return counts

    def _close_round(self) -> list[Round]:
        """Start a new round in every pool; return every closed round not yet seen finished."""
        with self._round_lock:
            fresh = Round(self._owner, len(self._pools))
            for pool in self._pools.values():
                closed = pool.begin_generation(fresh.generations[pool.index])
                if closed.round not in self._closed_rounds:
                    self._closed_rounds.append(closed.round)
            return list(self._closed_rounds)

    def _wait_round(
        self,
        round_: Round,
        deadline: float | None,
        progress: ProgressCallback | None = None,
        counts: Callable[[], tuple[int, int]] | None = None,
    ) -> bool:
        """Wait until ``round_`` has no pending job in any pool.

        Follow-ups can move from pool to pool, so a pass that saw every
        generation idle counts only if no follow-up joined any of them
        meanwhile (their counts only grow): then all were idle at once, and
        with no job of the round left to dispatch one, the round is over.
        """
        while True:
            before = self._follow_ups(round_)
            for pool in self._pools.values():
                # The event is looked up again for each slice: that mends one
                # that a Ctrl-C kept from being set as the generation emptied.
                idle = functools.partial(_wait_idle, pool, round_.generations[pool.index])
                if progress is None or counts is None:
                    if not wait_in_slices(idle, deadline):
                        return False
                elif not wait_reporting(idle, counts, progress, deadline):
                    return False
            if self._follow_ups(round_) == before:
                self._forget_round(round_)
                return True

    def _follow_ups(self, round_: Round) -> list[int]:
        return [pool.generation_state(round_.generations[pool.index])[1] for pool in self._pools.values()]

    def _forget_round(self, round_: Round) -> None:
        with self._round_lock, contextlib.suppress(ValueError):
            self._closed_rounds.remove(round_)

    def _open_generations(self, pool: Pool) -> list[Generation]:
        """Return the pool's generations of the rounds not yet seen finished, the current one included."""
        with self._round_lock:  # the same hold as _close_round: no round can slip between the two reads
            return [round_.generations[pool.index] for round_ in self._closed_rounds] + [pool._generation]

    def _pending_anywhere(self) -> bool:
        """Whether a job of a round not yet seen finished may still be pending, in any pool.

        Read pool by pool, so it counts "nothing" only if no follow-up joined
        any of those generations meanwhile (see `_wait_round`).
        """
        generations = [
            (pool, generation) for pool in self._pools.values() for generation in self._open_generations(pool)
        ]
        before = [pool.generation_state(generation)[1] for pool, generation in generations]
        if any(pool.generation_state(generation)[0] for pool, generation in generations):
            return True
        return [pool.generation_state(generation)[1] for pool, generation in generations] != before

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
            DispatcherError: Called from one of the dispatcher's own jobs, or
                from its timer thread: leaving the batch there could
                deadlock. Dispatch follow-ups with `Batch.dispatch` on the
                batch of the job instead.
            ModuleNotFoundError: ``progress=True`` without tqdm installed.
            TypeError: ``progress`` is neither a bool, a callable nor None.
        """
        if self._state is not _OPEN:
            raise DispatcherClosed("cannot start a batch after finalize() was called")
        self._refuse_in_own_worker("open a batch")
        return Batch(self, progress=progress)

    def _check_open(self) -> None:
        """Raise `DispatcherClosed` unless the calling thread may dispatch now."""
        state = self._state
        if state is not _OPEN and self._refuses(state):
            raise DispatcherClosed(self._closed_reason)

    def _refuses(self, state: State) -> bool:
        """Whether a dispatch must be refused in ``state`` (which is not OPEN).

        While `finalize` drains without cancelling, the dispatcher's own jobs
        may still dispatch follow-up jobs.
        """
        if state is not State.DRAINING:
            return True
        return not runs_job_of(self._owner)

    def _refuse_in_own_worker(self, action: str) -> None:
        if runs_jobs_of(self._owner):
            raise DispatcherError(f"cannot {action} from inside one of the dispatcher's own jobs: it would deadlock")
        if self._scheduler.runs_here():
            # A batch's progress callback, or on_error, called by the timer:
            # the wait would hold up the delayed jobs it may wait for.
            raise DispatcherError(
                f"cannot {action} from the dispatcher's timer thread (in a progress callback or on_error "
                "it calls): it would deadlock"
            )

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
            DispatcherError: Called from one of the dispatcher's own jobs,
                or from its timer thread.
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
            if self._state is State.CLOSED:
                return  # finalized already, or inherited through fork: no threads here
            if cancel_pending or self._state is State.CANCELLING:  # a cancelling finalize is never undone
                self._state = State.CANCELLING
            else:
                self._state = State.DRAINING
            draining = self._state is State.DRAINING
        for pool in self._pools.values():
            pool.close(draining=draining)
        if not draining:
            self._scheduler.cancel_all()
            for pool in self._pools.values():
                pool.cancel_queued(self._open_generations(pool))
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
        for pool in self._pools.values():
            pool.close(draining=False)
        with self._state_lock:
            self._state = State.CLOSED
        self._finalizer.detach()
        _forget_live(self)

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

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # As __exit__, with the blocking finalize on a thread of its own.
        await _aio.leave(self, exc)

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
        """Cancel the delayed jobs, and refuse new ones: the interpreter exits."""
        cancelled = self._scheduler.refuse_at_exit()
        if cancelled:
            logger.warning(
                "interpreter exit: cancelling %d delayed jobs of dispatcher %r that was not finalized",
                cancelled,
                self._name,
            )

    def _activity(self) -> tuple[int, int]:
        """Return (jobs not over, jobs ever over), summed over the pools."""
        stats = [pool.stats() for pool in self._pools.values()]
        return (
            sum(s.busy + s.queued + s.delayed for s in stats),
            sum(s.completed + s.failed + s.cancelled for s in stats),
        )

    def _forget_after_fork(self) -> None:
        self._state_lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._state = State.CLOSED
        self._forked = True
        self._closed_reason = "cannot use a dispatcher inherited through fork(): create a new one in the child"
        self._finalizer.detach()
        self._scheduler.forget_after_fork()
        for pool in self._pools.values():
            pool.forget_after_fork()


def _wait_idle(pool: Pool, generation: Generation, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds for a moment when ``generation`` has no pending job."""
    return pool.idle_event(generation).wait(timeout)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _abandon(pools: tuple[Pool, ...], scheduler: Scheduler) -> None:
    """Stop the threads of a dispatcher that was collected without finalize.

    Runs in whatever thread dropped the last reference, so it never blocks:
    delayed jobs not yet due are cancelled (and logged), queued jobs still
    run, then every worker exits. The exit hook waits for those workers, as
    it does for the jobs of a dispatcher still open.
    """
    delayed = sum(pool.stats().delayed for pool in pools)
    if delayed:
        logger.warning("a dispatcher was garbage-collected without finalize(): %d delayed jobs cancelled", delayed)
    scheduler.cancel_all()
    threads: list[threading.Thread] = []
    for pool in pools:
        pool.close(draining=False)
        # Stopping first: from then on, a due job the timer hands over, or
        # one a place frees up for, is cancelled or left to cancel_due.
        threads += pool.stop()
        pool.cancel_due()
    scheduler.stop(0)
    if threads:
        _abandoned_threads.append(tuple(threads))


# Open dispatchers, for the exit hook: weak references without callbacks,
# read and pruned under the lock only (a WeakSet's removal callback would
# change the set outside the lock, from whatever thread the collector runs in).
_live_dispatchers: dict[int, weakref.ref[Dispatcher]] = {}
_live_lock = threading.Lock()

# The workers of dispatchers collected without finalize, which run the jobs
# still queued before they exit: the exit hook waits for them. `_abandon`
# appends without the lock (one atomic operation: the collector may run it
# in a thread that holds the lock); entries are taken out under the lock.
_abandoned_threads: deque[tuple[threading.Thread, ...]] = deque()


def _add_live(dispatcher: Dispatcher) -> None:
    with _live_lock:
        for key, reference in list(_live_dispatchers.items()):
            if reference() is None:
                del _live_dispatchers[key]
        _live_dispatchers[id(dispatcher)] = weakref.ref(dispatcher)
        for _ in range(len(_abandoned_threads)):  # forget the workers that have exited
            threads = _abandoned_threads.popleft()
            if any(thread.is_alive() for thread in threads):
                _abandoned_threads.append(threads)


def _join_abandoned() -> bool:
    """Wait for the workers of dispatchers collected without finalize; return whether one was running."""
    waited = False
    current = threading.current_thread()
    while True:
        with _live_lock:
            if not _abandoned_threads:
                return waited
            threads = _abandoned_threads.popleft()
        for thread in threads:
            if thread is not current and thread.is_alive():
                waited = True
                join_thread(thread, None)


def _forget_live(dispatcher: Dispatcher) -> None:
    with _live_lock:
        reference = _live_dispatchers.get(id(dispatcher))
        if reference is not None and reference() is dispatcher:
            del _live_dispatchers[id(dispatcher)]


def _live() -> list[Dispatcher]:
    with _live_lock:
        alive = [(key, reference()) for key, reference in _live_dispatchers.items()]
        for key, dispatcher in alive:
            if dispatcher is None:
                del _live_dispatchers[key]
        return [dispatcher for _, dispatcher in alive if dispatcher is not None]


@atexit.register
def _finalize_live_dispatchers() -> None:
    """Run the queued jobs of every dispatcher left open at interpreter exit, or collected without finalize.

    Jobs of one dispatcher may feed another, so all of them are drained
    together, until a whole pass over them finds nothing running and nothing
    new finished, before any is finalized. Delayed jobs are cancelled, and
    new ones refused, so that no job that delays itself again and again
    keeps the process alive: also in a dispatcher that another thread (a
    daemon, which the exit does not wait for) has begun to finalize.
    """
    last_seen = None
    while True:
        # Every pass: a job that ran meanwhile may have delayed another, or a
        # new dispatcher may have come, or one may have been collected.
        dispatchers = [d for d in _live() if d._state is not State.CLOSED]
        for dispatcher in dispatchers:
            dispatcher._cancel_delayed_at_exit()
        waited = _join_abandoned()
        for dispatcher in dispatchers:
            dispatcher.wait()
        activity = [dispatcher._activity() for dispatcher in dispatchers]
        if not waited and all(running == 0 for running, _ in activity) and activity == last_seen:
            break
        last_seen = activity
    for dispatcher in _live():
        dispatcher.finalize()
    _join_abandoned()


def _after_fork_in_child() -> None:
    # The child has none of the parent's threads: its dispatchers cannot run
    # anything, so they are closed; new ones work as usual.
    global _live_lock
    _live_lock = threading.Lock()  # it may have been held by another thread at the fork
    for dispatcher in _live():
        dispatcher._forget_after_fork()
    _live_dispatchers.clear()
    _abandoned_threads.clear()  # the child has none of these threads
    # The forking thread may have been a worker: in the child it is not one.
    _thread_role.pool = None
    _thread_role.running = None
    _thread_role.reporting = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
