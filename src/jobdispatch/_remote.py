"""What runs a job in the process of a backend: the one entry point that engines call.

A pool with a backend sends each job as bytes (pickled at dispatch) to
`run_job`, which engines reach by reference, as ``jobdispatch._remote.run_job``:
jobdispatch must therefore be installed wherever the jobs run. The module
imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any, TypeAlias

from ._errors import RemoteJobError

__all__ = ["Call", "Payload", "run_job"]

Call: TypeAlias = "tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool]"
"""A job to send: ``(fn, args, kwargs, keep_result)``."""

Payload: TypeAlias = "bytes | Call"
"""A job as sent: a pickled `Call`, or, for an engine in this process, the `Call` itself."""


def run_job(payload: Payload, serializer: str = "pickle") -> object:
    """Run a job sent by a pool with a backend; return its result if it is wanted.

    A job's exception that could not travel back (its class or its state
    cannot be pickled, or unpickled) is replaced by a `RemoteJobError` with
    its type name and text.

    Args:
        payload: The job, as made by the pool at dispatch.
        serializer: The module that pickled it (``"pickle"`` or
            ``"cloudpickle"``), used to check that an exception can go back.

    Returns:
        The call's result for the executor view of a pool, ``None`` for a job.
    """
    fn, args, kwargs, keep_result = pickle.loads(payload) if isinstance(payload, bytes) else payload
    del payload
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:
        reason = _unsendable(error, serializer)
        if reason is None:
            raise
        try:
            text = str(error)
        except Exception:
            text = "(str() of the exception raised)"
        raise RemoteJobError(f"{type(error).__module__}.{type(error).__qualname__}", text, reason) from None
    return result if keep_result else None


def _unsendable(error: BaseException, serializer: str) -> str | None:
    """Return why ``error`` cannot be pickled and unpickled, or ``None`` if it can."""
    if serializer == "none":
        return None  # it stays in this process
    try:
        module: Any = pickle if serializer == "pickle" else importlib.import_module(serializer)
        pickle.loads(module.dumps(error))
    except Exception as problem:
        return f"{type(problem).__name__}: {problem}"
    return None
