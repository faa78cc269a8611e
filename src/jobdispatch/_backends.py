"""Backends: what runs the jobs of a pool that does not run them on its own threads.

`PoolConfig.backend` takes a `concurrent.futures.Executor`, a
``distributed.Client``, or one of the two small wrappers here, which add
options. This module imports nothing from Dask: a Dask client is recognised
only if ``distributed`` was imported already, as it must have been to make one.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import math
import pickle
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._errors import JobNotSerializable
from ._remote import Call, Payload, load_result, run_job, seal, unwrap

__all__ = ["DaskBackend", "Engine", "ExecutorBackend", "check_backend", "engine_for"]

_SERIALIZERS = ("auto", "pickle", "cloudpickle", "none")


@dataclass(frozen=True, slots=True)
class ExecutorBackend:
    """Run a pool's jobs on any `concurrent.futures.Executor`, with options.

    Passing the executor itself as ``PoolConfig(backend=...)`` is the same as
    passing ``ExecutorBackend(executor)``. The executor belongs to the
    caller: `Dispatcher.finalize` never shuts it down.

    Args:
        executor: The engine, e.g. a ``ProcessPoolExecutor``.
        serializer: How jobs are serialised at dispatch: ``"pickle"``,
            ``"cloudpickle"`` (needs the cloudpickle package), ``"none"`` (the
            job itself is handed over: for engines in this process), or
            ``"auto"``: none for a ``ThreadPoolExecutor`` (the standard one
            or jobdispatch's) and for a dispatcher's executor view,
            cloudpickle for Dask's ``Client.get_executor()``, pickle
            otherwise.

    Raises:
        TypeError: ``executor`` is not an Executor.
        ValueError: ``serializer`` is not one of the four names.
    """

    executor: concurrent.futures.Executor
    serializer: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.executor, concurrent.futures.Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {self.executor!r}")
        if self.serializer not in _SERIALIZERS:
            raise ValueError(f"serializer must be one of {_SERIALIZERS}, got {self.serializer!r}")


@dataclass(frozen=True, slots=True)
class DaskBackend:
    """Run a pool's jobs on a Dask cluster through its client's own futures.

    Needs the ``jobdispatch[dask]`` extra, and jobdispatch installed on every
    Dask worker. Jobs are serialised with cloudpickle, as Dask does. Dask
    reruns a job whose worker died (at-least-once): make jobs idempotent.

    Args:
        client: A ``distributed.Client``; it belongs to the caller:
            `Dispatcher.finalize` never closes it.
        workers: Addresses or names of the only workers that may run the
            pool's jobs (Dask's ``workers=``): pools on one cluster given
            disjoint workers never queue behind each other.
        resources: Abstract resources each job needs, e.g. ``{"gpu": 1}``
            (Dask's ``resources=``; workers declare what they have).
        retries: How many times Dask reruns a job that raised.
        allow_other_workers: Let Dask use other workers when ``workers`` are
            busy or gone (a hint rather than a rule).

    Raises:
        TypeError: An option has the wrong type.
        ValueError: ``retries`` is negative; ``workers`` is empty; a
            resource amount is negative, infinite or NaN;
            ``allow_other_workers`` is set without ``workers``.
    """

    client: Any
    workers: str | Sequence[str] | None = None
    resources: Mapping[str, float] | None = None
    retries: int | None = None
    allow_other_workers: bool = False

    def __post_init__(self) -> None:
        if not _is_dask_client(self.client):
            raise TypeError(f"client must be a distributed.Client, got {self.client!r}")
        if self.workers is not None:
            if not (
                isinstance(self.workers, str)
                or (isinstance(self.workers, Sequence) and all(isinstance(w, str) for w in self.workers))
            ):
                raise TypeError(f"workers must be a str, a sequence of str or None, got {self.workers!r}")
            if not self.workers:  # Dask would run the jobs anywhere
                raise ValueError(f"workers must name at least one worker, got {self.workers!r}")
        if self.resources is not None:
            _check_resources(self.resources)
        if self.retries is not None:
            if isinstance(self.retries, bool) or not isinstance(self.retries, int):
                raise TypeError(f"retries must be an int or None, got {self.retries!r}")
            if self.retries < 0:
                raise ValueError(f"retries must be >= 0, got {self.retries!r}")
        if not isinstance(self.allow_other_workers, bool):
            raise TypeError(f"allow_other_workers must be a bool, got {self.allow_other_workers!r}")
        if self.allow_other_workers and self.workers is None:
            raise ValueError("allow_other_workers=True needs workers, got workers=None")


def _check_resources(resources: object) -> None:
    """Refuse resources a Dask worker could never satisfy: its jobs would wait on the cluster for ever."""
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources must be a mapping or None, got {resources!r}")
    for name, amount in resources.items():
        if not isinstance(name, str):
            raise TypeError(f"resources must map names (str) to amounts, got the key {name!r} in {resources!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"resources amounts must be numbers, got {amount!r} for {name!r}")
        if not (0 <= amount < math.inf):
            raise ValueError(f"resources amounts must be finite and >= 0, got {amount!r} for {name!r}")


def _is_dask_client(value: object) -> bool:
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(value, distributed.Client)


def check_backend(value: object) -> None:
    """Raise `TypeError` unless ``value`` is a backend `PoolConfig` accepts."""
    if value is None or isinstance(value, ExecutorBackend | DaskBackend | concurrent.futures.Executor):
        return
    if _is_dask_client(value):
        return
    raise TypeError(
        "backend must be None, a concurrent.futures.Executor, a distributed.Client, "
        f"an ExecutorBackend or a DaskBackend, got {value!r}"
    )


class Engine(Protocol):
    """What a pool with a backend needs from it."""

    serializer: str
    slow_results: bool  # fetching a result is a round trip: not on the engine's callback thread

    def submit(self, payload: Payload) -> Any:
        """Start a job; return the engine's future for it."""

    def when_done(self, future: Any, callback: Callable[[Any], object]) -> None:
        """Call ``callback(future)`` once the job is over, on a thread of the engine."""

    def outcome(self, future: Any, want_result: bool) -> tuple[object, BaseException | None]:
        """Return ``(result, None)`` or ``(None, exception)`` for a future that is done.

        Without ``want_result``, the result is ``None``: fetching it may cost
        a round trip to a remote worker. A result that cannot be unpickled
        here gives a `ResultNotSerializable` as the exception.
        """

    def lost(self, future: Any) -> BaseException | None:
        """Return why the engine will never call back for ``future``, or ``None`` if it will."""

    def describe(self) -> str:
        """Name the engine in error messages."""


class _ExecutorEngine:
    slow_results = False  # a concurrent.futures future holds its result

    def __init__(self, executor: concurrent.futures.Executor, serializer: str) -> None:
        self._executor = executor
        if serializer == "auto":
            from ._futures import FuturesExecutor  # here: it imports the pools, which import this module

            # Threads of this process: jobdispatch's ThreadPoolExecutor and
            # the executor view of a dispatcher (which sends each job on to
            # its pool's own backend, if it has one) as much as the standard one.
            if isinstance(executor, concurrent.futures.ThreadPoolExecutor | FuturesExecutor):
                serializer = "none"
            elif type(executor).__module__.startswith("distributed"):
                serializer = "cloudpickle"
            else:
                serializer = "pickle"
        self.serializer = serializer

    def submit(self, payload: Payload) -> Any:
        if isinstance(payload, bytes):
            return self._executor.submit(pickle.loads, payload)  # see _remote: unpickling runs the job
        return self._executor.submit(run_job, payload, self.serializer)

    def when_done(self, future: Any, callback: Callable[[Any], object]) -> None:
        future.add_done_callback(callback)

    def outcome(self, future: Any, want_result: bool) -> tuple[object, BaseException | None]:
        if future.cancelled():
            return None, concurrent.futures.CancelledError("the engine cancelled the job")
        error = future.exception()
        if error is not None:
            return None, unwrap(error)
        if not want_result:
            return None, None
        result = future.result()
        return (result, None) if self.serializer == "none" else load_result(result)

    def lost(self, future: Any) -> BaseException | None:
        return None

    def describe(self) -> str:
        return f"{type(self._executor).__name__} at {id(self._executor):#x}"


class _DaskEngine:
    serializer = "cloudpickle"
    slow_results = True  # a Dask result stays on its worker until fetched

    def __init__(self, spec: DaskBackend) -> None:
        self._client = spec.client
        options: dict[str, Any] = {"pure": False}
        if spec.workers is not None:
            options["workers"] = spec.workers if isinstance(spec.workers, str) else list(spec.workers)
            options["allow_other_workers"] = spec.allow_other_workers
        if spec.resources is not None:
            options["resources"] = dict(spec.resources)
        if spec.retries is not None:
            options["retries"] = spec.retries
        self._options = options

    def submit(self, payload: Payload) -> Any:
        # See _remote: unpickling runs the job. The key names the task on Dask's dashboard.
        return self._client.submit(pickle.loads, payload, key=f"jobdispatch-{uuid.uuid4().hex}", **self._options)

    def when_done(self, future: Any, callback: Callable[[Any], object]) -> None:
        future.add_done_callback(callback)

    def outcome(self, future: Any, want_result: bool) -> tuple[object, BaseException | None]:
        status = future.status
        if status == "finished":
            return load_result(future.result()) if want_result else (None, None)
        if status == "error":
            error = future.exception()
            return None, unwrap(error) if isinstance(error, BaseException) else RuntimeError(repr(error))
        return None, concurrent.futures.CancelledError(f"the Dask future of the job ended as {status!r}")

    def lost(self, future: Any) -> BaseException | None:
        # A client that closes cancels the futures it has as it begins to
        # close; one made meanwhile (the pool sends its next job as a slot
        # frees up) is never settled.
        status = self._client.status
        if status in ("closing", "closed") and not future.done():
            return RuntimeError(f"the Dask client is {status}")
        return None

    def describe(self) -> str:
        return f"Dask client {self._client!r}"


def engine_for(backend: object) -> Engine:
    """Return the engine behind a `PoolConfig.backend` value other than ``None``."""
    if isinstance(backend, DaskBackend):
        return _DaskEngine(backend)
    if isinstance(backend, ExecutorBackend):
        return _ExecutorEngine(backend.executor, backend.serializer)
    if isinstance(backend, concurrent.futures.Executor):
        return _ExecutorEngine(backend, "auto")
    if _is_dask_client(backend):
        return _DaskEngine(DaskBackend(backend))
    check_backend(backend)
    raise AssertionError("unreachable")  # check_backend raised


def serialise(engine: Engine, call: Call, job: str) -> Payload:
    """Pickle ``call`` for ``engine``.

    Raises:
        JobNotSerializable: The call cannot be pickled; ``job`` names it.
    """
    if engine.serializer == "none":
        return call
    try:
        module: Any = pickle if engine.serializer == "pickle" else importlib.import_module("cloudpickle")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"serializer={engine.serializer!r} needs the cloudpickle package", name="cloudpickle"
        ) from error
    try:
        data: bytes = module.dumps(call, pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise JobNotSerializable(
            f"job {job} cannot be sent to {engine.describe()}: {engine.serializer} failed with "
            f"{type(error).__name__}: {error}"
        ) from error
    return seal(data, engine.serializer)
