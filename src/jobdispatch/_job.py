"""The `Job` protocol: what a dispatcher runs."""

from __future__ import annotations

import functools
import reprlib
from typing import Protocol, runtime_checkable

__all__ = ["Job", "Named", "check_name", "job_name", "unwrap"]


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


class Named:
    """A job dispatched with ``name=``: the job, and the name that reports use for it."""

    __slots__ = ("job", "name")

    def __init__(self, job: object, name: str) -> None:
        self.job = job
        self.name = name

    def __repr__(self) -> str:
        return f"<job {self.name!r}>"


def check_name(name: object) -> str:
    """Return ``name`` if it is a str, or raise `TypeError`."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    return name


def job_name(job: object) -> str:
    """Return how reports name ``job``.

    In order: the ``name=`` it was dispatched with; its own ``name``
    attribute, if that is a str; the qualified name of a function or method;
    its ``repr()``.
    """
    if type(job) is Named:
        return job.name
    if type(job) is functools.partial:
        keywords = (f"{key}={_short_repr(value)}" for key, value in job.keywords.items())
        arguments = ", ".join([*map(_short_repr, job.args), *keywords])
        return f"{job_name(job.func)}({arguments})"
    try:
        name = getattr(job, "name", None)
        if isinstance(name, str):
            return name
        qualname = getattr(job, "__qualname__", None)
        if isinstance(qualname, str) and not isinstance(job, type):
            return qualname
        return repr(job)
    except Exception:
        return f"<{type(job).__qualname__} object at {id(job):#x} (repr failed)>"


_reprs = reprlib.Repr()
_reprs.maxstring = _reprs.maxother = 60


def _short_repr(value: object) -> str:
    try:
        return _reprs.repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object (repr failed)>"


def unwrap(job: object) -> object:
    """Return the job itself, without the name it was dispatched with."""
    return job.job if type(job) is Named else job
