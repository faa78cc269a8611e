"""How a job ends, and how that is told: the signals job wrappers raise, and the notes on exceptions."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable

__all__ = [
    "QUEUED_NOTE",
    "CancelledBeforeStart",
    "NoThread",
    "ReportedElsewhere",
    "call_job",
    "interrupts_caller",
    "logger",
    "mark_queued",
    "mark_ran",
    "safe_repr",
    "tell_cancelled",
    "was_queued",
]

logger = logging.getLogger("jobdispatch")


QUEUED_NOTE = "jobdispatch: the job was queued before this exception struck: it will run"
RAN_NOTE = "jobdispatch: the dispatching thread ran the job itself, and counted it, as this exception struck"


def mark_queued(error: BaseException) -> None:
    """Say on ``error`` (Ctrl-C, say) that the job whose dispatch it interrupted was queued all the same."""
    with contextlib.suppress(Exception):
        error.add_note(QUEUED_NOTE)


def mark_ran(error: BaseException) -> None:
    """Say on ``error`` that the job whose dispatch it ends was run, and counted, by the dispatching thread."""
    with contextlib.suppress(Exception):
        error.add_note(RAN_NOTE)


def was_queued(error: BaseException) -> bool:
    """Whether ``error`` ended a dispatch after its job was queued or run (see `mark_queued`, `mark_ran`)."""
    notes = getattr(error, "__notes__", ())
    return QUEUED_NOTE in notes or RAN_NOTE in notes


def safe_repr(obj: object) -> str:
    """Return ``repr(obj)``, or a plain description if that raises."""
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__qualname__} object at {id(obj):#x} (repr failed)>"


class NoThread(Exception):
    """Raised by `Pool._reserve_worker_locked` (in ``_pool``) when the pool's first thread cannot start."""


class ReportedElsewhere(BaseException):
    """Raised by a job wrapper whose job failed and reported it itself.

    The executor view sets the exception on the call's future; the worker
    counts the job as failed and reports nothing more.
    """


class CancelledBeforeStart(BaseException):
    """Raised by a job wrapper whose job was cancelled before it started.

    The worker counts the job as cancelled instead of failed, and reports
    nothing.
    """


def interrupts_caller(error: BaseException) -> bool:
    """Whether a job's ``error`` is really the caller's: Ctrl-C or a signal handler's exit on the main thread."""
    return isinstance(error, KeyboardInterrupt | SystemExit) and threading.current_thread() is threading.main_thread()


def call_job(fn: Callable[[], object], context: contextvars.Context | None) -> BaseException | None:
    try:
        if context is None:
            fn()
        else:
            context.run(fn)
    except BaseException as error:
        return error
    return None


def tell_cancelled(fn: Callable[[], object]) -> None:
    """Let a wrapper that settles something (an executor future) know its job will never run."""
    cancel = getattr(fn, "cancel_unstarted", None)
    if cancel is not None:
        with contextlib.suppress(BaseException):
            cancel()
