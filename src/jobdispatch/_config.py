"""Pool configuration and its validation."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from ._backends import check_backend

__all__ = ["DEFAULT_QUEUE_SIZE", "LONGEST_WAIT", "WAIT_SLICE", "ConfigLike", "PoolConfig", "wait_in_slices"]

DEFAULT_QUEUE_SIZE = 1024
"""Jobs a pool holds waiting for a worker, beyond the running ones, unless
`PoolConfig.queue_size` says otherwise. Large enough for producers and
workers to hand jobs over in bursts, small enough to stay well under a
megabyte per pool."""


WAIT_SLICE = 0.25
"""The longest a caller's thread blocks at once, in seconds, in a wait that may be longer.

A free-threaded CPython can miss a Ctrl-C that comes just as a thread
starts to block on a lock: the thread would sleep on until the wait ends.
Waits that block the caller (`Dispatcher.wait`, `Dispatcher.finalize`,
leaving a batch, joining a thread) wake this often, so that a
pending Ctrl-C is raised within this time."""


def wait_in_slices(wait: Callable[[float], bool], deadline: float | None) -> bool:
    """Call ``wait(seconds)`` in slices of at most `WAIT_SLICE` until it returns ``True`` or ``deadline`` passes.

    Returns:
        ``False`` if ``deadline`` (a `time.monotonic` time, or ``None`` for
        none) passed first.
    """
    while True:
        step = WAIT_SLICE if deadline is None else min(WAIT_SLICE, max(0.0, deadline - time.monotonic()))
        if wait(step):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


LONGEST_WAIT = threading.TIMEOUT_MAX - 1.0
"""The longest wait, in seconds, handed to a lock, an event, a queue or a join.

The platform refuses longer ones (`threading.TIMEOUT_MAX`: about 292 years on
Linux, 49 days on Windows): a longer timeout means "forever", and the timer
splits a longer delay into waits of this length. The second of margin covers
the rounding of a deadline computed from such a timeout."""


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_priority(value: object, name: str = "priority") -> int:
    """Return ``value`` as an int priority, or raise `TypeError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """Return a finite, non-negative number of seconds, or ``None`` for forever.

    Infinity, and any timeout longer than the platform can wait
    (`LONGEST_WAIT`), mean forever.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if (isinstance(value, float) and math.isnan(value)) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if value > LONGEST_WAIT:  # also an int too large for a float
        return None  # forever: the lock primitives refuse an infinite or longer timeout
    return float(value)


def check_delay(value: object) -> float:
    """Return a finite, non-negative number of seconds for a delayed job.

    Any finite delay is accepted: the timer waits for a long one in several
    steps (`LONGEST_WAIT`).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"delay must be a number of seconds, got {value!r}")
    if (isinstance(value, float) and math.isnan(value)) or value < 0:
        raise ValueError(f"delay must be >= 0, got {value!r}")
    if value > sys.float_info.max:  # infinite, or an int too large for a float
        raise ValueError(f"delay must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How one pool is built: its priority, its threads and its queue.

    Without a ``backend``, the pool runs its jobs on its own threads. With
    one, it runs them on that engine (processes, a Dask cluster) and keeps
    the same limits: ``workers`` jobs in flight on the engine, ``queue_size``
    more waiting in the pool, not yet sent.

    Args:
        priority: The priority whose jobs the pool runs. Any int; pools are
            independent, so the number is a name, not a rank.
        workers: The most threads the pool runs at once (>= 1). Threads start
            on demand, so a large number costs nothing until it is used.
        queue_size: How many jobs may wait for a worker (>= 0). When the
            workers are all busy and the queue is full, `Dispatcher.dispatch`
            blocks. With 0, a dispatch returns only once a worker is free for
            the job.
        backend: ``None`` (the pool's own threads), a
            `concurrent.futures.Executor` (a ``ProcessPoolExecutor``, Dask's
            ``Client.get_executor()``, ...), a ``distributed.Client``, or an
            `ExecutorBackend` or `DaskBackend` for options. The engine
            belongs to the caller: `Dispatcher.finalize` does not shut it
            down. See the how-to on scaling out.

    Raises:
        TypeError: A field is not an int (bools are refused too), or
            ``backend`` is none of the above.
        ValueError: ``workers < 1`` or ``queue_size < 0``.
    """

    priority: int
    workers: int
    queue_size: int = DEFAULT_QUEUE_SIZE
    backend: object = None

    def __post_init__(self) -> None:
        check_priority(self.priority)
        check_int("workers", self.workers, 1)
        check_int("queue_size", self.queue_size, 0)
        check_backend(self.backend)


ConfigLike: TypeAlias = "int | Mapping[int, int] | PoolConfig | Iterable[PoolConfig]"
"""What `Dispatcher` accepts as ``config``: ``n`` workers in pool 0, a mapping
``{priority: workers}``, or `PoolConfig` objects."""


def normalize_config(config: object) -> tuple[PoolConfig, ...]:
    """Turn any accepted form of ``config`` into a tuple of `PoolConfig`.

    Raises:
        TypeError: ``config`` or one of its items has the wrong type.
        ValueError: ``config`` is empty, repeats a priority, or holds a bad
            number.
    """
    pools: tuple[PoolConfig, ...]
    if isinstance(config, bool):
        raise TypeError(f"config must be an int, a mapping or PoolConfigs, got {config!r}")
    if isinstance(config, int):
        pools = (PoolConfig(0, config),)
    elif isinstance(config, Mapping):
        pools = tuple(PoolConfig(priority, workers) for priority, workers in config.items())
    elif isinstance(config, PoolConfig):
        pools = (config,)
    elif isinstance(config, Iterable) and not isinstance(config, (str, bytes)):
        items = tuple(config)
        for item in items:
            if not isinstance(item, PoolConfig):
                raise TypeError(f"config items must be PoolConfig, got {item!r}")
        pools = items
    else:
        raise TypeError(f"config must be an int, a mapping or PoolConfigs, got {config!r}")
    if not pools:
        raise ValueError("config must describe at least one pool, got none")
    seen: set[int] = set()
    for pool in pools:
        if pool.priority in seen:
            raise ValueError(f"config has priority {pool.priority!r} more than once")
        seen.add(pool.priority)
    return pools
