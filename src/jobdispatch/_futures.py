"""The executor view of one pool, and the `map` that it shares with `ThreadPoolExecutor`.

Iterators over results hold no reference to their executor, nor to a result
once it is yielded.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._calls import Pending, running_loop, submit, wait_for_calls
from ._config import check_int, check_timeout
from ._errors import PoolFull
from ._many import ChunkFuture, submit_calls
from ._pool import Pool
from ._rounds import current_pool

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["FuturesExecutor", "PoolExecutor"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class FuturesExecutor(Executor):
    """What `PoolExecutor` and `ThreadPoolExecutor` share: submit, map, and waiting at shutdown."""

    def __init__(self, dispatcher: Dispatcher, pool: Pool, pending: Pending | None = None) -> None:
        self._dispatcher = dispatcher
        self._priority = pool.priority
        self._pool_ref = weakref.ref(pool)
        self._pending = Pending() if pending is None else pending

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
        return submit(self._dispatcher, self._priority, self._pending, fn, args, kwargs, None)

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
        calls are submitted at first, and more as results are taken, so an
        endless or huge iterable is fine (keep a reference to the executor
        while you iterate then).

        A subclass that overrides ``submit`` gets every call through it, as
        with the standard library's ``map`` (``chunksize`` then makes no
        chunks).

        Args:
            fn: The function to call.
            *iterables: Its arguments, zipped.
            timeout: Seconds, from the call to ``map``, after which a result
                not ready, or a call the full pool had no room for, raises
                `TimeoutError`; the calls not started are then cancelled. A
                timeout of 0 or less has run out already: the calls are
                submitted all the same, and a result not ready raises.
            chunksize: Hand up to this many calls to a worker as one item
                (>= 1), as `Dispatcher.dispatch_many` does: fewer hand-overs
                make many tiny calls cheaper. The calls of a chunk run one
                after another on one worker, and show as one in
                ``stats().busy`` and ``queued`` (``completed``, ``failed``
                and ``cancelled`` count them one by one). A chunk has one
                future for all its calls (as with ``ProcessPoolExecutor``),
                so a result comes once its whole chunk is done; a call that
                raises does not stop the others of its chunk. Cancelling
                (a timeout, leaving the loop, ``shutdown(cancel_futures=
                True)``) drops the calls whose turn has not come, in a
                running chunk too. With ``buffersize``, calls are submitted
                a chunk at a time once there is room for one. A pool with a
                backend gets each call on its own.
            buffersize: Calls submitted ahead of the results taken, or
                ``None`` to submit every call at once.

        Raises:
            TypeError: ``chunksize`` or ``buffersize`` is not an int, or
                ``timeout`` not a number.
            ValueError: ``chunksize`` or ``buffersize`` is less than 1, or
                ``timeout`` is NaN.
        """
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout < 0:
            timeout = 0  # a deadline passed already, as the standard library takes it
        seconds = check_timeout(timeout)
        size = check_int("chunksize", chunksize, 1)
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError(f"buffersize must be an int or None, got {buffersize!r}")
            if buffersize < 1:
                raise ValueError(f"buffersize must be >= 1, got {buffersize!r}")
        deadline = None if seconds is None else time.monotonic() + seconds
        arguments = zip(*iterables, strict=False)
        futures: deque[Future[Any]] = deque()
        complete = True
        # A subclass's own submit takes every call, one by one, as the standard library's map does.
        overridden = type(self).submit is not FuturesExecutor.submit
        if overridden:
            size = 1
        try:
            submit_calls(
                self._dispatcher,
                self._priority,
                self._pending,
                fn,
                arguments if buffersize is None else islice(arguments, buffersize),
                size,
                deadline,
                futures,
                self.submit if overridden else None,
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
                _refill,
                weakref.ref(self._dispatcher),
                weakref.WeakMethod(self.submit) if overridden else None,
                self._priority,
                self._pending,
                fn,
                arguments,
                deadline,
                size,
                buffersize,
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
        wait_for_calls(self._dispatcher, self._priority, self._pending, running_loop())

    def _cancel_pending(self) -> None:
        for future in self._pending.snapshot():
            future.cancel()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _refill(
    dispatcher: weakref.ref[Dispatcher],
    own_submit: weakref.WeakMethod[Callable[..., Future[Any]]] | None,
    priority: int,
    pending: Pending,
    fn: Callable[..., _T],
    arguments: Iterator[tuple[Any, ...]],
    deadline: float | None,
    chunksize: int,
    buffersize: int,
    futures: deque[Future[Any]],
    ahead: int,
) -> int:
    """Submit the next calls of a lazy `map`, once there is room for a chunk and the input has more.

    Called before each result is taken, with ``ahead`` the calls submitted
    and not yet taken: ``buffersize`` calls stay submitted ahead of the one
    being taken, a chunk at a time. ``own_submit`` is the ``submit`` of a
    subclass that overrides it. Returns how many calls it submitted.
    """
    step = min(chunksize, buffersize)
    room = buffersize + 1 - ahead
    if room < step:
        return 0
    items = list(islice(arguments, room - room % step))
    if not items:
        return 0
    via = None if own_submit is None else own_submit()
    if own_submit is not None and via is None:
        raise RuntimeError("cannot schedule new futures: the executor of this map was garbage-collected")
    owner = dispatcher()
    if owner is None:
        raise RuntimeError("cannot schedule new futures: the dispatcher of this map was garbage-collected")
    submit_calls(owner, priority, pending, fn, iter(items), chunksize, deadline, futures, via)
    return len(items)


def _results(
    futures: deque[Future[Any]],
    deadline: float | None,
    complete: bool,
    refill: Callable[[deque[Future[Any]], int], int] | None,
) -> Iterator[Any]:
    """Yield the results of ``futures`` in order; cancel the calls not started on any way out.

    A `ChunkFuture` gives the results of all its calls at once. Holds no
    reference to the executor, nor to a result once it is yielded.
    ``complete`` is false when submitting stopped at the deadline.
    """
    ahead = sum(getattr(future, "calls", 1) for future in futures) if refill is not None else 0
    values: list[Any] = []  # the results of the chunk being read, last first
    errors: dict[int, BaseException] | None = None
    count = 0
    try:
        while futures or values:
            if refill is not None:
                try:
                    ahead += refill(futures, ahead)
                except PoolFull:
                    raise TimeoutError("the pool had no room for the next call before the timeout") from None
            if values:
                index = count - len(values)
                if errors is not None and index in errors:
                    del values
                    raise errors.pop(index)
                ahead -= 1
                yield values.pop()
            elif type(futures[0]) is ChunkFuture:
                values, errors = _pop_result(futures, _remaining(deadline))
                count = len(values)
            else:
                ahead -= 1
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
    except BaseException:
        future.cancel()  # timed out or interrupted: drop the call if it has not started
        raise
    finally:
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

        In a child process made by ``fork()``, where none of the view's
        calls can run, it only marks the view shut down.
        """
        if self._pending.inherited():  # in a child made by fork(): none of its calls runs here
            self._pending.closed = True
            return
        with self._pending.lock:
            self._pending.closed = True
        if cancel_futures:
            self._cancel_pending()
        if wait:
            self._wait_for_pending()

    def __repr__(self) -> str:
        return f"<jobdispatch.PoolExecutor priority={self._priority} of {self._dispatcher!r}>"
