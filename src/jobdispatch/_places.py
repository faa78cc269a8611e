"""Places in a pool, as tokens that return to their pool, and the wake-ups that are not places."""

from __future__ import annotations

import weakref
from queue import SimpleQueue
from typing import Any

__all__ = ["NOWHERE", "Place", "WakeUp"]


class Place(weakref.ref[SimpleQueue[Any]]):
    """One place in a pool, as a token: taken by a producer, carried by the job, given back by the worker.

    A place is a weak reference to the queue of free places it belongs to.
    One that is dropped instead of given back puts a new one in that queue:
    Ctrl-C can strike just as the C call that hands a place over returns,
    before any Python code can store it; the place is then dropped as the
    exception unwinds, and the pool keeps its capacity. Being weak, the
    reference lets a collected pool take its places with it.
    """

    __slots__ = ()

    def __del__(self) -> None:
        home = self()
        if home is not None:
            home.put(type(self)(home))  # no global lookup: this may run at interpreter exit


class WakeUp(Place):
    """What `Pool.close` puts where places go, to wake the producers blocked on a full pool.

    It is not a place: whoever takes one either is refused (and puts it
    back for the next blocked producer) or drops it and waits on, so waking
    producers never adds room to a closed pool. Dropped, it returns nothing.
    """

    __slots__ = ()

    def __del__(self) -> None:
        pass


NOWHERE: SimpleQueue[Any] = SimpleQueue()  # the home of every WakeUp: nobody reads it
