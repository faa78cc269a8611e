"""A `concurrent.futures.Executor` view of one pool."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._config import check_timeout
from ._pool import CancelledBeforeStart, ReportedElsewhere

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["PoolExecutor"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Call:
    """A submitted call: runs once and settles its future."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            raise CancelledBeforeStart
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as error:
            self.future.set_exception(error)
            raise ReportedElsewhere from None  # counted as failed, reported by the future
        else:
            self.future.set_result(result)
        finally:
            del self.fn, self.args, self.kwargs

    def cancel_unstarted(self) -> None:
        """Cancel the future: `Dispatcher.finalize` dropped the call before it started."""
        self.future.cancel()

    def __repr__(self) -> str:
        return f"<submitted call of {getattr(self.fn, '__qualname__', self.fn)!r}>"


class PoolExecutor(Executor):
    """One pool of a `Dispatcher`, seen as a `concurrent.futures.Executor`.

    Made by `Dispatcher.executor`. It runs calls on the pool's threads and
    under its limits, so it drops in where a ``ThreadPoolExecutor`` was:
    ``asyncio``'s ``loop.run_in_executor``, `concurrent.futures.wait` and
    `concurrent.futures.as_completed` all work with it. ``submit`` blocks
    while the pool is full, like `Dispatcher.dispatch`.

    `shutdown` stops this view only: it refuses new calls and, by default,
    waits for the calls submitted through it. It never finalizes the
    dispatcher, which other views and callers may still use.
    """

    def __init__(self, dispatcher: Dispatcher, priority: int) -> None:
        self._dispatcher = dispatcher
        self._priority = priority
        self._lock = threading.Lock()
        self._pending: set[Future[Any]] = set()
        self._shut_down = False

    @property
    def priority(self) -> int:
        """The priority of the pool this view submits to."""
        return self._priority

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` on the pool; return its future.

        Raises:
            RuntimeError: The view was shut down, or the dispatcher finalized
                (`DispatcherClosed` is a `RuntimeError`).
        """
        future: Future[_T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.add(future)
        future.add_done_callback(self._forget)
        try:
            self._dispatcher.dispatch(_Call(future, fn, args, kwargs), priority=self._priority)
        except BaseException:
            future.cancel()
            raise
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        """Return an iterator of ``fn`` applied to the items, in order.

        Unlike ``ThreadPoolExecutor.map`` in Python < 3.14, the input is read
        lazily: at most ``buffersize`` calls are submitted ahead of the one
        being consumed, so an endless or huge iterable is fine.

        Args:
            fn: The function to call.
            *iterables: Its arguments, zipped.
            timeout: Seconds, from the call to ``map``, after which waiting
                for a result raises `TimeoutError`.
            chunksize: Accepted for compatibility; ignored.
            buffersize: Calls submitted ahead; defaults to twice the pool's
                workers.

        Raises:
            ValueError: ``buffersize`` is less than 1.
        """
        seconds = check_timeout(timeout)
        if buffersize is None:
            buffersize = 2 * self._dispatcher.total_workers(self._priority)
        elif isinstance(buffersize, bool) or not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an int, got {buffersize!r}")
        elif buffersize < 1:
            raise ValueError(f"buffersize must be >= 1, got {buffersize!r}")
        deadline = None if seconds is None else time.monotonic() + seconds
        arguments = zip(*iterables, strict=False)
        futures: deque[Future[_T]] = deque()
        for args in arguments:
            futures.append(self.submit(fn, *args))
            if len(futures) >= buffersize:
                break
        return self._results(fn, arguments, futures, deadline)

    def _results(
        self,
        fn: Callable[..., _T],
        arguments: Iterator[tuple[Any, ...]],
        futures: deque[Future[_T]],
        deadline: float | None,
    ) -> Iterator[_T]:
        try:
            while futures:
                future = futures.popleft()
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                result = future.result(remaining)
                del future
                for args in arguments:
                    futures.append(self.submit(fn, *args))
                    break
                yield result
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; optionally cancel or wait for the pending ones.

        The dispatcher itself stays open: finalize it separately.

        Args:
            wait: Wait for the calls submitted through this view.
            cancel_futures: Cancel the calls that have not started.
        """
        with self._lock:
            self._shut_down = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            futures_wait(pending)

    def __repr__(self) -> str:
        return f"<jobdispatch.PoolExecutor priority={self._priority} of {self._dispatcher!r}>"
