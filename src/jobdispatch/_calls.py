"""Submitted calls: the job that settles a future, and how executors hand calls to a pool.

A call travels as a `_Call`, an ordinary job of its pool. Nothing a future
reaches refers back to its executor: a future's done-callback holds only the
executor's `Pending` set, so futures never keep an executor (and through it
a dispatcher and its threads) alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from concurrent.futures.thread import BrokenThreadPool
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._config import WAIT_SLICE
from ._errors import PoolFull
from ._outcome import CancelledBeforeStart, ReportedElsewhere, safe_repr, was_queued

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = [
    "Pending",
    "SettlesAFuture",
    "cancel_and_notify",
    "dispatch_or_settle",
    "running_loop",
    "submit",
    "submit_call",
    "wait_for_calls",
]

_T = TypeVar("_T")


class SettlesAFuture(Protocol):
    """A job that settles a future as it runs: a submitted call, or a chunk of mapped calls."""

    told: bool  # the future was told the job starts, or will never start: it is not told again

    @property
    def future(self) -> Future[Any]: ...

    def __call__(self) -> None: ...


class Pending:
    """The futures of one executor not done yet, and its shut-down and broken states.

    Kept apart from the executor so that the futures, whose done-callbacks
    refer to it, do not keep the executor alive.
    """

    __slots__ = ("broken", "closed", "futures", "lock", "pid", "waiting")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.futures: set[Future[Any]] = set()
        self.closed = False
        self.broken: str | None = None  # why the pool broke (a thread initializer failed)
        # Calls submitted on an event loop's thread that wait, in that loop, for room.
        self.waiting: dict[asyncio.Task[None], SettlesAFuture] = {}
        self.pid = os.getpid()  # the process whose threads run the calls

    def inherited(self) -> bool:
        """Whether this is the copy a child made by ``fork()`` inherited: no call of it runs in this process."""
        return self.pid != os.getpid()

    def check_process(self) -> None:
        """Raise if the executor was inherited through ``fork()``.

        Called before ``lock`` is taken: a thread of the parent may have
        held it as the parent forked, and nothing releases it in the child.
        """
        if self.pid != os.getpid():
            raise RuntimeError(
                "cannot schedule new futures: this executor was inherited through fork(): create a new one in the child"
            )

    def check_open_locked(self) -> None:
        """Raise if the executor takes no new call (under ``lock``)."""
        if self.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def refused(self, error: BaseException) -> None:
        """Raise the executor's own error for a dispatch that raised ``error``; the caller re-raises that."""

    def discard(self, future: Future[Any]) -> None:
        # One operation on the set, atomic with or without a GIL, and no
        # lock: the workers that settle futures must not queue up behind a
        # thread switched out while it holds the lock (with many small
        # calls, that convoy cost more than the calls themselves).
        self.futures.discard(future)

    def snapshot(self) -> list[Future[Any]]:
        with self.lock:
            return list(self.futures.copy())  # the copy is one atomic operation: discard takes no lock


class _Call:
    """A submitted call: runs once and settles its future."""

    __slots__ = ("args", "fn", "future", "kwargs", "name", "pending", "told")

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None = None,
        pending: Pending | None = None,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name = name
        self.pending = pending
        self.told = False  # the future was told the call starts, or will never start

    def __call__(self) -> None:
        future = self.future
        pending = self.pending
        if pending is not None and pending.broken is not None:  # an initializer failed: run nothing more
            self.cancel_unstarted()
            raise CancelledBeforeStart
        self.told = True  # before the call that tells it: the future is never told twice
        if not future.set_running_or_notify_cancel():
            raise CancelledBeforeStart
        fn, args, kwargs = self.fn, self.args, self.kwargs
        # Drop every reference now: once the future is settled, nothing here
        # may keep the result, the exception or the arguments alive.
        del self.future, self.fn, self.args, self.kwargs
        failed, value = _run(fn, args, kwargs)
        del fn, args, kwargs
        if failed:
            future.set_exception(value)
            del future, value
            raise ReportedElsewhere  # counted as failed, reported by the future
        future.set_result(value)

    def cancel_unstarted(self) -> None:
        """Settle the future of a call its pool dropped before it started.

        The future is cancelled (`Dispatcher.finalize` with
        ``cancel_pending=True``), and `concurrent.futures.wait` sees it
        done; or it gets `BrokenThreadPool` if the executor broke (a thread
        initializer failed).
        """
        future = self.future
        if self.told:  # the call began (Ctrl-C struck as it did): a future still pending is cancelled
            future.cancel()
            return
        self.told = True
        pending = self.pending
        if pending is not None and pending.broken is not None:
            if future.set_running_or_notify_cancel():
                future.set_exception(BrokenThreadPool(pending.broken))
        else:
            cancel_and_notify(future)

    def __repr__(self) -> str:
        fn = getattr(self, "fn", None)
        what = "a finished call" if fn is None else repr(getattr(fn, "__qualname__", fn))
        if self.name is not None:
            return f"<submitted call {self.name!r} of {what}>"
        return f"<submitted call of {what}>"


def _run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """Return ``(False, result)`` or ``(True, exception)``.

    The exception is caught here, in a frame that knows neither the call nor
    its future, so its traceback makes no reference cycle through them. Its
    traceback keeps this frame, so the frame lets go of the function and its
    arguments first: they are freed once the call is over, as with a call
    that returns.
    """
    try:
        return False, fn(*args, **kwargs)
    except BaseException as error:
        del fn, args, kwargs
        return True, error


def submit_call(
    dispatcher: Dispatcher,
    fn: Callable[..., _T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    priority: int | None,
    timeout: float | None,
    name: str | None,
) -> Future[_T]:
    """Dispatch ``fn(*args, **kwargs)`` as one job and return its future (`Dispatcher.submit`)."""
    _check_callable(fn)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    future: Future[_T] = Future()
    try:
        dispatcher.dispatch(_Call(future, fn, args, kwargs, name), priority=priority, timeout=timeout)
    except BaseException:
        future.cancel()  # a call that was queued all the same (Ctrl-C) is then dropped and counted cancelled
        raise
    return future


def cancel_and_notify(future: Future[Any]) -> None:
    """Cancel the future of a call that will never start, and tell the threads that wait for it.

    `concurrent.futures.wait` and `as_completed` count a cancelled future as
    done only once it is told, by `Future.set_running_or_notify_cancel`,
    which an executor calls when the call's turn comes. A call dropped
    before its turn never gets there, so it is told here. The caller makes
    sure that nothing else tells this future. A future that runs, or is
    over, is left alone.
    """
    if future.cancel():
        future.set_running_or_notify_cancel()


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {safe_repr(fn)}")


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def submit(
    dispatcher: Dispatcher,
    priority: int,
    pending: Pending,
    fn: Callable[..., _T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Future[_T]:
    """Submit a call through an executor (see `FuturesExecutor.submit`); return its future."""
    _check_callable(fn)
    future: Future[_T] = Future()
    future.add_done_callback(pending.discard)  # before it is in the set: Ctrl-C cannot leave it there
    call = _Call(future, fn, args, kwargs, pending=pending)
    try:
        pending.check_process()
        with pending.lock:
            pending.check_open_locked()
            pending.futures.add(future)
        loop = running_loop()
        if loop is None:
            dispatcher.dispatch(call, priority=priority, timeout=timeout)
        else:
            try:
                dispatcher.dispatch(call, priority=priority, timeout=0)
            except PoolFull:
                _wait_for_room(dispatcher, priority, pending, loop, call)
    except BaseException as error:
        future.cancel()
        pending.refused(error)
        raise
    return future


def _wait_for_room(
    dispatcher: Dispatcher, priority: int, pending: Pending, loop: asyncio.AbstractEventLoop, call: SettlesAFuture
) -> None:
    """Hand ``call`` to the pool once it has room, from a task of ``loop``."""
    task = loop.create_task(_dispatch_when_room(dispatcher, priority, call))
    with pending.lock:
        pending.waiting[task] = call  # also the strong reference a task needs
    task.add_done_callback(partial(_after_waiting, dispatcher, priority, pending))
    call.future.add_done_callback(partial(_cancel_waiting, loop, task))


async def _dispatch_when_room(dispatcher: Dispatcher, priority: int, call: SettlesAFuture) -> None:
    """Dispatch ``call`` once its pool has room, without blocking the loop."""
    await dispatcher.dispatch_async(call, priority=priority)


def _after_waiting(dispatcher: Dispatcher, priority: int, pending: Pending, task: asyncio.Task[None]) -> None:
    """Settle what the end of a wait for room leaves open (a done-callback of the task, on its loop).

    The call was dispatched; or its future was cancelled (the call never
    counts); or the loop is closing and cancelled the task: the call is then
    dispatched the blocking way; or the dispatcher was finalized meanwhile:
    the future gets the error.
    """
    with pending.lock:
        call = pending.waiting.pop(task, None)
    if call is None:  # handed over by a shutdown on this loop's thread
        return
    if task.cancelled():
        if call.future.cancelled():
            cancel_and_notify(call.future)  # it never entered the pool, which would have told it
        else:
            dispatch_or_settle(dispatcher, priority, call)
        return
    error = task.exception()
    if error is not None:
        _refused(call, error)


def wait_for_calls(
    dispatcher: Dispatcher, priority: int, pending: Pending, loop: asyncio.AbstractEventLoop | None
) -> None:
    """Wait for the calls submitted so far, handing over those that wait for room where they cannot get it.

    The calls that wait in ``loop`` (the caller's, which this blocks) are
    handed over at once. A call that waits in a loop closed meanwhile
    would wait for ever: it is handed over as soon as its loop is seen
    closed.
    """
    not_done = set(pending.snapshot())
    while True:
        # Also with nothing to wait for: a call whose future was cancelled
        # as it waited is no longer pending, but its future is told here.
        _hand_over_waiting(dispatcher, priority, pending, loop)
        if not not_done:
            return
        not_done = futures_wait(not_done, timeout=WAIT_SLICE).not_done  # in slices: to see loops close


def _hand_over_waiting(
    dispatcher: Dispatcher, priority: int, pending: Pending, loop: asyncio.AbstractEventLoop | None
) -> None:
    """Hand the calls waiting for room in ``loop`` or in a closed loop to the pool, blocking."""
    with pending.lock:
        stranded = [
            (task, call)
            for task, call in pending.waiting.items()
            if task.get_loop() is loop or task.get_loop().is_closed()
        ]
        for task, _ in stranded:
            del pending.waiting[task]
    for task, _ in stranded:
        # Each finds itself gone from ``waiting`` and leaves its call alone.
        # All first: a waiting task's wake-up must not go to a task that
        # this thread, blocked below, keeps from running. (A closed loop
        # runs nothing more: its tasks cannot be cancelled, nor need to be.)
        if task.get_loop() is loop:
            task.cancel()
    for _, call in stranded:
        if call.future.cancelled():
            cancel_and_notify(call.future)  # it never entered the pool, which would have told it
        else:
            dispatch_or_settle(dispatcher, priority, call)


def dispatch_or_settle(dispatcher: Dispatcher, priority: int, call: SettlesAFuture) -> None:
    """Dispatch ``call``, blocking; if that fails, settle its future."""
    try:
        dispatcher.dispatch(call, priority=priority)
    except BaseException as error:
        _refused(call, error)
        if not isinstance(error, Exception):
            raise


def _refused(call: SettlesAFuture, error: BaseException) -> None:
    """Settle the future of a call whose dispatch raised ``error``.

    Ctrl-C may strike after the call was queued (or run by the dispatching
    thread): the future is then cancelled, and the pool, which has the call,
    counts it and tells the future. Otherwise the call never entered the
    pool: the future gets an `Exception` (`DispatcherClosed`, ...), or is
    cancelled and told so (Ctrl-C), so that `concurrent.futures.wait` sees
    it done.
    """
    future = call.future
    if call.told or was_queued(error):
        future.cancel()
        return
    call.told = True  # before the call that tells it: the future is never told twice
    if isinstance(error, Exception):
        if future.set_running_or_notify_cancel():
            future.set_exception(error)
    else:
        cancel_and_notify(future)


def _cancel_waiting(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], future: Future[Any]) -> None:
    """Stop waiting for room for a call whose future was cancelled."""
    if future.cancelled():
        with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone already
            loop.call_soon_threadsafe(task.cancel)
