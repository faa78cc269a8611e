"""Exceptions raised by jobdispatch."""

from __future__ import annotations

__all__ = ["DispatcherClosed", "DispatcherError", "PoolFull", "UnknownPriority"]


class DispatcherError(Exception):
    """Base class of every error that jobdispatch raises on purpose.

    Raised as such when a call would deadlock: `Dispatcher.wait`,
    `Dispatcher.finalize` or leaving a batch from inside one of the
    dispatcher's own jobs.
    """


class DispatcherClosed(DispatcherError, RuntimeError):
    """Raised when a job is dispatched after `Dispatcher.finalize` began.

    A dispatch that races `finalize` either runs its job or raises this: no
    job is ever accepted and then dropped. Also raised by any use of a
    dispatcher inherited through ``fork()``, and when leaving a batch some of
    whose jobs ``finalize(cancel_pending=True)`` cancelled.
    """


class PoolFull(DispatcherError):
    """Raised when the job's pool stayed full until the dispatch timeout ran out.

    With ``timeout=0`` it is raised at once if the pool has no room.
    """


class UnknownPriority(DispatcherError, LookupError):
    """Raised when no pool is configured for the requested priority."""
