"""What runs a job in the process of a backend.

A pool with a backend pickles each job at dispatch and seals it (`seal`):
the engine is asked to run ``pickle.loads(sealed)``, a function of the
standard library that every engine can send, and unpickling the sealed bytes
calls `run_job`, which unpickles and runs the job. jobdispatch must be
installed wherever jobs run; where it is not, the job fails with
``ModuleNotFoundError`` like any job whose code is missing, and the engine
keeps working. The module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any, TypeAlias

from ._errors import RemoteJobError

__all__ = ["Call", "Payload", "run_job", "seal"]

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


class _Sealed:
    """Unpickles into the outcome of running the job it carries."""

    __slots__ = ("payload", "serializer")

    def __init__(self, payload: bytes, serializer: str) -> None:
        self.payload = payload
        self.serializer = serializer

    def __reduce__(self) -> tuple[Callable[[bytes, str], object], tuple[bytes, str]]:
        return run_job, (self.payload, self.serializer)


def seal(payload: bytes, serializer: str) -> bytes:
    """Return bytes whose unpickling, with `pickle.loads`, runs the pickled job ``payload``."""
    return pickle.dumps(_Sealed(payload, serializer), pickle.HIGHEST_PROTOCOL)
