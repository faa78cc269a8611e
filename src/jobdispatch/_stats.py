"""Snapshots of a pool's counters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of one pool, taken under the pool's lock.

    Attributes:
        priority: The pool's priority.
        workers: How many worker threads the pool may run (its limit); for
            a pool with a backend, how many jobs it keeps in flight on it.
        busy: Jobs a worker has taken from the queue and not finished:
            running, or about to start (`Dispatcher.finalize` with
            ``cancel_pending=True`` may still drop one that has not
            started); for a pool with a backend, jobs sent to it and not
            over yet.
        idle: ``workers - busy``: how many more jobs could start at once.
        queued: Jobs waiting in the pool's queue for a worker.
        delayed: Jobs from `Dispatcher.dispatch_later` whose time has not
            come yet, or that are due and waiting for room in the pool.
        completed: Jobs that returned normally.
        failed: Jobs that raised.
        cancelled: Jobs dropped before they started (by
            ``finalize(cancel_pending=True)``, a failed batch or a cancelled
            future).
    """

    priority: int
    workers: int
    busy: int
    idle: int
    queued: int
    delayed: int
    completed: int
    failed: int
    cancelled: int
