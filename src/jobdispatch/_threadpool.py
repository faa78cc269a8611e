"""`ThreadPoolExecutor`: a drop-in for the standard library's, on a private one-pool dispatcher."""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from ._calls import Pending, wait_for_calls
from ._config import PoolConfig
from ._dispatcher import Dispatcher
from ._errors import DispatcherClosed
from ._futures import FuturesExecutor
from ._rounds import current_pool
from ._scheduler import join_thread
from ._stats import PoolStats

__all__ = ["ThreadPoolExecutor"]

# The standard library's executors log a failed thread initializer here.
_futures_logger = logging.getLogger("concurrent.futures")

_BROKEN = "a thread initializer failed: the thread pool cannot run calls any more"

_executor_numbers = itertools.count(1)

# Set at interpreter exit, before the exit hook of `Dispatcher` drains the
# executors' pools (hooks run in reverse order of registration, and this
# module is imported after ``_dispatcher``).
_exiting = threading.Event()
atexit.register(_exiting.set)


def _default_workers() -> int:
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or os.cpu_count() or 1
    return min(32, cpus + 4)


class ThreadPoolExecutor(FuturesExecutor):
    """A drop-in for `concurrent.futures.ThreadPoolExecutor`, run by jobdispatch.

    Same constructor, errors and shutdown as the standard library's class,
    on a private `Dispatcher` with one pool that the executor owns and
    finalizes at shutdown. Beyond it, ``max_queue_size`` bounds the calls
    that wait for a thread: ``submit`` then blocks while the queue is full
    (except on a thread that runs an event loop), and `stats` counts what
    the pool did.

    Args:
        max_workers: Threads at most, started on demand; by default
            ``min(32, cpus + 4)``, counting the CPUs this process may use.
        thread_name_prefix: The prefix of the threads' names (``None``:
            the default, as ``""``).
        initializer: Called as ``initializer(*initargs)`` once in each
            thread before its first call. If it raises, the executor breaks:
            the calls not started and every later ``submit`` raise
            `concurrent.futures.thread.BrokenThreadPool`.
        initargs: The arguments of ``initializer``: a tuple, or any
            iterable, which is made a tuple at once.
        max_queue_size: Calls that may wait for a thread, or ``None`` (the
            default) for no limit, as in the standard library.

    Raises:
        ValueError: ``max_workers`` is not greater than 0, or
            ``max_queue_size`` is negative.
        TypeError: An argument has the wrong type.

    For code that reads them, ``_max_workers``, ``_broken`` (``False``, or
    why the executor broke) and ``_threads`` (a new set of the threads
    started, at each read) are kept as in the standard library.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str | None = "",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_queue_size: int | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = _default_workers()
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int or None, got {max_workers!r}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable or None, got {initializer!r}")
        if not isinstance(initargs, tuple):  # a list, say, as the standard library takes it
            try:
                initargs = tuple(initargs)
            except TypeError:
                raise TypeError(f"initargs must be an iterable, got {initargs!r}") from None
        if thread_name_prefix is None:  # as the standard library takes it: the default name
            thread_name_prefix = ""
        elif not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str or None, got {thread_name_prefix!r}")
        if max_queue_size is None:
            queue_size = sys.maxsize  # places are made as they are needed: this costs nothing
        elif isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int):
            raise TypeError(f"max_queue_size must be an int or None, got {max_queue_size!r}")
        elif max_queue_size < 0:
            raise ValueError(f"max_queue_size must be >= 0, got {max_queue_size!r}")
        else:
            queue_size = max_queue_size
        name = thread_name_prefix or f"ThreadPoolExecutor-{next(_executor_numbers)}"
        dispatcher = Dispatcher([PoolConfig(0, max_workers, queue_size=queue_size)], name=name, propagate_context=False)
        pool = dispatcher._pool(0)
        super().__init__(dispatcher, pool, _OwnPending())
        if initializer is not None:
            # Refers to the executor's pending set, never to the executor:
            # the pool's threads must not keep the executor alive.
            pool.initializer = _Initializer(self._pending, initializer, initargs)
        self._name = name
        self._max_workers = max_workers
        self._max_queue_size = max_queue_size
        self._closer: threading.Thread | None = None  # finalizes the dispatcher after shutdown(wait=False)

    @property
    def _broken(self) -> str | bool:
        return self._pending.broken or False

    @property
    def _threads(self) -> set[threading.Thread]:
        pool = self._pool_ref()
        if pool is None:
            return set()
        with pool._lock:
            return set(pool._threads)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls, then stop the threads once the calls submitted are over.

        Args:
            wait: Return only once every call is over and every thread has
                exited; otherwise return at once, and the threads exit by
                themselves when the calls are done.
            cancel_futures: Cancel the calls that have not started.

        Raises:
            RuntimeError: ``wait`` is true and the caller is one of the
                executor's own threads (the executor is shut down all the
                same, and its threads exit when its calls are done).

        In a child process made by ``fork()``, where none of the executor's
        calls can run, it only marks the executor shut down.
        """
        if self._pending.inherited():
            self._pending.closed = True
            return
        with self._pending.lock:
            self._pending.closed = True
        if cancel_futures:
            self._cancel_pending()
        pool = current_pool()
        if wait and not (pool is not None and pool is self._pool_ref()):
            self._wait_for_pending()  # hands over calls waiting for room in this thread's loop
            self._dispatcher.finalize(cancel_pending=cancel_futures)
            closer = self._closer
            if closer is not None:
                join_thread(closer, None)  # it has nothing left to do (or never started: Ctrl-C in its start)
            return
        with self._pending.lock:
            closer, start = self._closer, self._closer is None
            if start:
                closer = self._closer = threading.Thread(
                    target=_finish,
                    args=(self._dispatcher, self._pending, cancel_futures),
                    name=f"{self._name}-shutdown",
                    daemon=True,
                )
        if start:
            assert closer is not None
            closer.start()
        if wait:
            raise RuntimeError("cannot wait for the executor's calls from one of its own threads: it would deadlock")

    def stats(self) -> PoolStats:
        """Return a snapshot of the counters of the executor's pool."""
        return self._dispatcher.stats(0)

    def __repr__(self) -> str:
        s = self.stats()
        state = "broken" if self._pending.broken else "shut down" if self._pending.closed else "open"
        text = f"<jobdispatch.ThreadPoolExecutor {self._name!r} {state}, {s.busy}/{s.workers} busy"
        return text + (f", {s.queued} queued>" if s.queued else ">")


def _finish(dispatcher: Dispatcher, pending: Pending, cancel: bool) -> None:
    """Finalize an executor's dispatcher once its calls are over (the thread of ``shutdown(wait=False)``).

    Waiting for the futures first lets calls that wait for room in an event
    loop get it: finalize alone would refuse them.
    """
    wait_for_calls(dispatcher, 0, pending, None)
    dispatcher.finalize(cancel_pending=cancel)


class _OwnPending(Pending):
    """The pending set of a `ThreadPoolExecutor`: its errors are the standard library's."""

    __slots__ = ()

    def check_open_locked(self) -> None:
        if self.broken is not None:
            raise BrokenThreadPool(self.broken)
        super().check_open_locked()
        if _exiting.is_set():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def refused(self, error: BaseException) -> None:
        if isinstance(error, DispatcherClosed):
            # Finalized by a shutdown racing this submit, or by the exit hook.
            if self.closed:
                raise RuntimeError("cannot schedule new futures after shutdown") from None
            raise RuntimeError("cannot schedule new futures after interpreter shutdown") from None


class _Initializer:
    """Runs the user's initializer in a new worker thread; breaks the executor if it raises."""

    __slots__ = ("args", "fn", "pending")

    def __init__(self, pending: Pending, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.pending = pending
        self.fn = fn
        self.args = args

    def __call__(self) -> None:
        try:
            self.fn(*self.args)
        except BaseException:
            _futures_logger.critical("the initializer of a thread pool raised:", exc_info=True)
            with self.pending.lock:
                self.pending.broken = _BROKEN  # every call not started sees it and settles with BrokenThreadPool
