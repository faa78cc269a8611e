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
import traceback
from collections.abc import Callable
from typing import Any, TypeAlias

from ._errors import RemoteJobError, ResultNotSerializable

__all__ = ["Call", "Payload", "Raised", "RemoteTraceback", "load_result", "run_job", "seal", "unwrap"]

Call: TypeAlias = "tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool]"
"""A job to send: ``(fn, args, kwargs, keep_result)``."""

Payload: TypeAlias = "bytes | Call"
"""A job as sent: a pickled `Call`, or, for an engine in this process, the `Call` itself."""


def run_job(payload: Payload, serializer: str = "pickle") -> object:
    """Run a job sent by a pool with a backend; return its result, pickled, if it is wanted.

    A job's exception, or one raised as the job is unpickled here, is
    pickled here and raised inside a `Raised`; one that cannot be pickled is
    replaced by a `RemoteJobError` with its type name and text. The result
    is pickled here too, and unpickled by `load_result` in the dispatching
    process: an engine that unpickles an outcome it cannot load may break
    (a ``ProcessPoolExecutor`` does).

    Args:
        payload: The job, as made by the pool at dispatch.
        serializer: The module that pickled it (``"pickle"`` or
            ``"cloudpickle"``), which pickles the job's exception and
            result to send them back; ``"none"`` for an engine in this
            process, which gets them as they are.

    Returns:
        The call's result for the executor view of a pool (pickled, unless
        ``serializer`` is ``"none"``), ``None`` for a job.

    A result that cannot be pickled comes back as a note that says why,
    which `load_result` turns into a `ResultNotSerializable`.
    """
    # What goes back instead is raised out of the except blocks, with no
    # __context__: an engine that pickles chained exceptions too (Dask)
    # would send the job's own exception along.
    carried: Exception | None = None
    try:
        # Unpickling runs code of the job's too (its classes' __setstate__ or
        # __reduce__): what it raises goes back as the job's exception would.
        fn, args, kwargs, keep_result = pickle.loads(payload) if isinstance(payload, bytes) else payload
        del payload
        result = fn(*args, **kwargs)
    except BaseException as error:
        if serializer == "none":
            raise  # it stays in this process
        carried = _carry(error, serializer)
    if carried is not None:
        raise carried
    if not keep_result:
        return None
    if serializer == "none":
        return result
    try:
        module: Any = pickle if serializer == "pickle" else importlib.import_module(serializer)
        return module.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as problem:
        what = f"{type(result).__module__}.{type(result).__qualname__}"
        reason = f"{serializer} failed with {type(problem).__name__}: {problem}"
    # Returned, not raised: the job ran, and an engine that reruns jobs that
    # raised (Dask's retries) must not run it again for this.
    return pickle.dumps(_Unsent(f"the result of the call, a {what}, cannot be sent back: {reason}"))


class _Unsent:
    """What a call returns, pickled, instead of a result that cannot be pickled."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __reduce__(self) -> tuple[type[_Unsent], tuple[str]]:
        return _Unsent, (self.message,)


def load_result(data: object) -> tuple[object, BaseException | None]:
    """Unpickle a result that `run_job` pickled: return ``(result, None)``, or ``(None, error)``.

    The error, a `ResultNotSerializable`, is returned rather than raised,
    and its cause has no traceback: frames of the caller's (reached by
    ``f_back``) hold the engine's future, which the exception the user
    keeps must not keep alive.
    """
    try:
        result = pickle.loads(data)  # type: ignore[arg-type]  # bytes from run_job
        if type(result) is _Unsent:
            return None, ResultNotSerializable(result.message)
        return result, None
    except Exception as problem:
        error = ResultNotSerializable(
            f"the result of the call cannot be unpickled in this process: {type(problem).__name__}: {problem}"
        )
        error.__cause__ = problem.with_traceback(None)
        return None, error


def _carry(error: BaseException, serializer: str) -> Exception:
    """Return what the worker raises for a job's ``error``: a `Raised`, or a `RemoteJobError` if it won't pickle."""
    type_name = f"{type(error).__module__}.{type(error).__qualname__}"
    try:
        text = str(error)
    except Exception:
        text = "(str() of the exception raised)"
    try:
        trace = "".join(traceback.format_exception(error))
    except Exception:
        trace = f"{type_name}: {text}"
    try:
        module: Any = pickle if serializer == "pickle" else importlib.import_module(serializer)
        data = module.dumps(error, pickle.HIGHEST_PROTOCOL)
    except Exception as problem:
        carried = RemoteJobError(type_name, text, f"{type(problem).__name__}: {problem}")
        carried.__cause__ = RemoteTraceback(trace)
        return carried
    return Raised(data, type_name, text, trace)


class RemoteTraceback(Exception):
    """The traceback, as text, of a job's exception raised in another process: the cause of what arrives here."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}" if self.args else ""


class Raised(Exception):
    """Carries a job's exception back from the process that ran it, pickled there.

    The engine only ever sees this, which any process can unpickle; the
    dispatching process unpickles the job's own exception from it (`unwrap`),
    so that one that cannot be unpickled there fails only its job, and never
    the engine that would have had to unpickle it (a ``ProcessPoolExecutor``
    breaks).
    """

    def __init__(self, data: bytes, type_name: str, text: str, trace: str) -> None:
        super().__init__(data, type_name, text, trace)
        self.data = data
        self.type_name = type_name
        self.text = text
        self.trace = trace

    def __str__(self) -> str:
        return f"{self.type_name}: {self.text}"

    def unwrap(self) -> BaseException:
        """Return the job's exception, or a `RemoteJobError` for it if it cannot be unpickled here."""
        error: BaseException
        try:
            loaded = pickle.loads(self.data)
            if not isinstance(loaded, BaseException):
                raise TypeError(f"it unpickled as {type(loaded).__qualname__}")
            error = _without_tracebacks(loaded)
        except Exception as problem:
            reason = f"unpickling it in this process failed with {type(problem).__name__}: {problem}"
            error = RemoteJobError(self.type_name, self.text, reason)
        error.__cause__ = RemoteTraceback(self.trace)
        return error


def _without_tracebacks(error: BaseException) -> BaseException:
    """Drop the tracebacks of ``error`` and of the exceptions chained to it or grouped in it.

    Some engines pickle tracebacks too (Dask, with tblib); unpickled here,
    their frames lead, by ``f_back``, to the frames that unpickled them,
    which hold the engine's future: the job's exception must not keep it
    alive. The traceback, as text, is the cause of what arrives here.
    """
    pending, seen = [error], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.__traceback__ = None
        pending.extend(e for e in (item.__cause__, item.__context__) if e is not None)
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
    return error


def unwrap(error: BaseException) -> BaseException:
    """Return the job's exception that ``error``, raised by an engine for a job, stands for."""
    return error.unwrap() if isinstance(error, Raised) else error


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
