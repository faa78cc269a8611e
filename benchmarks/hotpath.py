"""Where a dispatched job's time goes: micro-benchmarks of the hot path.

Run alone with ``python -m benchmarks.hotpath [--quick]``; a full
``python -m benchmarks`` run includes it. Four parts:

1. The floor: the cost of each primitive the hot path is made of
   (``with lock:``, SimpleQueue put/get, copy_context, a Python call ...),
   timed with `timeit` on one thread, best of several repeats.
2. jobdispatch's two halves in isolation, against ThreadPoolExecutor's:
   ``dispatch()`` with the only worker parked (the producer alone), and the
   worker loop draining a full queue (the worker alone).
3. An ablation: a model of ``Dispatcher.dispatch`` and of the worker loop,
   copied line for line from ``src/jobdispatch`` (see `MIRRORS`), is rebuilt
   with one element removed at a time; the difference is that element's cost.
   Removing an element breaks the library's guarantees: this measures, it
   does not propose.
4. A ladder of hand-offs from a bare SimpleQueue up to the full model, run
   end to end (1 producer, 8 workers), next to jobdispatch itself and
   ThreadPoolExecutor, and the alternatives proposed in docs/benchmarks.md,
   measured the same ways.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
import timeit
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from queue import Empty, SimpleQueue
from types import FunctionType
from typing import Any

from jobdispatch import Dispatcher, PoolConfig

from ._harness import Mode, Results, noop

#: The commit of src/jobdispatch whose dispatch() and worker loop the model copies.
MIRRORS = "775ae67"

# -- part 1: primitives ----------------------------------------------------


class _Thing:
    def method(self, job: object, *, priority: object = None, timeout: object = None) -> None:
        pass


PRIMITIVES: list[tuple[str, str]] = [
    ("empty loop iteration (subtracted from the others)", "pass"),
    ("call noop()", "noop()"),
    ("call d.method(job) with 2 keyword-only defaults", "method(job)"),
    ("with lock: pass", "with lock: pass"),
    ("lock.acquire(); lock.release() (bound methods)", "acquire(); release()"),
    ("SimpleQueue put(x) + get(False) (bound methods)", "put(1); get(False)"),
    ("copy_context()", "copy_context()"),
    ("ctx.run(noop)", "ctx.run(noop)"),
    ("copy_context().run(noop)", "copy_context().run(noop)"),
    ("5-tuple build + unpack", "a, b, c, d, e = (job, job, ctx, None, ctx)"),
    (
        'getattr(job, "do", None) is not None or not callable(job)',
        'getattr(job, "do", None) is not None or not callable(job)',
    ),
    ("type(job) is FunctionType", "type(job) is FunctionType"),
    ("obj.attr += 1 (instance dict)", "thing.n += 1"),
    ("obj.attr.attr += 1 (generation.pending)", "thing.g.n += 1"),
    ("threading.local attribute read", "local.pool"),
    ("concurrent.futures.Future()", "Future()"),
]


def primitives(number: int, repeat: int) -> dict[str, float]:
    """Return the nanoseconds per execution of each primitive, loop overhead removed."""
    from concurrent.futures import Future

    lock = threading.Lock()
    queue: SimpleQueue[int] = SimpleQueue()
    thing = _Thing()
    thing.n = 0  # type: ignore[attr-defined]
    thing.g = _Thing()  # type: ignore[attr-defined]
    thing.g.n = 0  # type: ignore[attr-defined]
    local = threading.local()
    local.pool = None
    namespace: dict[str, Any] = {
        "noop": noop,
        "method": thing.method,
        "job": noop,
        "lock": lock,
        "acquire": lock.acquire,
        "release": lock.release,
        "put": queue.put,
        "get": queue.get,
        "copy_context": copy_context,
        "ctx": copy_context(),
        "FunctionType": FunctionType,
        "thing": thing,
        "local": local,
        "Future": Future,
    }
    raw = {
        label: min(timeit.repeat(stmt, globals=namespace, number=number, repeat=repeat)) / number * 1e9
        for label, stmt in PRIMITIVES
    }
    loop = raw[PRIMITIVES[0][0]]
    return {label: (ns if label == PRIMITIVES[0][0] else ns - loop) for label, ns in raw.items()}


# -- part 3: the model -----------------------------------------------------
#
# Each line may carry tags, each after "  #@". When an edit named T is
# applied: "#@T" lines are deleted, "#@T>code" lines become "code" (same
# indentation), and "#@+T" lines, absent otherwise, are kept.

DISPATCH_MODEL = """
def dispatch(self, job, *, priority=None, timeout=None):
    if timeout is not None:  #@timeout
        timeout = check_timeout(timeout)  #@timeout
    if self._state is not _OPEN:  #@state
        raise DispatcherClosed(self._closed_reason)  #@state
    if priority is None:  #@route>pool = self._only_pool
        pool = self._only_pool  #@route
    elif type(priority) is int:  #@route
        pool = self._pools.get(priority)  #@route
    else:  #@route
        pool = None  #@route
    if pool is None or getattr(job, "do", None) is not None or not callable(job):  #@check>fn = job
        pool, fn = self._route(job, priority)  #@check
    else:  #@check
        fn = job  #@check
    if pool is None or (  #@+functype
        type(job) is not FunctionType and (getattr(job, "do", None) is not None or not callable(job))  #@+functype
    ):  #@+functype
        pool, fn = self._route(job, priority)  #@+functype
    else:  #@+functype
        fn = job  #@+functype
    context = copy_context() if self._propagate_context else None  #@context>context = None
    try:  #@slot
        pool._take_slot(False)  #@slot
    except Empty:  #@slot
        pool.submit(job, fn, None, context, timeout)  #@slot
        return  #@slot
    with pool._lock:  #@lock>if True:  #@acqrel>lock = pool._lock
    lock.acquire()  #@+acqrel
    try:  #@+acqrel
        if pool._closed:  #@closed
            raise DispatcherClosed(self._closed_reason)  #@closed
        generation = pool._generation  #@generation>generation = None
        generation.pending += 1  #@generation
        pool._put_job((job, fn, generation, None, context))  #@tuple>pool._put_job(fn)
        pool._entered += 1  #@entered
        if pool._spawning:  #@spawn
            pool._spawn_if_needed_locked()  #@spawn
    finally:  #@+acqrel
        lock.release()  #@+acqrel
"""

WORKER_MODEL = """
def work(pool):
    get = pool._jobs.get
    put_slot = pool._slots.put
    lock = pool._lock
    acquire = lock.acquire
    release = lock.release
    while True:
        item = get()
        if item is None:
            return
        job, fn, generation, batch, context = item
        del item  #@del
        error = None
        try:  #@try>if True:
            if context is None:  #@context>fn()
                fn()  #@context
            else:  #@context
                context.run(fn)  #@context
        except CancelledBeforeStart:  #@try
            error = CancelledBeforeStart  #@try
        except BaseException as exc:  #@try
            error = exc  #@try
            pool._report(job, exc, batch)  #@try
        acquire()  #@lock
        try:  #@lock>if True:
            if error is None:  #@counters>pass
                pool._completed += 1  #@counters
            else:  #@counters
                pool._left_otherwise += 1  #@counters
                if error is CancelledBeforeStart:  #@counters
                    pool._cancelled += 1  #@counters
                else:  #@counters
                    pool._failed += 1  #@counters
            if pool._slow_release:  #@slowcheck>put_slot(True)
                pool._release_slot_locked()  #@slowcheck
            else:  #@slowcheck
                put_slot(True)  #@slowcheck
            generation.pending -= 1  #@generation
            if not generation.pending and generation.done is not None:  #@generation
                generation.done.set()  #@generation
        finally:  #@lock
            release()  #@lock
        if batch is not None:  #@batch
            batch._job_over(fn, cancelled=error is CancelledBeforeStart)  #@batch
        del job, fn, generation, batch, context, error  #@del
"""

DISPATCH_ABLATIONS = {
    "timeout": "the timeout check",
    "state": "the open-state check",
    "route": "choosing the pool (priority branch)",
    "check": "the plain-callable check (getattr + callable)",
    "context": "copy_context()",
    "slot": "taking a slot token (SimpleQueue.get(False) in try)",
    "lock": "`with pool._lock:` (the statement alone)",
    "closed": "the closed check under the lock",
    "generation": "generation = pool._generation; generation.pending += 1",
    "tuple": "the 5-tuple work item (put fn alone)",
    "entered": "pool._entered += 1",
    "spawn": "the spawning check",
}

WORKER_ABLATIONS = {
    "del": "del item / del of the six locals",
    "batch": "the batch check after the job",
    "try": "try/except around the call",
    "context": "context.run(fn) instead of fn()",
    "lock": "acquire() / try-finally release() (the statements alone)",
    "counters": "the completed/failed counters",
    "generation": "generation.pending -= 1 and its done check",
    "slowcheck": "the _slow_release check (put_slot(True) directly)",
}


def build(source: str, edits: frozenset[str] = frozenset()) -> FunctionType:
    """Compile ``source`` with ``edits`` applied; return its one function."""
    lines = []
    for line in source.splitlines():
        code, *tags = line.split("  #@")
        for tag in tags:
            if tag.startswith("+"):
                if tag[1:] not in edits:
                    code = ""
            else:
                name, _, replacement = tag.partition(">")
                if name in edits:
                    code = code[: len(code) - len(code.lstrip())] + replacement if replacement else ""
            if not code:
                break
        if code:
            lines.append(code)
    namespace: dict[str, Any] = dict(_MODEL_GLOBALS)
    exec(compile("\n".join(lines), f"<model {sorted(edits)}>", "exec"), namespace)
    functions = [v for k, v in namespace.items() if isinstance(v, FunctionType) and k not in _MODEL_GLOBALS]
    assert len(functions) == 1
    return functions[0]


class _Open:
    pass


class _Cancelled(BaseException):
    pass


_OPEN = _Open()
_MODEL_GLOBALS: dict[str, Any] = {
    "_OPEN": _OPEN,
    "Empty": Empty,
    "copy_context": copy_context,
    "FunctionType": FunctionType,
    "CancelledBeforeStart": _Cancelled,
    "DispatcherClosed": RuntimeError,
    "check_timeout": float,
}


class _Generation:
    __slots__ = ("done", "pending", "waiters")

    def __init__(self) -> None:
        self.pending = 0
        self.done: threading.Event | None = None
        self.waiters: list[object] = []


class ModelPool:
    """The attributes of a `jobdispatch._pool.Pool` that the hot path touches."""

    def __init__(self, capacity: int) -> None:
        self._jobs: SimpleQueue[Any] = SimpleQueue()
        self._slots: SimpleQueue[bool] = SimpleQueue()
        self._take_slot = self._slots.get
        self._put_job = self._jobs.put
        for _ in range(capacity):
            self._slots.put(True)
        self._lock = threading.Lock()
        self._closed = False
        self._generation = _Generation()
        self._entered = 0
        self._completed = 0
        self._left_otherwise = 0
        self._failed = 0
        self._cancelled = 0
        self._spawning = False
        self._slow_release = False

    def submit(self, job: object, fn: Callable[[], object], batch: None, context: Any, timeout: object) -> None:
        """The slow path: wait for a slot, then enqueue."""
        self._slots.get()
        with self._lock:
            generation = self._generation
            generation.pending += 1
            self._put_job((job, fn, generation, batch, context))
            self._entered += 1


class ModelDispatcher:
    """The attributes of a `jobdispatch.Dispatcher` that the hot path touches."""

    def __init__(self, capacity: int, propagate_context: bool = True) -> None:
        self._state = _OPEN
        self._closed_reason = "closed"
        self._only_pool = ModelPool(capacity)
        self._pools = {0: self._only_pool}
        self._propagate_context = propagate_context


CHUNK = 16_384


class _GcOff:
    """Disable the cyclic garbage collector inside the block, as `timeit` does."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *_: object) -> None:
        if self.was:
            gc.enable()


def model_producer_ns(edits: frozenset[str], n: int, trials: int) -> float:
    """Nanoseconds per model dispatch() with no worker running, best of ``trials``.

    Dispatches go in chunks of `CHUNK`; the queue is emptied between chunks,
    off the clock, so it never grows large.
    """
    function = build(DISPATCH_MODEL, edits)
    d = ModelDispatcher(CHUNK)
    pool = d._only_pool
    dispatch = function.__get__(d)
    chunks = max(1, n // CHUNK)
    best = float("inf")
    with _GcOff():
        for _ in range(trials):
            total = 0.0
            for _ in range(chunks):
                start = time.perf_counter()
                for _ in range(CHUNK):
                    dispatch(noop)
                total += time.perf_counter() - start
                while not pool._jobs.empty():
                    pool._jobs.get()
                    pool._slots.put(True)
            best = min(best, total)
    return best / (chunks * CHUNK) * 1e9


def model_worker_ns(edits: frozenset[str], n: int, trials: int, context: bool = True) -> float:
    """Nanoseconds per job of the model worker loop alone (queue filled first), best of ``trials``."""
    work = build(WORKER_MODEL, edits)
    chunks = max(1, n // CHUNK)
    best = float("inf")
    with _GcOff():
        for _ in range(trials):
            total = 0.0
            for _ in range(chunks):
                pool = ModelPool(0)
                generation = pool._generation
                put = pool._jobs.put
                for _ in range(CHUNK):
                    generation.pending += 1
                    put((noop, noop, generation, None, copy_context() if context else None))
                put(None)
                start = time.perf_counter()
                work(pool)
                total += time.perf_counter() - start
            best = min(best, total)
    return best / (chunks * CHUNK) * 1e9


def model_end_to_end_ns(
    dispatch_edits: frozenset[str], worker_edits: frozenset[str], n: int, workers: int = 8, context: bool = True
) -> float:
    """Nanoseconds per job of the model, 1 producer and ``workers`` threads, drain included."""
    dispatch_fn = build(DISPATCH_MODEL, dispatch_edits)
    work = build(WORKER_MODEL, worker_edits)
    d = ModelDispatcher(workers + 1024, propagate_context=context)
    pool = d._only_pool
    threads = [threading.Thread(target=work, args=(pool,), name=f"bench-model-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    dispatch = dispatch_fn.__get__(d)
    start = time.perf_counter()
    for _ in range(n):
        dispatch(noop)
    for _ in threads:
        pool._jobs.put(None)
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) / n * 1e9


# -- part 2: the real halves in isolation ----------------------------------


def _park(submit: Callable[[Callable[[], None]], object]) -> threading.Event:
    """Occupy the only worker with a job that waits for the returned gate."""
    started = threading.Event()
    gate = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait()

    submit(hold)
    started.wait()
    return gate


def real_halves(n: int, trials: int) -> dict[str, dict[str, float]]:
    """Return ns per job of the producer alone and of the worker alone, best of ``trials``.

    The only worker is parked while a chunk of `CHUNK` jobs is submitted (the
    producer alone), then released while the main thread waits for the chunk
    to drain (the worker alone). The garbage collector is off, as in `timeit`.
    """
    chunks = max(1, n // CHUNK)
    out: dict[str, dict[str, list[float]]] = {}
    names = ("jobdispatch", "jobdispatch, propagate_context=False", "ThreadPoolExecutor")
    with _GcOff():
        for _ in range(trials):
            for name in names:
                produced = drained = 0.0
                if name == "ThreadPoolExecutor":
                    executor = ThreadPoolExecutor(1)
                    submit: Callable[[Callable[[], None]], object] = executor.submit
                else:
                    d = Dispatcher([PoolConfig(0, 1, CHUNK + 1)], name="bench", propagate_context="False" not in name)
                    submit = d.dispatch
                for _ in range(chunks):
                    gate = _park(submit)
                    start = time.perf_counter()
                    for _ in range(CHUNK):
                        submit(noop)
                    produced += time.perf_counter() - start
                    done = threading.Event()
                    submit(done.set)  # FIFO, one worker: runs after the chunk
                    start = time.perf_counter()
                    gate.set()
                    done.wait()
                    drained += time.perf_counter() - start
                if name == "ThreadPoolExecutor":
                    executor.shutdown()
                else:
                    d.finalize()
                entry = out.setdefault(name, {"producer": [], "worker": []})
                entry["producer"].append(produced / (chunks * CHUNK) * 1e9)
                entry["worker"].append(drained / (chunks * CHUNK) * 1e9)
    return {name: {half: min(values) for half, values in halves.items()} for name, halves in out.items()}


# -- part 4: the ladder and the end-to-end runs ----------------------------


def _ladder_pool(level: int, workers: int) -> tuple[Callable[[Callable[[], None]], None], Callable[[], None]]:
    """A minimal bounded hand-off with the features of ``level`` (0-2)."""
    jobs: SimpleQueue[Any] = SimpleQueue()
    slots: SimpleQueue[bool] = SimpleQueue()
    for _ in range(workers + 1024):
        slots.put(True)
    lock = threading.Lock()
    counts = [0, 0]
    get, put, take, give = jobs.get, jobs.put, slots.get, slots.put

    def bare() -> None:
        while (fn := get()) is not None:
            fn()

    def tokens() -> None:
        while (fn := get()) is not None:
            fn()
            give(True)

    def locked() -> None:
        acquire, release = lock.acquire, lock.release
        while (fn := get()) is not None:
            fn()
            acquire()
            counts[1] += 1
            give(True)
            release()

    def submit_tokens(fn: Callable[[], None]) -> None:
        try:
            take(False)
        except Empty:
            take()
        put(fn)

    def submit_locked(fn: Callable[[], None]) -> None:
        try:
            take(False)
        except Empty:
            take()
        with lock:
            put(fn)
            counts[0] += 1

    target = (bare, tokens, locked)[level]
    threads = [threading.Thread(target=target, name=f"bench-ladder-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()

    def finish() -> None:
        for _ in threads:
            put(None)
        for thread in threads:
            thread.join()

    return ((put, submit_tokens, submit_locked)[level], finish)


def ladder_ns(level: int, n: int, workers: int = 8) -> float:
    """Nanoseconds per job through a `_ladder_pool`, drain included."""
    submit, finish = _ladder_pool(level, workers)
    start = time.perf_counter()
    for _ in range(n):
        submit(noop)
    finish()
    return (time.perf_counter() - start) / n * 1e9


def real_end_to_end_ns(name: str, n: int, workers: int = 8) -> float:
    """Nanoseconds per job through the real library, drain included."""
    if name == "ThreadPoolExecutor":
        executor = ThreadPoolExecutor(workers)
        submit: Callable[[Callable[[], None]], object] = executor.submit
        finish: Callable[[], object] = executor.shutdown
    else:
        d = Dispatcher(workers, name="bench", propagate_context="False" not in name)
        submit, finish = d.dispatch, d.finalize
    start = time.perf_counter()
    for _ in range(n):
        submit(noop)
    finish()
    return (time.perf_counter() - start) / n * 1e9


#: Alternatives to the current hot path, as edits of the model.
#: name -> (dispatch edits, worker edits, description)
PROPOSALS: dict[str, tuple[frozenset[str], frozenset[str], str]] = {
    "A acquire/release in dispatch": (
        frozenset({"acqrel"}),
        frozenset(),
        "lock.acquire(); try: ... finally: lock.release() instead of `with pool._lock:`",
    ),
    "B plain function fast test": (
        frozenset({"check", "functype"}),
        frozenset(),
        "test type(job) is FunctionType before the getattr/callable probe",
    ),
    "C _entered from the token count": (
        frozenset({"entered"}),
        frozenset(),
        "drop pool._entered += 1: jobs in the pool = capacity - _slots.qsize()",
    ),
    "A + B + C": (frozenset({"acqrel", "check", "functype", "entered"}), frozenset(), "the three together"),
    "D no dispatch-side lock (bound)": (
        frozenset({"lock", "closed"}),
        frozenset(),
        "upper bound of a producer that takes no lock (needs another barrier design)",
    ),
    "E no worker-side lock (bound)": (
        frozenset(),
        frozenset({"lock"}),
        "upper bound of a worker that takes no lock per job (batched bookkeeping)",
    ),
    "A + B + C + E (bound)": (
        frozenset({"acqrel", "check", "functype", "entered"}),
        frozenset({"lock"}),
        "the three, and a worker without a per-job lock",
    ),
    "F no contextvars": (
        frozenset({"context"}),
        frozenset({"context"}),
        "what propagate_context=False saves (an API choice, not an optimisation)",
    ),
    "A + B + C + E + F (bound)": (
        frozenset({"acqrel", "check", "functype", "entered", "context"}),
        frozenset({"lock", "context"}),
        "everything above but D",
    ),
}


def end_to_end(n: int, trials: int) -> dict[str, float]:
    """Median ns per job over interleaved trials of the ladder, the model, the proposals and the libraries."""
    runners: dict[str, Callable[[], float]] = {
        "L0 bare SimpleQueue (unbounded)": lambda: ladder_ns(0, n),
        "L1 + slot tokens (bounded)": lambda: ladder_ns(1, n),
        "L2 + a lock and a counter on each side": lambda: ladder_ns(2, n),
        "model of jobdispatch": lambda: model_end_to_end_ns(frozenset(), frozenset(), n),
        "jobdispatch": lambda: real_end_to_end_ns("jobdispatch", n),
        "jobdispatch, propagate_context=False": lambda: real_end_to_end_ns("jobdispatch, propagate_context=False", n),
        "ThreadPoolExecutor": lambda: real_end_to_end_ns("ThreadPoolExecutor", n),
    }
    for name, (d_edits, w_edits, _) in PROPOSALS.items():
        runners[f"proposal {name}"] = lambda d=d_edits, w=w_edits: model_end_to_end_ns(d, w, n)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for trial in range(trials):
        shift = trial % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runners[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(mode: Mode) -> dict[str, Any]:
    """Run all four parts and return their figures."""
    n = mode.pick(200_000, 50_000, 2_000)
    trials = mode.pick(7, 3, 1)
    data: dict[str, Any] = {"mirrors_commit": MIRRORS, "jobs": n}
    data["primitives_ns"] = primitives(mode.pick(1_000_000, 200_000, 2_000), mode.pick(7, 3, 1))
    data["isolated_ns"] = real_halves(n, trials)
    full_d = model_producer_ns(frozenset(), n, trials)
    full_w = model_worker_ns(frozenset(), n, trials)
    data["model_ns"] = {"producer": full_d, "worker": full_w}
    data["dispatch_ablation_ns"] = {
        tag: full_d - model_producer_ns(frozenset({tag}), n, trials) for tag in DISPATCH_ABLATIONS
    }
    data["worker_ablation_ns"] = {
        tag: full_w - model_worker_ns(frozenset({tag}), n, trials) for tag in WORKER_ABLATIONS
    }
    data["proposals_isolated_ns"] = {
        name: {
            "producer": model_producer_ns(d_edits, n, trials) if d_edits else full_d,
            "worker": model_worker_ns(w_edits, n, trials, context="context" not in w_edits) if w_edits else full_w,
        }
        for name, (d_edits, w_edits, _) in PROPOSALS.items()
    }
    data["end_to_end_ns"] = end_to_end(n, trials)
    return data


def report(data: dict[str, Any]) -> str:
    """Render the figures of `measure` as text."""
    lines = [f"Hot path (model mirrors src at {data['mirrors_commit']}; ns per operation or per job)"]
    lines.append("1. primitives, one thread, best of repeats:")
    lines += [f"   {ns:7.1f}  {label}" for label, ns in data["primitives_ns"].items()]
    lines.append("2. halves in isolation (best of trials): producer alone / worker alone")
    for name, halves in data["isolated_ns"].items():
        lines.append(f"   {halves['producer']:7.0f} / {halves['worker']:5.0f}  {name}")
    model = data["model_ns"]
    lines.append(
        f"   {model['producer']:7.0f} / {model['worker']:5.0f}  model of jobdispatch (check: close to the above)"
    )
    lines.append("3. ablation: what each element of the model costs")
    lines.append("   dispatch():")
    lines += [f"   {ns:7.0f}  {DISPATCH_ABLATIONS[tag]}" for tag, ns in data["dispatch_ablation_ns"].items()]
    lines.append("   worker loop:")
    lines += [f"   {ns:7.0f}  {WORKER_ABLATIONS[tag]}" for tag, ns in data["worker_ablation_ns"].items()]
    lines.append("4. end to end, 1 producer -> 8 workers, drain included (median of trials):")
    tpe = data["end_to_end_ns"].get("ThreadPoolExecutor")
    for name, ns in data["end_to_end_ns"].items():
        vs = f"  ({tpe / ns:4.1f}x TPE)" if tpe else ""
        lines.append(f"   {ns:7.0f}{vs}  {name}")
    if tpe:
        lines.append(f"   10x TPE needs <= {tpe / 10:.0f} ns per job; 20x needs <= {tpe / 20:.0f}")
    lines.append("   proposals in isolation: producer / worker")
    for name, halves in data["proposals_isolated_ns"].items():
        lines.append(f"   {halves['producer']:7.0f} / {halves['worker']:5.0f}  {name}: {PROPOSALS[name][2]}")
    return "\n".join(lines)


def run(mode: Mode, results: Results) -> None:
    """Add the hot-path figures to ``results`` (printed after the table)."""
    results.scenarios["hotpath"] = measure(mode)


def main() -> None:
    parser = argparse.ArgumentParser(description="jobdispatch hot-path micro-benchmarks")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(report(measure(Mode("quick" if args.quick else "full"))))


if __name__ == "__main__":
    main()
