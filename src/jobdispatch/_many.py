"""Jobs handed over in bulk: `Chunk` (several jobs as one queue item) and the bulk path of the executors' ``map``."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures.thread import BrokenThreadPool
from contextvars import copy_context
from itertools import islice
from typing import TYPE_CHECKING, Any

from ._calls import Pending, _Call, _check_callable, _wait_for_room, cancel_and_notify, running_loop, submit
from ._errors import PoolFull
from ._outcome import CancelledBeforeStart, ReportedElsewhere, interrupts_caller, tell_cancelled
from ._threads import ThreadPool

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._pool import Pool

__all__ = ["Chunk", "ChunkFuture", "MappedChunk", "submit_calls"]


class Chunk:
    """Jobs handed to one worker as one item, to run one after another.

    Made by `Dispatcher.dispatch_many` and by the executors' ``map`` with a
    ``chunksize``. For the pool's bulkhead a chunk is one job: one place,
    one queue item, one busy worker. Its jobs are counted one by one all the
    same: each failure is reported and counted, a submitted call cancelled
    before its turn is counted cancelled, and the counts are settled so that
    the pool's counters only grow (the worker counts the chunk itself as one
    job: completed if any of its jobs did, else failed if any did, else
    cancelled). A chunk holds at least one job.
    """

    __slots__ = ("calls", "context", "pool")

    def __init__(
        self, pool: Pool, calls: list[tuple[object, Callable[[], object]]], context: contextvars.Context | None
    ) -> None:
        self.pool = pool
        self.calls = calls  # (job as reported, callable), in order
        self.context = context  # of the code that dispatched them; each job runs in a copy

    def __call__(self) -> None:
        pool, context = self.pool, self.context
        failed = skipped = 0  # jobs that failed; submitted calls cancelled before their turn
        index = 0  # jobs over: calls[index] is the next to run
        counted = blamed = False
        clock = time.perf_counter
        calls = self.calls
        count = len(calls)  # Ctrl-C up to here finds the jobs in the chunk: the thread cancels them
        self.calls = []  # nothing holds a job after the chunk; no call from here to the try
        try:
            while index < count:
                job, fn = calls[index]
                started = clock()
                error: BaseException | None = None
                try:
                    if context is None:
                        fn()
                    else:
                        context.copy().run(fn)
                except CancelledBeforeStart:
                    skipped += 1
                except ReportedElsewhere:  # a submitted call: its future has the exception
                    failed += 1
                except BaseException as caught:
                    failed += 1
                    error = caught
                # No call from the outcome to here: Ctrl-C cannot strike
                # between a job's count and its step forward.
                calls[index] = None  # type: ignore[call-overload]
                index += 1
                if error is not None:
                    if interrupts_caller(error):
                        # Ctrl-C, or a signal handler's exit, on the main
                        # thread running the chunk itself: it propagates, as
                        # for any job, and the jobs not started are cancelled.
                        blamed = True
                        raise error
                    pool._report(job, error, None, clock() - started)
                    del error
                del job, fn  # nothing holds a job after its run
            completed = index - failed - skipped
            shares = _left_to_count(completed, failed, skipped)
            with pool._lock:
                pool._inline_completed += shares[0]
                pool._failed += shares[1]
                pool._cancelled += shares[2]
                counted = True  # in the same hold: Ctrl-C cannot part the two
        except BaseException:
            # Whatever struck (one of the jobs, or Ctrl-C between two of
            # them), the jobs not over are cancelled and every job is
            # counted once. No call until they are: Ctrl-C striking again
            # here (or after a job's own exit) cannot leave them uncounted.
            if not counted:
                completed, cancelled = index - failed - skipped, skipped + count - index
                if not blamed and index < count:  # Ctrl-C as the next job was to start: it counts as failed
                    failed, cancelled = failed + 1, cancelled - 1
                # The thread counts the interrupted chunk as failed: one job
                # is left out here, a failed one (else a completed one, which
                # then shows as failed, else a cancelled one).
                if failed:
                    failed -= 1
                elif completed:
                    completed -= 1
                else:
                    cancelled -= 1
                with pool._lock:
                    pool._inline_completed += completed
                    pool._failed += failed
                    pool._cancelled += cancelled
            for rest in range(index, count):
                tell_cancelled(calls[rest][1])
            raise
        if not completed:
            raise ReportedElsewhere if failed else CancelledBeforeStart

    def cancel_unstarted(self) -> None:
        """Count every job of the chunk cancelled but the one the worker counts, and settle their futures."""
        calls, self.calls = self.calls, []
        if not calls:  # the chunk took its jobs, and counts them
            return
        with self.pool._lock:
            self.pool._cancelled += len(calls) - 1
        for _, fn in calls:
            tell_cancelled(fn)

    def __repr__(self) -> str:
        return f"<chunk of {len(self.calls)} jobs>"


def _left_to_count(completed: int, failed: int, cancelled: int) -> tuple[int, int, int]:
    """Return what a chunk that ran to its end counts itself, out of its jobs' outcomes: all but one.

    The thread that runs a chunk counts it as one job: as completed if any
    job completed, else as failed if any failed, else as cancelled. One job
    of that kind is left out here.
    """
    if completed:
        completed -= 1
    elif failed:
        failed -= 1
    else:
        cancelled -= 1
    return completed, failed, cancelled


class ChunkFuture(Future[Any]):
    """The future of a `MappedChunk`.

    Its result is ``(values, errors)``: the calls' return values, last call
    first (the reader pops them, so that nothing keeps a value once it is
    taken), and the exceptions of the calls that raised, by call index, or
    ``None`` if none did.
    """

    calls = 0  # how many calls the chunk holds
    dropped = False  # cancel() was called: a running chunk skips the calls whose turn has not come

    def cancel(self) -> bool:
        """Cancel the chunk's calls not started: all of them, or the rest of a running chunk.

        Returns:
            Whether the whole chunk was cancelled (it had not started).
        """
        self.dropped = True
        return super().cancel()


class MappedChunk:
    """Calls of an executor's ``map`` handed to one worker as one item, settled through one future.

    For the pool a mapped chunk is one job, as a `Chunk` is, and its calls
    are counted one by one the same way. The calls run one after another,
    each in its own copy of the context ``map`` was called in; one that
    raises does not stop the others. Cancelling the future cancels the
    calls of a chunk that has not started; once started, a chunk runs to
    the end.
    """

    __slots__ = ("arguments", "context", "fn", "future", "pending", "pool", "told")

    def __init__(
        self,
        pool: Pool,
        pending: Pending,
        fn: Callable[..., Any],
        arguments: list[tuple[Any, ...]],
        future: ChunkFuture,
        context: contextvars.Context | None,
    ) -> None:
        self.pool = pool
        self.pending = pending
        self.fn = fn
        self.arguments = arguments
        self.future = future
        self.context = context
        self.told = False  # the future was told the chunk starts, or will never start

    def __call__(self) -> None:
        future, pool = self.future, self.pool
        if self.pending.broken is not None:  # an initializer failed: run nothing more
            self.cancel_unstarted()
            raise CancelledBeforeStart
        # Before the future runs: Ctrl-C up to here finds the future pending
        # and the calls in the chunk, and the thread cancels them.
        count = len(self.arguments)
        self.told = True  # before the call that tells it: the future is never told twice
        if not future.set_running_or_notify_cancel():
            self._count_cancelled()
            raise CancelledBeforeStart
        fn, arguments, context = self.fn, self.arguments, self.context
        del self.fn, self.arguments, self.context  # nothing holds a call after the chunk
        values: list[Any] = []
        errors: dict[int, BaseException] | None = None
        index = failures = 0  # calls over; of those, calls that raised (counted here: no call in between)
        counted = False  # the calls are counted: Ctrl-C from then on must not count them again
        try:
            while index < count and not future.dropped:
                args = arguments[index]
                arguments[index] = None  # type: ignore[call-overload]
                if context is None:
                    failed, value = _call(fn, args)
                else:
                    failed, value = context.copy().run(_call, fn, args)
                del args
                index += 1  # the call is over, and counted with its failure: no call in between
                if failed:
                    if errors is None:
                        errors = {}
                    errors[index - 1] = value
                    failures += 1
                    value = None
                values.append(value)
                del value
            completed = index - failures
            skipped = count - index  # the map was left, or the executor cancelled its calls, as the chunk ran
            with pool._lock:  # the worker counts the chunk itself as one: completed, failed or cancelled
                if completed:
                    pool._inline_completed += completed - 1
                    pool._failed += failures
                    pool._cancelled += skipped
                elif failures:
                    pool._failed += failures - 1
                    pool._cancelled += skipped
                else:
                    pool._cancelled += skipped - 1
                counted = True
            if skipped:
                if errors is None:
                    errors = {}
                for rest in range(index, count):
                    values.append(None)
                    errors[rest] = CancelledError()
            values.reverse()
            future.set_result((values, errors))
        except BaseException as error:
            # Ctrl-C on a thread that runs the chunk itself, which counts
            # the chunk as failed: for the call about to run (the rest are
            # cancelled), or once every call was made, for the last one.
            # No call until the counts are in: a second Ctrl-C striking
            # here cannot leave the calls uncounted.
            if not counted:
                with pool._lock:
                    if index < count:
                        pool._inline_completed += index - failures
                        pool._failed += failures
                        pool._cancelled += count - index - 1
                    else:
                        pool._inline_completed += count - max(failures, 1)
                        pool._failed += max(failures, 1) - 1
            if not future.done():  # Ctrl-C may strike as set_result returns
                future.set_exception(error)
            raise
        del values, errors
        if not completed:
            raise ReportedElsewhere if failures else CancelledBeforeStart

    def cancel_unstarted(self) -> None:
        """Count every call of the chunk cancelled but the one the worker counts, and settle the future.

        The future is cancelled (`Dispatcher.finalize` with
        ``cancel_pending=True``), and `concurrent.futures.wait` sees it
        done; or it gets `BrokenThreadPool` if the executor broke (a thread
        initializer failed).
        """
        self._count_cancelled()
        future = self.future
        if self.told:  # the chunk began (Ctrl-C struck as it did): a future still pending is cancelled
            future.cancel()
            return
        self.told = True
        broken = self.pending.broken
        if broken is None:
            cancel_and_notify(future)
        elif future.set_running_or_notify_cancel():
            future.set_exception(BrokenThreadPool(broken))

    def _count_cancelled(self) -> None:
        arguments = getattr(self, "arguments", None)
        if arguments:
            self.arguments = []
            with self.pool._lock:
                self.pool._cancelled += len(arguments) - 1

    def __repr__(self) -> str:
        return f"<chunk of {self.future.calls} mapped calls>"


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    """Return ``(False, result)`` or ``(True, exception)``, caught in a frame that knows no chunk.

    The exception's traceback keeps this frame: it lets go of the function
    and the arguments first (see `_calls._run`).
    """
    try:
        return False, fn(*args)
    except BaseException as error:
        del fn, args
        return True, error


def submit_calls(
    dispatcher: Dispatcher,
    priority: int,
    pending: Pending,
    fn: Callable[..., Any],
    arguments: Iterator[tuple[Any, ...]],
    chunksize: int,
    deadline: float | None,
    futures: deque[Future[Any]],
    via: Callable[..., Future[Any]] | None = None,
) -> None:
    """Submit ``fn(*args)`` through an executor for each item of ``arguments``; append the futures to ``futures``.

    The bulk path of ``map``: the pool is found once, and the calls go
    straight to it, up to ``chunksize`` of them as one `MappedChunk` with
    one `ChunkFuture` for them all. A future is appended once its call or
    chunk is in the pool. On a thread that runs an event loop, a call or
    chunk that finds the pool full waits for room in the loop, as with
    ``submit``. A pool with a backend gets each call on its own, and so
    does ``via``, the ``submit`` of an executor subclass that overrides it
    (which takes no deadline).

    Raises:
        PoolFull: The pool had no room before ``deadline``; the calls read
            for that hand-over were not submitted (their futures are
            cancelled and not appended).
        RuntimeError: As ``submit``.
        TypeError: ``fn`` is not callable.
    """
    if via is not None:
        for args in arguments:
            futures.append(via(fn, *args))
        return
    pool = dispatcher._pool(priority)
    if type(pool) is not ThreadPool:  # an engine runs each call on its own: no chunks
        for args in arguments:
            futures.append(submit(dispatcher, priority, pending, fn, args, {}, _remaining(deadline)))
        return
    loop = running_loop()
    discard = pending.discard
    checked = False
    for group in _groups(arguments, chunksize):
        if not checked:  # once there is a call to make, as submit does
            _check_callable(fn)
            checked = True
        if len(group) == 1:
            future: Future[Any] = Future()
            future.add_done_callback(discard)  # before it is in the set: Ctrl-C cannot leave it there
            call = _Call(future, fn, group[0], {}, None, pending)
            _hand_over(dispatcher, priority, pool, pending, call, future, deadline, loop)
            futures.append(future)
            continue
        chunk_future = ChunkFuture()
        chunk_future.calls = len(group)
        chunk_future.add_done_callback(discard)
        context = copy_context() if dispatcher._propagate_context else None
        chunk = MappedChunk(pool, pending, fn, group, chunk_future, context)
        _hand_over(dispatcher, priority, pool, pending, chunk, chunk_future, deadline, loop)
        futures.append(chunk_future)


def _groups(arguments: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Yield the items of ``arguments`` in groups of ``size``, the last one maybe shorter."""
    if size == 1:
        for args in arguments:
            yield [args]
        return
    while group := list(islice(arguments, size)):
        yield group


def _hand_over(
    dispatcher: Dispatcher,
    priority: int,
    pool: Pool,
    pending: Pending,
    call: _Call | MappedChunk,
    future: Future[Any],
    deadline: float | None,
    loop: asyncio.AbstractEventLoop | None,
) -> None:
    """Put ``call`` (one call, or a chunk of them) in the executor's pending set and in the pool."""
    try:
        pending.check_process()
        with pending.lock:
            pending.check_open_locked()
            pending.futures.add(future)
        dispatcher._check_open()
        timeout = 0 if loop is not None else None if deadline is None else max(0.0, deadline - time.monotonic())
        # A chunk carries its own context (each call runs in a copy of it).
        context = copy_context() if type(call) is _Call and dispatcher._propagate_context else None
        try:
            pool.submit(call, call, None, context, timeout)
        except PoolFull:
            if loop is None:
                raise
            _wait_for_room(dispatcher, priority, pending, loop, call)
    except BaseException as error:
        future.cancel()  # a call that was queued all the same (Ctrl-C) is then dropped and counted cancelled
        pending.refused(error)
        raise


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
