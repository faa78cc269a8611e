"""Jobs handed over in bulk: `Chunk` (several jobs as one queue item) and the bulk path of the executors' ``map``."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextvars import copy_context
from itertools import islice
from typing import TYPE_CHECKING, Any

from ._calls import Pending, _Call, _check_callable, _wait_for_room, running_loop, submit
from ._errors import PoolFull
from ._outcome import CancelledBeforeStart, ReportedElsewhere, interrupts_caller, tell_cancelled
from ._threads import ThreadPool

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._pool import Pool

__all__ = ["Chunk", "submit_calls"]


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
        calls, self.calls = self.calls, []  # nothing holds a job after the chunk
        count = len(calls)
        interrupt: BaseException | None = None
        clock = time.perf_counter
        for index in range(count):
            job, fn = calls[index]
            calls[index] = None  # type: ignore[call-overload]
            started = clock()
            try:
                if context is None:
                    fn()
                else:
                    context.copy().run(fn)
            except CancelledBeforeStart:
                skipped += 1
            except ReportedElsewhere:  # a submitted call: its future has the exception
                failed += 1
            except BaseException as error:
                failed += 1
                if interrupts_caller(error):
                    # Ctrl-C, or a signal handler's exit, on the main thread
                    # running the chunk itself: it propagates, as for any
                    # job, and the jobs not started are cancelled.
                    interrupt = error
                    break
                pool._report(job, error, None, clock() - started)
            del job, fn  # nothing holds a job after its run
        ran = index + 1
        for rest in range(ran, count):  # left by Ctrl-C: settle their futures, if any
            tell_cancelled(calls[rest][1])
        completed = ran - failed - skipped
        cancelled = skipped + count - ran
        with pool._lock:
            if completed and interrupt is None:  # the worker counts the chunk as completed
                pool._inline_completed += completed - 1
                pool._failed += failed
                pool._cancelled += cancelled
            elif failed:  # ... as failed
                pool._inline_completed += completed
                pool._failed += failed - 1
                pool._cancelled += cancelled
            else:  # ... as cancelled
                pool._cancelled += cancelled - 1
        if interrupt is not None:
            raise interrupt
        if not completed:
            raise ReportedElsewhere if failed else CancelledBeforeStart

    def cancel_unstarted(self) -> None:
        """Count every job of the chunk cancelled but the one the worker counts, and settle their futures."""
        calls, self.calls = self.calls, []
        with self.pool._lock:
            self.pool._cancelled += len(calls) - 1
        for _, fn in calls:
            tell_cancelled(fn)

    def __repr__(self) -> str:
        return f"<chunk of {len(self.calls)} jobs>"


def submit_calls(
    dispatcher: Dispatcher,
    priority: int,
    pending: Pending,
    fn: Callable[..., Any],
    arguments: Iterator[tuple[Any, ...]],
    chunksize: int,
    deadline: float | None,
    futures: deque[Future[Any]],
) -> None:
    """Submit ``fn(*args)`` through an executor for each item of ``arguments``; append the futures to ``futures``.

    The bulk path of ``map``: the pool is found once, and the calls go
    straight to it, up to ``chunksize`` of them as one `Chunk`. A future is
    appended once its call is in the pool. On a thread that runs an event
    loop, calls that find the pool full wait for room in the loop, one by
    one, as with ``submit``. A pool with a backend gets each call on its own.

    Raises:
        PoolFull: The pool had no room before ``deadline``; the calls read
            for that hand-over were not submitted (their futures are
            cancelled and not appended).
        RuntimeError: As ``submit``.
        TypeError: ``fn`` is not callable.
    """
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
            _hand_over(
                dispatcher,
                priority,
                pool,
                pending,
                (_Call(future, fn, group[0], {}, None, pending),),
                (future,),
                deadline,
                loop,
            )
            futures.append(future)
            continue
        fresh: list[Future[Any]] = []
        calls: list[_Call] = []
        for args in group:
            future = Future()
            future.add_done_callback(discard)
            fresh.append(future)
            calls.append(_Call(future, fn, args, {}, None, pending))
        _hand_over(dispatcher, priority, pool, pending, calls, fresh, deadline, loop)
        futures.extend(fresh)


def _groups(arguments: Iterator[tuple[Any, ...]], size: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    """Yield the items of ``arguments`` in groups of ``size``, the last one maybe shorter."""
    if size == 1:
        for args in arguments:
            yield (args,)
        return
    while group := list(islice(arguments, size)):
        yield group


def _hand_over(
    dispatcher: Dispatcher,
    priority: int,
    pool: Pool,
    pending: Pending,
    calls: Sequence[_Call],
    futures: Sequence[Future[Any]],
    deadline: float | None,
    loop: asyncio.AbstractEventLoop | None,
) -> None:
    """Put ``calls`` in the executor's pending set and in the pool: one call alone, or several as a `Chunk`."""
    try:
        with pending.lock:
            pending.check_open_locked()
            pending.futures.update(futures)
        dispatcher._check_open()
        timeout = 0 if loop is not None else None if deadline is None else max(0.0, deadline - time.monotonic())
        full = False
        try:
            if len(calls) == 1:
                call = calls[0]
                pool.submit(call, call, None, copy_context() if dispatcher._propagate_context else None, timeout)
            else:
                dispatcher._submit_chunk(pool, [(call, call) for call in calls], timeout)
        except PoolFull:
            if loop is None:
                raise
            full = True
        if full:
            assert loop is not None
            for call in calls:
                _wait_for_room(dispatcher, priority, pending, loop, call)
    except BaseException as error:
        for future in futures:
            future.cancel()  # a call that was queued all the same (Ctrl-C) is then dropped and counted cancelled
        pending.refused(error)
        raise


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
