"""Exceptions raised by jobdispatch."""

from __future__ import annotations

__all__ = [
    "DispatcherClosed",
    "DispatcherError",
    "EngineBroken",
    "JobNotSerializable",
    "PoolFull",
    "RemoteJobError",
    "ResultNotSerializable",
    "UnknownPriority",
]


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


class JobNotSerializable(DispatcherError, TypeError):
    """Raised at dispatch when a job for a pool with a backend cannot be serialised.

    A pool that runs its jobs in other processes (a ``ProcessPoolExecutor``,
    a Dask cluster) pickles each job when it is dispatched. A job that cannot
    be pickled (a lambda for the standard `pickle`, a closure over a lock)
    raises this, naming the job and the reason; it is neither counted nor
    queued.
    """


class EngineBroken(DispatcherError, RuntimeError):
    """A job's failure when the pool's backend refused to take it, or lost it.

    The engine belongs to the user, so the pool cannot replace it: a
    ``ProcessPoolExecutor`` broken by a worker process that died, or one that
    was shut down, or a closed Dask client, fails every further job of the
    pool with this error (counted in ``stats().failed`` and reported to
    ``on_error`` or the job's batch) instead of hanging. So does an engine
    whose ``submit`` raises anything, or that will never say a job is over
    (its future refuses a done-callback; a Dask client closing as the job is
    sent).
    """


class ResultNotSerializable(DispatcherError, TypeError):
    """The exception of a call whose result could not be sent back from the process that ran it.

    A call through the executor view of a pool with a backend sends its
    result back pickled. A result that cannot be pickled where the call ran,
    or unpickled in the dispatching process, fails the call's future with
    this error, which says why; the call is counted failed, and the engine
    keeps working.
    """


class RemoteJobError(DispatcherError):
    """Stands in for a job's exception that could not be sent back from the process that ran it.

    It keeps the original's type name and text.

    Args:
        type_name: The qualified name of the original exception's class.
        text: ``str()`` of the original exception.
        reason: Why it could not be sent back.
    """

    def __init__(self, type_name: str, text: str, reason: str) -> None:
        super().__init__(type_name, text, reason)
        self.type_name = type_name
        self.text = text
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.type_name}: {self.text} (the job's exception could not be sent back: {self.reason})"
