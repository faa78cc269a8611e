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

from ._errors import RemoteJobError, ResultNotSerializable

__all__ = ["Call", "Payload", "load_result", "run_job", "seal"]

Call: TypeAlias = "tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool]"
"""A job to send: ``(fn, args, kwargs, keep_result)``."""

Payload: TypeAlias = "bytes | Call"
"""A job as sent: a pickled `Call`, or, for an engine in this process, the `Call` itself."""


def run_job(payload: Payload, serializer: str = "pickle") -> object:
    """Run a job sent by a pool with a backend; return its result, pickled, if it is wanted.

    A job's exception, or one raised as the job is unpickled here, that
    could not travel back (its class or its state cannot be pickled, or
    unpickled) is replaced by a `RemoteJobError` with its type name and
    text. The result is pickled here, and unpickled by `load_result` in the
    dispatching process: an engine that unpickles a result it cannot load
    may break (a ``ProcessPoolExecutor`` does).

    Args:
        payload: The job, as made by the pool at dispatch.
        serializer: The module that pickled it (``"pickle"`` or
            ``"cloudpickle"``), used to check that an exception can go back.

    Returns:
        The call's result for the executor view of a pool (pickled, unless
        ``serializer`` is ``"none"``), ``None`` for a job.

    Raises:
        ResultNotSerializable: The result cannot be pickled.
    """
    try:
        # Unpickling runs code of the job's too (its classes' __setstate__ or
        # __reduce__): what it raises goes back as the job's exception would.
        fn, args, kwargs, keep_result = pickle.loads(payload) if isinstance(payload, bytes) else payload
        del payload
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
    if not keep_result:
        return None
    if serializer == "none":
        return result
    try:
        module: Any = pickle if serializer == "pickle" else importlib.import_module(serializer)
        return module.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as problem:
        what = f"{type(result).__module__}.{type(result).__qualname__}"
        raise ResultNotSerializable(
            f"the result of the call, a {what}, cannot be sent back: {serializer} failed with "
            f"{type(problem).__name__}: {problem}"
        ) from None


def load_result(data: object) -> tuple[object, BaseException | None]:
    """Unpickle a result that `run_job` pickled: return ``(result, None)``, or ``(None, error)``.

    The error, a `ResultNotSerializable`, is returned rather than raised,
    and its cause has no traceback: frames of the caller's (reached by
    ``f_back``) hold the engine's future, which the exception the user
    keeps must not keep alive.
    """
    try:
        return pickle.loads(data), None  # type: ignore[arg-type]  # bytes from run_job
    except Exception as problem:
        error = ResultNotSerializable(
            f"the result of the call cannot be unpickled in this process: {type(problem).__name__}: {problem}"
        )
        error.__cause__ = problem.with_traceback(None)
        return None, error


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
