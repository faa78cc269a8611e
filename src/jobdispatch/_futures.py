"""Futures over a dispatcher: the call wrapper, `Dispatcher.submit` and the executor view of one pool.

A submitted call travels as a `_Call`, an ordinary job of its pool. Nothing
that a future reaches refers back to the executor: a future's done-callback
holds only the executor's `_Pending` set, so futures, and iterators over
results, never keep an executor (and through it a dispatcher and its
threads) alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from concurrent.futures.thread import BrokenThreadPool
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._config import check_timeout
from ._errors import PoolFull
from ._pool import CancelledBeforeStart, Pool, ReportedElsewhere, current_pool, safe_repr

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["FuturesExecutor", "PoolExecutor", "submit_call"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Pending:
    """The futures of one executor not done yet, and its shut-down and broken states.

    Kept apart from the executor so that the futures, whose done-callbacks
    refer to it, do not keep the executor alive.
    """

    __slots__ = ("broken", "closed", "futures", "lock", "waiting")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.futures: set[Future[Any]] = set()
        self.closed = False
        self.broken: str | None = None  # why the pool broke (a thread initializer failed)
        # Calls submitted on an event loop's thread that wait, in that loop, for room.
        self.waiting: dict[asyncio.Task[None], _Call] = {}

    def check_open_locked(self) -> None:
        """Raise if the executor takes no new call (under ``lock``)."""
        if self.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def refused(self, error: BaseException) -> None:
        """Raise the executor's own error for a dispatch that raised ``error``; the caller re-raises that."""

    def discard(self, future: Future[Any]) -> None:
        with self.lock:
            self.futures.discard(future)

    def snapshot(self) -> list[Future[Any]]:
        with self.lock:
            return list(self.futures)


class _Call:
    """A submitted call: runs once and settles its future."""

    __slots__ = ("args", "fn", "future", "kwargs", "name", "pending")

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None = None,
        pending: _Pending | None = None,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name = name
        self.pending = pending

    def __call__(self) -> None:
        future = self.future
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
        ``cancel_pending=True``), or gets `BrokenThreadPool` if the pool broke.
        """
        pending = self.pending
        if pending is not None and pending.broken is not None:
            if self.future.set_running_or_notify_cancel():
                self.future.set_exception(BrokenThreadPool(pending.broken))
        else:
            self.future.cancel()

    def __repr__(self) -> str:
        fn = getattr(self, "fn", None)
        what = "a finished call" if fn is None else repr(getattr(fn, "__qualname__", fn))
        if self.name is not None:
            return f"<submitted call {self.name!r} of {what}>"
        return f"<submitted call of {what}>"


def _run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """Return ``(False, result)`` or ``(True, exception)``.

    The exception is caught here, in a frame that knows neither the call nor
    its future, so its traceback makes no reference cycle through them.
    """
    try:
        return False, fn(*args, **kwargs)
    except BaseException as error:
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


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {safe_repr(fn)}")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class FuturesExecutor(Executor):
    """What `PoolExecutor` and `ThreadPoolExecutor` share: submit, map, and waiting at shutdown."""

    def __init__(self, dispatcher: Dispatcher, pool: Pool, pending: _Pending | None = None) -> None:
        self._dispatcher = dispatcher
        self._priority = pool.priority
        self._pool_ref = weakref.ref(pool)
        self._pending = _Pending() if pending is None else pending

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` on the pool; return its future.

        Blocks while the pool is full, except on a thread that runs an
        asyncio event loop: there the future is returned at once, and the
        call waits for room inside the loop, without blocking it.

        Raises:
            RuntimeError: The executor was shut down, or the dispatcher
                finalized (`DispatcherClosed` is a `RuntimeError`).
            TypeError: ``fn`` is not callable.
        """
        return _submit(self._dispatcher, self._priority, self._pending, fn, args, kwargs, None)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        """Return an iterator of ``fn`` applied to the items, in order.

        By default every call is submitted before ``map`` returns, as with
        ``ThreadPoolExecutor``: they all run even if the results are never
        read. With ``buffersize``, the input is read lazily: ``buffersize``
        calls are submitted at first, and one more each time a result is
        taken, so an endless or huge iterable is fine (keep a reference to
        the executor while you iterate then).

        Args:
            fn: The function to call.
            *iterables: Its arguments, zipped.
            timeout: Seconds, from the call to ``map``, after which a result
                not ready, or a call the full pool had no room for, raises
                `TimeoutError`; the calls not started are then cancelled.
            chunksize: Accepted for compatibility; ignored.
            buffersize: Calls submitted ahead of the results taken, or
                ``None`` to submit every call at once.

        Raises:
            TypeError: ``buffersize`` is not an int, or ``timeout`` not a number.
            ValueError: ``buffersize`` is less than 1, or ``timeout`` negative.
        """
        seconds = check_timeout(timeout)
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError(f"buffersize must be an int or None, got {buffersize!r}")
            if buffersize < 1:
                raise ValueError(f"buffersize must be >= 1, got {buffersize!r}")
        deadline = None if seconds is None else time.monotonic() + seconds
        arguments = zip(*iterables, strict=False)
        futures: deque[Future[_T]] = deque()
        complete = True
        try:
            for args in arguments if buffersize is None else islice(arguments, buffersize):
                futures.append(
                    _submit(self._dispatcher, self._priority, self._pending, fn, args, {}, _remaining(deadline))
                )
        except PoolFull:
            complete = False  # no room before the deadline: the iterator raises TimeoutError
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        refill = None
        if buffersize is not None and complete:
            refill = partial(
                _refill, weakref.ref(self._dispatcher), self._priority, self._pending, fn, arguments, deadline
            )
        return _results(futures, deadline, complete, refill)

    def _wait_for_pending(self) -> None:
        """Wait for every call submitted through the executor.

        Raises:
            RuntimeError: Called from one of the pool's threads, which could
                wait for its own call.
        """
        pool = current_pool()
        if pool is not None and pool is self._pool_ref():
            raise RuntimeError("cannot wait for the executor's calls from one of its own threads: it would deadlock")
        if _running_loop() is not None:
            self._hand_over_waiting()
        futures_wait(self._pending.snapshot())

    def _hand_over_waiting(self) -> None:
        """Hand the calls waiting for room in this thread's loop to the pool, blocking.

        Called before blocking that loop: those calls could not get room
        while it is blocked.
        """
        pending, loop = self._pending, _running_loop()
        with pending.lock:
            mine = [(task, call) for task, call in pending.waiting.items() if task.get_loop() is loop]
            for task, _ in mine:
                del pending.waiting[task]
        for task, call in mine:
            task.cancel()  # it finds itself gone from ``waiting`` and leaves the call alone
            if not call.future.cancelled():
                _dispatch_or_settle(self._dispatcher, self._priority, call)

    def _cancel_pending(self) -> None:
        for future in self._pending.snapshot():
            future.cancel()


def _submit(
    dispatcher: Dispatcher,
    priority: int,
    pending: _Pending,
    fn: Callable[..., _T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Future[_T]:
    """Submit a call through an executor; see `FuturesExecutor.submit`."""
    _check_callable(fn)
    future: Future[_T] = Future()
    future.add_done_callback(pending.discard)  # before it is in the set: Ctrl-C cannot leave it there
    call = _Call(future, fn, args, kwargs, pending=pending)
    try:
        with pending.lock:
            pending.check_open_locked()
            pending.futures.add(future)
        loop = _running_loop()
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
    dispatcher: Dispatcher, priority: int, pending: _Pending, loop: asyncio.AbstractEventLoop, call: _Call
) -> None:
    """Hand ``call`` to the pool once it has room, from a task of ``loop``."""
    task = loop.create_task(_dispatch_when_room(dispatcher, priority, call))
    with pending.lock:
        pending.waiting[task] = call  # also the strong reference a task needs
    task.add_done_callback(partial(_after_waiting, dispatcher, priority, pending))
    call.future.add_done_callback(partial(_cancel_waiting, loop, task))


async def _dispatch_when_room(dispatcher: Dispatcher, priority: int, call: _Call) -> None:
    """Dispatch ``call`` once its pool has room, without blocking the loop."""
    await dispatcher.dispatch_async(call, priority=priority)


def _after_waiting(dispatcher: Dispatcher, priority: int, pending: _Pending, task: asyncio.Task[None]) -> None:
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
        if not call.future.cancelled():
            _dispatch_or_settle(dispatcher, priority, call)
        return
    error = task.exception()
    if error is not None and call.future.set_running_or_notify_cancel():
        call.future.set_exception(error)


def _dispatch_or_settle(dispatcher: Dispatcher, priority: int, call: _Call) -> None:
    """Dispatch ``call``, blocking; if that fails, its future gets the error."""
    try:
        dispatcher.dispatch(call, priority=priority)
    except Exception as error:
        if call.future.set_running_or_notify_cancel():
            call.future.set_exception(error)


def _cancel_waiting(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], future: Future[Any]) -> None:
    """Stop waiting for room for a call whose future was cancelled."""
    if future.cancelled():
        with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone already
            loop.call_soon_threadsafe(task.cancel)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _refill(
    dispatcher: weakref.ref[Dispatcher],
    priority: int,
    pending: _Pending,
    fn: Callable[..., _T],
    arguments: Iterator[tuple[Any, ...]],
    deadline: float | None,
    futures: deque[Future[_T]],
) -> None:
    """Submit the next call of a lazy `map`, if the input has one more item."""
    for args in arguments:
        owner = dispatcher()
        if owner is None:
            raise RuntimeError("cannot schedule new futures: the dispatcher of this map was garbage-collected")
        futures.append(_submit(owner, priority, pending, fn, args, {}, _remaining(deadline)))
        return


def _results(
    futures: deque[Future[_T]],
    deadline: float | None,
    complete: bool,
    refill: Callable[[deque[Future[_T]]], None] | None,
) -> Iterator[_T]:
    """Yield the results of ``futures`` in order; cancel the calls not started on any way out.

    Holds no reference to the executor, nor to a result once it is yielded.
    ``complete`` is false when submitting stopped at the deadline.
    """
    try:
        while futures:
            if refill is not None:
                try:
                    refill(futures)
                except PoolFull:
                    raise TimeoutError("the pool had no room for the next call before the timeout") from None
            yield _pop_result(futures, _remaining(deadline))
        if not complete:
            raise TimeoutError("the pool had no room for every call before the timeout")
    finally:
        for future in futures:
            future.cancel()


def _pop_result(futures: deque[Future[_T]], timeout: float | None) -> _T:
    """Pop the first future and wait for its result; cancel it if that times out.

    Popped first, so that neither the deque nor this frame (which a
    traceback keeps) refers to a future whose exception is raised.
    """
    future = futures.popleft()
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # does nothing once the call is over
        del future


class PoolExecutor(FuturesExecutor):
    """One pool of a `Dispatcher`, seen as a `concurrent.futures.Executor`.

    Made by `Dispatcher.executor`. It runs calls on the pool's threads and
    under its limits: ``asyncio``'s ``loop.run_in_executor``,
    `concurrent.futures.wait` and `concurrent.futures.as_completed` all work
    with it. ``submit`` blocks while the pool is full, like
    `Dispatcher.dispatch`, except on a thread that runs an event loop.

    `shutdown` stops this view only: it refuses new calls and, by default,
    waits for the calls submitted through it. It never finalizes the
    dispatcher, which other views and callers may still use.
    """

    def __init__(self, dispatcher: Dispatcher, priority: int) -> None:
        super().__init__(dispatcher, dispatcher._pool(priority))

    @property
    def priority(self) -> int:
        """The priority of the pool this view submits to."""
        return self._priority

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; optionally cancel or wait for the pending ones.

        The dispatcher itself stays open: finalize it separately.

        Args:
            wait: Wait for the calls submitted through this view.
            cancel_futures: Cancel the calls that have not started.

        Raises:
            RuntimeError: ``wait`` is true and the caller is one of the
                pool's threads (the view is shut down all the same).
        """
        with self._pending.lock:
            self._pending.closed = True
        if cancel_futures:
            self._cancel_pending()
        if wait:
            self._wait_for_pending()

    def __repr__(self) -> str:
        return f"<jobdispatch.PoolExecutor priority={self._priority} of {self._dispatcher!r}>"
