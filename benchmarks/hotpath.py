"""Where a dispatched job's time goes, measured on the library's own code.

Run alone with ``python -m benchmarks.hotpath [--quick | --smoke]``; a full
``python -m benchmarks`` run includes it. Three parts:

1. The floor: the cost of each primitive the hot path is made of
   (``with lock:``, SimpleQueue put/get, copy_context, a Python call ...),
   timed with `timeit` on one thread, best of several repeats.
2. jobdispatch's two halves in isolation, against ThreadPoolExecutor's:
   ``dispatch()`` with the only worker parked (the producer alone), and the
   worker loop draining a full queue (the worker alone).
3. Each way of dispatching, end to end (one producer, one pool of 8
   workers, no-op jobs, drain included), as a ratio to
   ``ThreadPoolExecutor.submit`` (and ``.map`` for `dispatch_many`)
   measured in the same trials, with and without ``propagate_context``.

``python -m benchmarks.ab REV`` runs part 3 on the code of another revision
and on this one, each in its own child processes, and reports how much
slower or faster this code is per path (see `benchmarks.ab`).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import sys
import threading
import time
import timeit
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from pathlib import Path
from queue import SimpleQueue
from types import FunctionType
from typing import Any

from jobdispatch import Dispatcher, PoolConfig

from ._harness import Mode, Results, Row, interleave, median, noop, ratio_row

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
    ("6-tuple build + unpack", "a, b, c, d, e, f = (job, job, ctx, None, ctx, True)"),
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


CHUNK = 16_384


class _GcOff:
    """Disable the cyclic garbage collector inside the block, as `timeit` does."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *_: object) -> None:
        if self.was:
            gc.enable()


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


HALVES = ("jobdispatch", "jobdispatch, propagate_context=False", "ThreadPoolExecutor")


def real_halves(n: int, trials: int, names: tuple[str, ...] = HALVES) -> dict[str, dict[str, float]]:
    """Return ns per job of the producer alone and of the worker alone, best of ``trials``.

    The only worker is parked while a chunk of `CHUNK` jobs is submitted (the
    producer alone), then released while the main thread waits for the chunk
    to drain (the worker alone). The garbage collector is off, as in `timeit`.
    """
    chunks = max(1, n // CHUNK)
    out: dict[str, dict[str, list[float]]] = {}
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


# -- part 3: each way of dispatching, end to end ---------------------------

#: The ways of handing jobs to a dispatcher that part 3 times, in table order.
PATHS = (
    "dispatch(fn)",
    "dispatch(job)",
    "dispatch(obj.method)",
    "dispatch(fn, arg)",
    "dispatch_many(jobs)",
    "dispatch_many(jobs, chunksize=32)",
)
NO_CONTEXT = ", propagate_context=False"
TPE_SUBMIT = "TPE.submit"
TPE_MAP = "TPE.map"
WORKERS = 8


class _NoopJob:
    """A `Job` object that does nothing, in the only pool (priority 0)."""

    __slots__ = ()

    def do(self) -> None:
        """Do nothing."""

    def priority(self) -> int:
        """Return 0, the priority of a single-pool dispatcher."""
        return 0


class _Target:
    """An object whose bound method is the job."""

    def run(self) -> None:
        """Do nothing."""


def noop_arg(_: object) -> None:
    """A job taking one argument that does nothing."""


def available(path: str) -> bool:
    """Whether the imported jobdispatch offers ``path`` (an older revision may not)."""
    if path.startswith("dispatch_many"):
        many = getattr(Dispatcher, "dispatch_many", None)
        return many is not None and ("chunksize" not in path or "chunksize" in inspect.signature(many).parameters)
    if path == "dispatch(fn, arg)":
        parameters = inspect.signature(Dispatcher.dispatch).parameters.values()
        return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    return True


def path_seconds(path: str, n: int, *, propagate_context: bool = True, workers: int = WORKERS) -> float:
    """Seconds to push ``n`` no-op jobs through one pool of ``workers`` along ``path`` and drain them.

    The dispatcher and the list a `dispatch_many` reads are built before the
    clock starts; `Dispatcher.finalize` (which waits for every job) ends it.
    """
    d = Dispatcher(workers, name="bench-hotpath", propagate_context=propagate_context)
    dispatch = d.dispatch
    jobs = [noop] * n if path.startswith("dispatch_many") else []
    job, target = _NoopJob(), _Target()
    start = time.perf_counter()
    if path == "dispatch(fn)":
        for _ in range(n):
            dispatch(noop)
    elif path == "dispatch(job)":
        for _ in range(n):
            dispatch(job)
    elif path == "dispatch(obj.method)":
        for _ in range(n):
            dispatch(target.run)
    elif path == "dispatch(fn, arg)":
        for i in range(n):
            dispatch(noop_arg, i)  # type: ignore[arg-type, call-arg, unused-ignore]
    elif path == "dispatch_many(jobs)":
        d.dispatch_many(jobs)  # type: ignore[attr-defined, unused-ignore]
    elif path == "dispatch_many(jobs, chunksize=32)":
        d.dispatch_many(jobs, chunksize=32)  # type: ignore[attr-defined, unused-ignore]
    else:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    d.finalize()
    return time.perf_counter() - start


def tpe_seconds(how: str, n: int, *, workers: int = WORKERS) -> float:
    """Seconds ThreadPoolExecutor takes for ``n`` no-op jobs by ``submit`` or ``map``, drain included.

    ``map`` hands each job an item of a list built before the clock starts,
    as `dispatch_many` reads one; its results are not read (nor are those of
    `dispatch_many`, which has none), which spares the executor that cost.
    """
    executor = ThreadPoolExecutor(workers)
    items = [noop] * n
    start = time.perf_counter()
    if how == TPE_SUBMIT:
        submit = executor.submit
        for _ in range(n):
            submit(noop)
    elif how == TPE_MAP:
        results = executor.map(noop_arg, items)  # submits every item before it returns
    else:
        raise ValueError(f"how must be {TPE_SUBMIT!r} or {TPE_MAP!r}, got {how!r}")
    executor.shutdown(wait=True)
    seconds = time.perf_counter() - start
    if how == TPE_MAP:
        del results  # held until every job ran: dropping it early could cancel the jobs not yet started
    return seconds


def runners(n: int, *, tpe_map: bool = True) -> dict[str, Callable[[], float]]:
    """Every contender of part 3 the imported jobdispatch offers: label -> seconds for ``n`` jobs."""
    out: dict[str, Callable[[], float]] = {TPE_SUBMIT: lambda: tpe_seconds(TPE_SUBMIT, n)}
    if tpe_map:
        out[TPE_MAP] = lambda: tpe_seconds(TPE_MAP, n)
    for context in (True, False):
        for path in PATHS:
            if available(path):
                label = path if context else path + NO_CONTEXT
                out[label] = _path_runner(path, n, context)
    return out


def _path_runner(path: str, n: int, propagate_context: bool) -> Callable[[], float]:
    return lambda: path_seconds(path, n, propagate_context=propagate_context)


def warm_up(contenders: dict[str, Callable[[], float]]) -> None:
    """Run every contender once, untimed (first thread starts, code caches)."""
    for run in contenders.values():
        run()


def end_to_end(n: int, trials: int) -> dict[str, Any]:
    """Per-trial seconds of every path and of ThreadPoolExecutor, interleaved."""
    warm_up(runners(min(n, 2_000)))
    seconds = interleave(runners(n), trials)
    return {"jobs": n, "workers": WORKERS, "trials": trials, "seconds": seconds}


def split(label: str) -> tuple[str, bool]:
    """Return the path of a part 3 label and whether it propagates the context."""
    return (label[: -len(NO_CONTEXT)], False) if label.endswith(NO_CONTEXT) else (label, True)


def rows(data: dict[str, Any]) -> list[Row]:
    """Results-table rows of part 3: ns per job of each path, against TPE.submit (and TPE.map)."""
    n, seconds = data["jobs"], data["seconds"]
    ns = {label: [s / n * 1e9 for s in values] for label, values in seconds.items()}
    out = []
    for label, values in ns.items():
        if label in (TPE_SUBMIT, TPE_MAP):
            continue
        path, context = split(label)
        scenario = f"hot path ({n:,} no-op jobs, 1 producer -> 1 pool x {data['workers']}), propagate_context={context}"
        against = [TPE_SUBMIT] + ([TPE_MAP] if path.startswith("dispatch_many") and TPE_MAP in ns else [])
        for competitor in against:
            out.append(ratio_row(scenario, path, "ns/job", values, competitor, ns[competitor], higher_is_better=False))
    return out


def report(data: dict[str, Any]) -> str:
    """Render the figures of `measure` as text."""
    lines = ["Hot path (ns per operation or per job)"]
    if "primitives_ns" in data:
        lines.append("1. primitives, one thread, best of repeats:")
        lines += [f"   {ns:7.1f}  {label}" for label, ns in data["primitives_ns"].items()]
    if "isolated_ns" in data:
        lines.append("2. halves in isolation (best of trials): producer alone / worker alone")
        for name, halves in data["isolated_ns"].items():
            lines.append(f"   {halves['producer']:7.0f} / {halves['worker']:5.0f}  {name}")
    if "paths" in data:
        paths = data["paths"]
        lines.append(
            f"3. end to end, {paths['jobs']:,} no-op jobs, 1 producer -> {paths['workers']} workers, "
            f"drain included, trials: {paths['trials']}:"
        )
        lines.append("   ns/job: median over trials; x TPE: median of the per-trial ratios (> 1: faster than TPE)")
        table = rows(paths)
        tpe = {k: median(v) / paths["jobs"] * 1e9 for k, v in paths["seconds"].items() if k in (TPE_SUBMIT, TPE_MAP)}
        lines.append("   " + "  ".join(f"{name} {ns:.0f} ns/job" for name, ns in tpe.items()))
        width = max(len(label) for label in paths["seconds"])
        lines.append(f"   {'':{width}}  {'ns/job':>7} {'x submit':>9} {'x map':>6}")
        for row in table:
            if row.competitor != TPE_SUBMIT:
                continue
            name = row.metric + ("" if row.scenario.endswith("True") else NO_CONTEXT)
            against_map = [
                r.ratio
                for r in table
                if r.competitor == TPE_MAP and (r.scenario, r.metric) == (row.scenario, row.metric)
            ]
            map_text = f"{against_map[0]:5.2f}x" if against_map and against_map[0] is not None else ""
            lines.append(f"   {name:<{width}}  {row.jobdispatch:7.0f} {row.ratio or 0:8.2f}x {map_text:>6}")
    return "\n".join(lines)


def measure(mode: Mode) -> dict[str, Any]:
    """Run all three parts and return their figures."""
    n = mode.pick(200_000, 50_000, 2_000)
    trials = mode.pick(7, 3, 1)
    data: dict[str, Any] = {"jobs": n}
    data["primitives_ns"] = primitives(mode.pick(1_000_000, 200_000, 2_000), mode.pick(7, 3, 1))
    data["isolated_ns"] = real_halves(n, trials)
    data["paths"] = end_to_end(n, trials)
    return data


def run(mode: Mode, results: Results) -> None:
    """Add the hot-path figures to ``results``: part 3 as rows, all of it as a scenario printed after the table."""
    data = measure(mode)
    results.rows += rows(data["paths"])
    results.scenarios["hotpath"] = data


def child(n: int) -> None:
    """One trial of part 3, and of part 2's two halves, printed as one line of JSON (see `benchmarks.ab`)."""
    import jobdispatch

    contenders = runners(n, tpe_map=False)
    warm_up(runners(min(n, 2_000), tpe_map=False))
    seconds = {}
    for label, run_once in contenders.items():
        gc.collect()
        seconds[label] = run_once()
    # Part 2's halves too, as if they were paths: which side of a hand-off changed.
    for name, halves in real_halves(n, 1, HALVES[:2]).items():
        suffix = NO_CONTEXT if name.endswith("False") else ""
        for half, ns in halves.items():
            seconds[f"dispatch(fn), {half} alone{suffix}"] = ns * n / 1e9
    print(json.dumps({"jobdispatch": jobdispatch.__file__, "python": sys.version.split()[0], "seconds": seconds}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath", description="jobdispatch hot-path benchmarks")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes and fewer trials")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, checks that everything runs")
    parser.add_argument("--json", type=Path, help="save the figures as JSON here")
    parser.add_argument("--child", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    mode = Mode("quick" if args.quick else "smoke" if args.smoke else "full")
    data = measure(mode)
    print(report(data))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
