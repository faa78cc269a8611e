"""The `Job` protocol: what a dispatcher runs."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Job"]


@runtime_checkable
class Job(Protocol):
    """A unit of work with a priority, as in go-dispatcher.

    Any object with these two methods is a job; there is nothing to inherit.
    A plain zero-argument callable can be dispatched too, with the pool
    chosen by ``priority=``.
    """

    def do(self) -> None:
        """Run the job. Called once, on one of its pool's threads."""

    def priority(self) -> int:
        """Return the priority that selects the job's pool.

        Called once per dispatch, in the dispatching thread.
        """
