"""Chunks: several jobs handed to one worker as one item by `Dispatcher.dispatch_many`."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._outcome import ReportedElsewhere, call_job, interrupts_caller

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["Chunk"]


class Chunk:
    """Jobs that `Dispatcher.dispatch_many` hands to one worker as one item, to run one after another.

    For the pool's bulkhead a chunk is one job: one place, one queue item,
    one busy worker. Its jobs are counted one by one all the same: each
    failure is reported and counted, and the counts are settled so that the
    pool's counters only grow (the worker counts the chunk itself as one
    job that completed, or that failed if all of its jobs did).
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
        failed = 0
        calls, self.calls = self.calls, []  # nothing holds a job after the chunk
        count = len(calls)
        interrupt: BaseException | None = None
        for index in range(count):
            job, fn = calls[index]
            calls[index] = None  # type: ignore[call-overload]
            started = time.perf_counter()
            error = call_job(fn, None if context is None else context.copy())
            del fn
            if error is not None:
                failed += 1
                if interrupts_caller(error):
                    # Ctrl-C, or a signal handler's exit, on the main thread
                    # running the chunk itself: it propagates, as for any
                    # job, and the jobs not started are cancelled.
                    interrupt = error
                    break
                pool._report(job, error, None, time.perf_counter() - started)
            del job, error
        ran = index + 1 if count else 0
        counted_failed = interrupt is not None or failed == ran  # how the worker counts the chunk itself
        with pool._lock:
            pool._cancelled += count - ran
            if counted_failed:
                pool._failed += failed - 1
                pool._inline_completed += ran - failed
            else:
                pool._inline_completed += ran - failed - 1
                pool._failed += failed
        if interrupt is not None:
            raise interrupt
        if counted_failed:
            raise ReportedElsewhere

    def cancel_unstarted(self) -> None:
        """Count every job of the chunk cancelled but the one the worker counts."""
        with self.pool._lock:
            self.pool._cancelled += len(self.calls) - 1
        self.calls = []

    def __repr__(self) -> str:
        return f"<chunk of {len(self.calls)} jobs>"
