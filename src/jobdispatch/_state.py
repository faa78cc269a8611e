"""The lifecycle of a dispatcher and of its pools, as one value read at once."""

from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.Enum):
    """Where a dispatcher, or one of its pools, is in its life.

    One value, written under a lock and read once by each caller, so that a
    reader never sees a transition half made.
    """

    OPEN = "open"
    """Accepting jobs from anyone."""
    DRAINING = "draining"
    """`Dispatcher.finalize` waits for the jobs; only the dispatcher's own jobs may dispatch follow-ups."""
    CANCELLING = "cancelling"
    """``finalize(cancel_pending=True)``: nothing new is accepted; what has not started is dropped."""
    CLOSED = "closed"
    """Finalized, or inherited through ``fork()``: nothing is accepted."""
