"""Ctrl-C and SIGTERM: interrupted programs exit promptly, and an interrupted call leaves nothing stuck.

Three kinds of checks, all in child processes (a broken dispatcher must not
hang the test run at exit):

- trials: a child dispatches, waits and runs batches across several pools in a
  loop; the test sends SIGINT (or SIGTERM, which the child turns into
  SystemExit) at a seeded random moment and requires the child to exit within
  5 s with the right status;
- blocking calls: a child blocked in dispatch (full pool), wait, batch exit or
  finalize is interrupted promptly;
- interrupt anywhere: the child raises KeyboardInterrupt, through a trace
  function, at the entry of each function called while one operation runs
  (the points where CPython delivers a pending signal), or, through a
  profile function, just after each C call jobdispatch makes returns (a
  lock's acquire, release or owner check; a queue's put), then checks that the
  dispatcher recovers: ``finalize(cancel_pending=True)`` (what the ``with``
  statement does), ``finalize()`` (what the exit hook does), or simply going
  on (``wait()`` returns, no place in a pool is lost).

CI runs 10 trials per signal and stops each sweep at its first failing point;
``JOBDISPATCH_LONG=1 python -m pytest tests/test_interrupt.py`` runs 100
trials per signal and whole sweeps. This file is also the child's script:
``python tests/test_interrupt.py trial|block|sweep ...``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from support import Counter, refuse_thread_starts

LONG = os.environ.get("JOBDISPATCH_LONG") == "1"
TRIALS = 100 if LONG else 10
EXIT_WITHIN = 5.0  # seconds an interrupted child may take to exit
READY_WITHIN = 30.0  # seconds a child may take to start and print "ready"
HERE = os.path.abspath(__file__)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


# -- child side ------------------------------------------------------------------


def _tiny() -> None:
    sum(range(50))


def _child_trial(scenario: str, use_sigterm: bool) -> None:
    """Loop over dispatcher operations until a signal ends the process."""
    import faulthandler

    from jobdispatch import Dispatcher, PoolConfig

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks before it kills a hung child

    if use_sigterm:

        def on_term(signum: int, frame: object) -> None:
            sys.exit(143)

        signal.signal(signal.SIGTERM, on_term)
    config = [PoolConfig(0, 2, 4), PoolConfig(1, 1, 0), PoolConfig(2, 3, 1)]
    rng = random.Random(scenario)
    if scenario == "unmanaged":
        # No with statement: the interrupt ends the program and the exit hook drains.
        a = Dispatcher(config, name="a")
        b = Dispatcher({0: 1, 1: 2}, name="b")
        print("ready", flush=True)
        while True:
            a.dispatch(_tiny, priority=rng.randrange(3))
            b.dispatch(_tiny, priority=rng.randrange(2))
            if rng.random() < 0.1:
                a.dispatch_later(rng.random() / 500, _tiny, priority=1)
            if rng.random() < 0.05:
                b.wait()
    with Dispatcher(config, name="d") as d, Dispatcher({0: 1, 1: 2}, name="e") as e:
        print("ready", flush=True)
        while True:
            if scenario == "dispatch":
                d.dispatch(_tiny, priority=rng.randrange(3))
                e.dispatch(_tiny, priority=rng.randrange(2))
            elif scenario == "wait":
                for _ in range(5):
                    d.dispatch(_tiny, priority=rng.randrange(3))
                d.dispatch_later(0.0005, _tiny, priority=0)
                d.wait()
            elif scenario == "batch":
                with d.batch() as batch:
                    for _ in range(5):
                        batch.dispatch(_tiny, priority=rng.randrange(3))
                    batch.dispatch_later(0.0005, _tiny, priority=2)
                    e.dispatch(_tiny, priority=1)
            elif scenario == "later":
                for _ in range(3):
                    d.dispatch_later(rng.random() / 1000, _tiny, priority=rng.randrange(3))
                e.dispatch_later(0, _tiny, priority=0)
                d.wait()
                e.wait()
            else:
                raise ValueError(scenario)


def _child_block(call: str) -> None:
    """Block in one call on a pool held by a gated job, until SIGINT."""
    import faulthandler

    from jobdispatch import Dispatcher, PoolConfig

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks before it kills a hung child

    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(60)

    with Dispatcher([PoolConfig(0, 1, 0)], name="d") as d:
        try:
            d.dispatch(hold)
            started.wait(10)
            print("ready", flush=True)
            if call == "dispatch":
                d.dispatch(_tiny)  # the only place is held: blocks
            elif call == "wait":
                d.wait()
            elif call == "batch":
                with d.batch() as batch:
                    batch.dispatch_later(0, hold)
            elif call == "finalize":
                d.finalize()
        finally:
            gate.set()  # let the running job end, so the with statement can finalize


def _some_jobs(d: Any, ran: Counter) -> None:
    for i in range(3):
        d.dispatch(ran, priority=i % 2)
    d.dispatch_later(0.001, ran, priority=0)


def _op_dispatch(d: Any, ran: Counter) -> None:
    for i in range(3):
        d.dispatch(ran, priority=i % 2)


def _op_dispatch_later(d: Any, ran: Counter) -> None:
    d.dispatch_later(0.001, ran, priority=0)
    d.dispatch_later(0, ran, priority=1)


def _op_batch(d: Any, ran: Counter) -> None:
    with d.batch() as batch:
        batch.dispatch(ran, priority=0)
        batch.dispatch_later(0, ran, priority=1)
        batch.dispatch(ran, priority=1)


def _open_once_waiting(pool: Any, gate: threading.Event) -> None:
    """Open ``gate`` once a producer waits for room in ``pool`` (or after a second), from another thread."""

    def opener() -> None:
        deadline = time.monotonic() + 1.0
        while not pool._room_waiters and not gate.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)  # polling for a state (the producer waits for room), bounded
        gate.set()

    threading.Thread(target=opener, name="opener", daemon=True).start()


def _op_dispatch_full(d: Any, ran: Counter) -> None:
    gate = threading.Event()
    try:
        d.dispatch(lambda: gate.wait(1.0), priority=1)  # pool 1 (one worker, no queue) is now full
        _open_once_waiting(d._pools[1], gate)
        d.dispatch(ran, priority=1)  # blocks until the job above ends
    finally:
        gate.set()  # interrupted before it blocked: the job above ends now


def _op_dispatch_full_now(d: Any, ran: Counter) -> None:
    """A dispatch that may not wait, refused by a full pool (PoolFull is raised with the pool's lock once held)."""
    from jobdispatch import PoolFull

    gate = threading.Event()
    try:
        d.dispatch(lambda: gate.wait(1.0), priority=1)  # pool 1 (one worker, no queue) is now full
        with contextlib.suppress(PoolFull):
            d.dispatch(ran, priority=1, timeout=0)
    finally:
        gate.set()


def _op_dispatch_async_full(d: Any, ran: Counter) -> None:
    """An async producer waits for room in a full pool, woken as the job ahead of it ends."""
    import asyncio

    gate = threading.Event()
    try:
        d.dispatch(lambda: gate.wait(1.0), priority=1)  # pool 1 is now full
        _open_once_waiting(d._pools[1], gate)
        asyncio.run(d.dispatch_async(ran, priority=1))
    finally:
        gate.set()


def _op_run_full(d: Any, ran: Counter) -> None:
    """An awaited call (Dispatcher.run) waits for room in a full pool, woken as the job ahead of it ends."""
    import asyncio

    gate = threading.Event()
    try:
        d.dispatch(lambda: gate.wait(1.0), priority=1)  # pool 1 is now full
        _open_once_waiting(d._pools[1], gate)
        asyncio.run(d.run(ran, priority=1))
    finally:
        gate.set()


def _op_wait_async(d: Any, ran: Counter) -> None:
    import asyncio

    asyncio.run(d.wait_async())


def _op_cancel_delayed(d: Any, ran: Counter) -> None:
    """Delayed jobs cancelled through their handles: one far off, one due at once (maybe handed over)."""
    far = d.dispatch_later(0.2, ran, priority=0)  # runs soon, if an interrupt comes before it is cancelled
    due = d.dispatch_later(0, ran, priority=1)
    far.cancel()
    due.cancel()


def _op_async_batch(d: Any, ran: Counter) -> None:
    import asyncio

    async def main() -> None:
        async with d.batch() as batch:
            await batch.dispatch_async(ran, priority=0)
            batch.dispatch_later(0, ran, priority=1)

    asyncio.run(main())


def _op_async_with(d: Any, ran: Counter) -> None:
    """Leaving ``async with`` finalizes on a thread of its own, with a delayed job still to come."""
    import asyncio

    async def main() -> None:
        async with d:
            d.dispatch(ran, priority=0)
            d.dispatch_later(0.001, ran, priority=1)

    asyncio.run(main())


# The executor views the map operations used, by dispatcher: after recovery
# every future they made must be settled (a shutdown would wait for it).
_views: list[tuple[Any, Any]] = []


def _call_counter(counter: Counter) -> None:
    counter()


def _op_map(d: Any, ran: Counter, chunksize: int = 1) -> None:
    view = d.executor(0)
    _views.append((d, view))
    for _ in view.map(_call_counter, [ran] * 5, chunksize=chunksize):
        pass


def _op_dispatch_contended(d: Any, ran: Counter) -> None:
    """Dispatches that find the pool's lock taken by another thread, which keeps it for a moment."""
    lock = d._pools[0]._lock
    held = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            time.sleep(0.005)  # keeps the lock a while: the dispatch yields, retries, then blocks

    thread = threading.Thread(target=holder, name="holder", daemon=True)
    thread.start()
    held.wait(1.0)
    d.dispatch(ran, priority=0)
    d.dispatch_many([ran, ran], priority=0)
    thread.join(1.0)


# What an interrupted dispatch_many said it dispatched, by dispatcher: after
# recovery exactly that many of its jobs (and those of the calls before it
# in the operation) must have run, and the pools must have counted every job
# that ran, the operation's other jobs (the last number) too, each once.
_promised: list[tuple[Any, Counter, int, int]] = []


class _Routed:
    """A Job whose priority() picks the pool, counting its run."""

    def __init__(self, priority: int, ran: Counter) -> None:
        self._priority = priority
        self._ran = ran

    def do(self) -> None:
        self._ran()

    def priority(self) -> int:
        return self._priority


def _op_many_listed(d: Any, ran: Counter) -> None:
    """dispatch_many of lists: functions into one pool, then Jobs that alternate between two (one has one place)."""
    dispatched = 0

    def job() -> None:
        ran()

    try:
        dispatched += d.dispatch_many([job] * 6, priority=0)
        dispatched += d.dispatch_many([_Routed(n % 2, ran) for n in range(6)])
    except KeyboardInterrupt as error:
        _promise(d, ran, dispatched, error)
        raise


def _promise(d: Any, ran: Counter, dispatched: int, error: BaseException, others: int = 0) -> None:
    """Record what an interrupted dispatch_many said it dispatched, plus ``dispatched`` by the calls before it.

    ``others``: jobs of the operation that do not count in ``ran``.
    """
    said = re.search(r"dispatched (\d+) jobs", " ".join(getattr(error, "__notes__", ())))
    if said:
        _promised.append((d, ran, dispatched + int(said.group(1)), others))


def _op_many_listed_full(d: Any, ran: Counter) -> None:
    """dispatch_many of a list into a pool with one place: the first job holds it, the others wait for room."""
    gate = threading.Event()

    def hold() -> None:
        gate.wait(1.0)
        ran()

    try:
        _open_once_waiting(d._pools[1], gate)
        d.dispatch_many([hold, ran, ran, ran], priority=1)
    except KeyboardInterrupt as error:
        _promise(d, ran, 0, error)
        raise
    finally:
        gate.set()  # interrupted before it blocked: the job above ends now


class _Attributed(_Routed):
    """A Job of the same kind whose instance has a plain priority attribute: routed in full."""

    def __init__(self, priority: int, ran: Counter) -> None:
        super().__init__(priority, ran)
        self.priority = priority  # type: ignore[assignment,method-assign]


def _op_many_listed_mixed(d: Any, ran: Counter) -> None:
    """dispatch_many of lists where jobs that need the full routing stand between jobs routed inline."""
    dispatched = 0

    def job() -> None:
        ran()

    try:
        dispatched += d.dispatch_many([_Routed(0, ran), _Attributed(1, ran), _Routed(1, ran), _Attributed(0, ran)])
        dispatched += d.dispatch_many((job, ran, functools.partial(ran), job), priority=0)
    except KeyboardInterrupt as error:
        _promise(d, ran, dispatched, error)
        raise


def _op_many_listed_no_thread(d: Any, ran: Counter) -> None:
    """dispatch_many of a list into a pool that cannot start a thread: the caller runs each job itself."""
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith("sweep"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    def job() -> None:
        ran()

    threading.Thread.start = refuse  # type: ignore[method-assign]
    try:
        d.dispatch_many([job, ran, job], priority=1)  # functions through Pool.submit, the object through dispatch
    except KeyboardInterrupt as error:
        _promise(d, ran, 0, error)
        raise
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]


def _op_many_listed_in_job(d: Any, ran: Counter) -> None:
    """A job dispatches a list into its own pool and the other one (follow-ups), interrupted in its worker.

    The trace or profile function of the sweep is set on the job's thread
    for that call; the job hands what it caught to this thread, which raises it.
    """
    tracer, profiler = sys.gettrace(), sys.getprofile()
    caught: list[BaseException] = []
    over = threading.Event()

    def parent() -> None:
        dispatched = 0
        sys.settrace(tracer)
        sys.setprofile(profiler)
        try:
            dispatched += d.dispatch_many([ran] * 6, priority=0)  # 3 places left: 3 go in, 3 run here
            dispatched += d.dispatch_many([_Routed(n % 2, ran) for n in range(4)])
        except KeyboardInterrupt as error:
            _promise(d, ran, dispatched, error, others=1)  # this job
            caught.append(error)
        finally:
            sys.settrace(None)
            sys.setprofile(None)
            over.set()

    d.dispatch(parent, priority=0)
    if not over.wait(4.0):
        raise RuntimeError("the job that dispatches a list never ended")
    if caught:
        raise caught[0]


SWEEP_OPS: dict[str, tuple[Callable[[Any, Counter], None] | None, Callable[[Any, Counter], None]]] = {
    "dispatch": (None, _op_dispatch),
    "dispatch_full": (None, _op_dispatch_full),
    "dispatch_later": (None, _op_dispatch_later),
    "batch": (None, _op_batch),
    "wait": (_some_jobs, lambda d, ran: d.wait()),
    "finalize": (_some_jobs, lambda d, ran: d.finalize()),
    "finalize_cancel": (_some_jobs, lambda d, ran: d.finalize(cancel_pending=True)),
    "map": (None, _op_map),
    "map_chunks": (None, lambda d, ran: _op_map(d, ran, chunksize=2)),
    "dispatch_full_now": (None, _op_dispatch_full_now),
    "dispatch_async_full": (None, _op_dispatch_async_full),
    "many_listed": (None, _op_many_listed),
    "dispatch_contended": (None, _op_dispatch_contended),
    "many_listed_full": (None, _op_many_listed_full),
    "many_listed_mixed": (None, _op_many_listed_mixed),
    "many_listed_in_job": (None, _op_many_listed_in_job),
    "many_listed_no_thread": (None, _op_many_listed_no_thread),
    "run_full": (None, _op_run_full),
    "wait_async": (_some_jobs, _op_wait_async),
    "cancel_delayed": (None, _op_cancel_delayed),
    "async_batch": (None, _op_async_batch),
    "async_with": (None, _op_async_with),
}


def _injectable(frame: Any) -> bool:
    """Whether CPython could deliver a Ctrl-C at this function entry during the operation.

    The entry of any jobdispatch function, of any function jobdispatch calls
    (but asyncio's), and of the wait inside Thread.start (the longest pause of a dispatch that
    starts a worker). Deeper standard-library internals are left out: they
    are not the library's to protect.
    """
    code = frame.f_code
    if "jobdispatch" in code.co_filename:
        return True
    if f"{os.sep}asyncio{os.sep}" in code.co_filename:
        # The loop's own machinery (a future's callbacks, call_soon) is
        # asyncio's to protect; asyncio.run turns Ctrl-C into a cancellation.
        return False
    caller = frame.f_back
    if caller is None:
        return False
    if "jobdispatch" in caller.f_code.co_filename:
        return True
    return code.co_name == "wait" and caller.f_code.co_name == "start" and "threading" in code.co_filename


def _recover(d: Any, name: str, mode: str, timeout: float) -> list[str]:
    from jobdispatch import PoolFull

    problems: list[str] = []
    if mode == "continue" and not d.closed:
        if not d.wait(timeout):
            problems.append("wait() still waiting")
        for owner, ran, promised, others in _promised:
            if owner is d and ran.value != promised:
                problems.append(f"dispatch_many said {promised} jobs were dispatched, {ran.value} ran")
            counted = sum(s.completed + s.failed + s.cancelled for s in d.stats().values())
            if owner is d and counted != ran.value + others:
                problems.append(f"{ran.value + others} jobs ran, the pools counted {counted}")
        gate = threading.Event()
        for priority, places in ((0, 4), (1, 1)):
            got = 0
            try:
                for _ in range(places):
                    d.dispatch(lambda: gate.wait(timeout), priority=priority, timeout=timeout / 4)
                    got += 1
            except PoolFull:
                problems.append(f"pool {priority} lost places: {got} of {places} left")
        gate.set()
    if mode == "exit":
        try:
            d.finalize(timeout=timeout)
        except Exception as error:
            problems.append(f"finalize() raised {error!r}")
    try:
        d.finalize(cancel_pending=True, timeout=timeout)
    except Exception as error:
        problems.append(f"finalize(cancel_pending=True) raised {error!r}")
    for thread in threading.enumerate():
        if thread.name.startswith(f"{name}-") and thread.ident is not None:
            thread.join(5 * timeout)  # a loaded machine may take a while to let a thread end
    left = [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]
    if left:
        frames = sys._current_frames()
        stacks = {
            t.name: traceback.format_stack(frames[t.ident])[-4:] if t.ident in frames else "not started" for t in left
        }
        problems.append(f"threads left: {[t.name for t in left]}; where: {stacks}")
    for priority, stats in d.stats().items():
        if (stats.busy, stats.queued, stats.delayed) != (0, 0, 0):
            problems.append(f"pool {priority} after finalize: {stats}")
    for owner, view in _views:
        unsettled = [future for future in view._pending.snapshot() if owner is d]
        if unsettled:
            problems.append(f"futures of the executor view never settled: {unsettled}")
    return problems


def _child_sweep(op_name: str, mode: str, stop_first: bool, at: str) -> None:
    """Interrupt ``op_name`` at its 1st, 2nd, ... injectable point; print what did not recover.

    ``at``: ``calls`` (the entry of a function, see `_injectable`) or
    ``returns`` (just after a C function called by jobdispatch returns: a
    lock's acquire, release or owner check, a queue's put, ...).
    """
    from jobdispatch import Dispatcher, PoolConfig

    timeout = 1.0  # for calls on tiny jobs that take milliseconds when nothing is wrong
    prepare, op = SWEEP_OPS[op_name]
    keep: list[Any] = []  # never collected: a broken dispatcher must not run _abandon mid-sweep
    failures: list[dict[str, Any]] = []
    point = 0
    while True:
        point += 1
        name = f"sweep{point}"
        d = Dispatcher([PoolConfig(0, 2, 2), PoolConfig(1, 1, 0)], name=name)
        keep.append(d)
        ran = Counter()
        if prepare is not None:
            prepare(d, ran)
        calls = 0
        where: list[str] = []
        errors: list[str] = []

        def tracer(frame: Any, event: str, arg: Any, point: int = point, where: list[str] = where) -> None:
            nonlocal calls
            if event == "call" and _injectable(frame):
                calls += 1
                if calls == point:
                    code = frame.f_code
                    where.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})")
                    raise KeyboardInterrupt

        def profiler(frame: Any, event: str, arg: Any, point: int = point, where: list[str] = where) -> None:
            nonlocal calls
            if event == "c_return" and "jobdispatch" in frame.f_code.co_filename:
                calls += 1
                if calls == point:
                    called = getattr(arg, "__qualname__", repr(arg))
                    code = frame.f_code
                    where.append(
                        f"after {called} in {code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"
                    )
                    raise KeyboardInterrupt

        def run(d: Any = d, ran: Counter = ran, tracer: Any = tracer, errors: list[str] = errors) -> None:
            previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
            if at == "calls":
                sys.settrace(tracer)
            else:
                sys.setprofile(profiler)
            try:
                op(d, ran)
            except KeyboardInterrupt:
                pass
            except BaseException as error:
                errors.append(f"the interrupted call raised {error!r}")
            finally:
                sys.setprofile(None)
                sys.settrace(previous_trace)

        worker = threading.Thread(target=run, name="op", daemon=True)
        worker.start()
        worker.join(4 * timeout)
        if worker.is_alive():
            errors.append("the interrupted call itself hangs")
        elif not where:
            break  # the operation completed before reaching this point: sweep done
        else:
            outcome: list[str] = []
            recovery = threading.Thread(
                target=lambda d=d, name=name, outcome=outcome: outcome.extend(_recover(d, name, mode, timeout)),
                name="recover",
                daemon=True,
            )
            recovery.start()
            recovery.join(6 * timeout)
            errors += outcome if not recovery.is_alive() else [*outcome, "recovery hangs"]
        if errors:
            failures.append({"point": point, "where": where[0] if where else "?", "problems": errors})
            if stop_first:
                break
    print(json.dumps({"points": point - 1, "failures": failures}), flush=True)
    os._exit(0)  # skip the exit hook: a dispatcher left broken here could hang it


# -- test side -------------------------------------------------------------------


def _start_child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HERE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_ready(child: subprocess.Popen[str]) -> None:
    """Wait for the child's "ready" line; kill it (and fail) if it never comes."""
    timer = threading.Timer(READY_WITHIN, child.kill)
    timer.start()
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
    finally:
        timer.cancel()
    if line.strip() != "ready":
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"child did not get ready: {line!r}\n{err}")


def _interrupt(child: subprocess.Popen[str], signum: int) -> tuple[bool, int, str]:
    """Send ``signum``; return (exited in time, returncode, stderr), killing a hung child."""
    child.send_signal(signum)
    try:
        _, err = child.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        if child.args[2] in ("trial", "block"):  # these children dump their threads' stacks on SIGUSR1
            child.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(1)
        child.kill()
        _, err = child.communicate()
        return False, child.returncode, err
    return True, child.returncode, err


SCENARIOS = ["dispatch", "wait", "batch", "later", "unmanaged"]


class TestSignalTrials:
    @pytest.mark.timeout(900 if LONG else 120)
    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_signal_at_random_moment_exits_promptly(self, signum: int) -> None:
        """A signal at a random moment of a busy program ends it within 5 s with the right status."""
        failures: list[str] = []
        for trial in range(TRIALS):
            rng = random.Random(f"{signum}-{trial}")
            scenario = SCENARIOS[trial % len(SCENARIOS)]
            child = _start_child("trial", scenario, "term" if signum == signal.SIGTERM else "int")
            _read_ready(child)
            time.sleep(rng.uniform(0.0, 0.05))  # the random moment (not a synchronisation)
            exited, code, err = _interrupt(child, signum)
            if not exited:
                failures.append(
                    f"trial {trial} ({scenario}): still running {EXIT_WITHIN} s after the signal:\n{err[-3000:]}"
                )
            elif signum == signal.SIGINT:
                if code != -signal.SIGINT or "\nKeyboardInterrupt\n" not in err:
                    failures.append(f"trial {trial} ({scenario}): exit {code}, stderr: {err[-600:]}")
            elif code != 143 or "Traceback" in err:
                failures.append(f"trial {trial} ({scenario}): exit {code}, stderr: {err[-600:]}")
        assert not failures, "\n".join(failures)


class TestBlockedCalls:
    @pytest.mark.parametrize("call", ["dispatch", "wait", "batch", "finalize"])
    def test_blocked_call_is_interrupted_promptly(self, call: str) -> None:
        """Ctrl-C interrupts a main thread blocked in dispatch (full pool), wait, batch exit or finalize."""
        child = _start_child("block", call)
        _read_ready(child)
        exited, code, err = _interrupt(child, signal.SIGINT)
        assert exited, f"still blocked {EXIT_WITHIN} s after Ctrl-C: {err[-3000:]}"
        assert code == -signal.SIGINT, err
        assert err.rstrip().endswith("KeyboardInterrupt"), err


class TestWakeUpInterrupted:
    def test_producer_interrupted_as_it_is_woken_hands_the_wake_up_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Ctrl-C just as a blocked producer is woken for room: the next blocked producer gets the room."""
        from jobdispatch import Dispatcher, PoolConfig, _pool
        from support import WAIT, wait_for

        real_sleep = _pool.Pool.sleep_until_woken

        def interrupted_once_woken(pool: _pool.Pool, *args: Any) -> None:
            real_sleep(pool, *args)
            if threading.current_thread().name == "test-first":
                raise KeyboardInterrupt  # as CPython delivers Ctrl-C when the call that woke it returns

        monkeypatch.setattr(_pool.Pool, "sleep_until_woken", interrupted_once_woken)
        d = Dispatcher([PoolConfig(0, 1, 0)], name="test-woken")
        try:
            gate, started = threading.Event(), threading.Event()
            d.dispatch(lambda: (started.set(), gate.wait(WAIT)))
            assert started.wait(WAIT)
            pool = d._pools[0]
            outcomes: list[str] = []

            def produce() -> None:
                try:
                    d.dispatch(lambda: None)
                    outcomes.append("queued")
                except KeyboardInterrupt:
                    outcomes.append("interrupted")

            first = threading.Thread(target=produce, name="test-first")
            first.start()
            wait_for(lambda: len(pool._room_waiters) == 1, "the first producer to wait for room")
            second = threading.Thread(target=produce, name="test-second")
            second.start()
            wait_for(lambda: len(pool._room_waiters) == 2, "the second producer to wait for room")
            gate.set()  # the job ends: its place wakes the first producer, which is interrupted
            first.join(WAIT)
            second.join(WAIT)
            assert not second.is_alive(), "the second producer slept on next to a free place"
            assert sorted(outcomes) == ["interrupted", "queued"]
            assert d.wait(WAIT)
            d.dispatch(lambda: None, timeout=0)  # and the place is free again
        finally:
            d.finalize(timeout=WAIT)


class _StruckLock:
    """The pool's lock, seen through a wrapper that raises KeyboardInterrupt once, just after one of its calls.

    CPython delivers a pending Ctrl-C as a C call returns: the lock is then
    taken (or given back) and the caller gets KeyboardInterrupt instead.
    """

    def __init__(self, real: Any, after: str, nth: int, thread: int) -> None:
        self.real, self.after, self.nth, self.thread, self.struck = real, after, nth, thread, False

    def _strike(self, call: str) -> None:
        if call == self.after and not self.struck and threading.get_ident() == self.thread:
            self.nth -= 1
            if not self.nth:
                self.struck = True
                raise KeyboardInterrupt

    def acquire(self, *args: Any) -> bool:
        taken: bool = self.real.acquire(*args)
        self._strike("acquire")
        return taken

    def release(self) -> None:
        self.real.release()
        self._strike("release")

    def _is_owned(self) -> bool:
        owned = bool(self.real._is_owned())
        self._strike("_is_owned")
        return owned

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.real.release()


def _free_for_others(lock: Any) -> bool:
    """Whether another thread can take ``lock`` within a few seconds."""
    taken: list[bool] = []

    def take() -> None:
        if lock.acquire(True, 5.0):
            lock.release()
            taken.append(True)

    other = threading.Thread(target=take)
    other.start()
    other.join(10.0)
    return bool(taken)


class TestInterruptAsTheLockCallReturns:
    @pytest.mark.parametrize(("after", "nth"), [("acquire", 1), ("acquire", 2), ("release", 1), ("release", 2)])
    @pytest.mark.parametrize("how", ["dispatch", "batch", "full pool"])
    def test_lock_is_free_and_job_counted_right(self, after: str, nth: int, how: str) -> None:
        """Ctrl-C as the pool's lock is taken or given back in a dispatch leaves the lock free and the job counted."""
        from jobdispatch import Dispatcher, PoolConfig
        from support import WAIT

        d = Dispatcher([PoolConfig(0, 2, 0 if how == "full pool" else 4)], name="test-struck")
        try:
            pool = d._pools[0]
            ran = Counter()
            gate, started = threading.Event(), threading.Event()
            d.dispatch(lambda: (started.set(), gate.wait(WAIT)))  # a worker runs; so the next dispatch starts none
            assert started.wait(WAIT)
            if how == "full pool":
                d.dispatch(lambda: gate.wait(WAIT))
            pool._lock = _StruckLock(pool._lock, after, nth, threading.get_ident())
            # Into a full pool, every strike comes before the producer sleeps;
            # should none come, the pool opens after WAIT, and the test fails
            # rather than hangs.
            safety = threading.Timer(WAIT, gate.set)
            safety.start()
            with pytest.raises(KeyboardInterrupt) if how == "full pool" or nth == 1 else contextlib.nullcontext():
                if how == "batch":
                    with d.batch() as batch:
                        batch.dispatch(ran)
                else:
                    d.dispatch(ran)
            pool._lock.thread = -1  # no strike from here on
            safety.cancel()
            assert not pool._room_waiters, "the interrupted producer is still registered as waiting for room"
            if how == "full pool" or nth == 1:  # a dispatch into a pool with room takes the lock once
                assert pool._lock.struck
            gate.set()
            assert _free_for_others(pool._lock.real), "the pool's lock was left held"
            assert d.wait(WAIT)
            stats = d.stats(0)
            blockers = 2 if how == "full pool" else 1
            assert (stats.busy, stats.queued, stats.failed) == (0, 0, 0)
            assert stats.completed == blockers + ran.value  # it ran, or ...
            assert ran.value + stats.cancelled <= 1  # ... was counted cancelled, or never accepted
            assert not pool._room_waiters, "an interrupted producer was left waiting for room"
            assert pool._room == pool._places
            d.dispatch(ran, timeout=0)  # the pool has its room
            assert d.wait(WAIT)
        finally:
            d.finalize(cancel_pending=True, timeout=10)


class _StruckList(list[Any]):
    """A pool's list of threads whose remove() raises KeyboardInterrupt once it has removed (Ctrl-C as it returns)."""

    def remove(self, value: Any) -> None:
        super().remove(value)
        raise KeyboardInterrupt


class TestNoThreadInterrupted:
    """The pool's first thread cannot start (a thread limit): Ctrl-C as the dispatch turns to run the job itself."""

    @pytest.fixture
    def refused(self, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
        """Refuse to start the threads of dispatchers named test-no-thread; call the result to allow them again."""
        real_start = threading.Thread.start
        allowed = threading.Event()

        def refuse(thread: threading.Thread) -> None:
            if thread.name.startswith("test-no-thread") and not allowed.is_set():
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", refuse)
        return allowed.set

    @pytest.mark.parametrize("how", ["dispatch", "batch"])
    def test_lock_is_free_when_ctrl_c_strikes_as_the_owner_check_returns(
        self, refused: Callable[[], None], how: str
    ) -> None:
        """Ctrl-C as the except block's owner check returns: the pool's lock is free, and the job was not run."""
        from jobdispatch import Dispatcher

        d = Dispatcher({0: 1}, name="test-no-thread")
        try:
            pool = d._pools[0]
            ran = Counter()
            pool._lock = _StruckLock(pool._lock, "_is_owned", 1, threading.get_ident())
            with pytest.raises(KeyboardInterrupt):
                if how == "dispatch":
                    d.dispatch(ran)
                else:
                    with d.batch() as batch:
                        batch.dispatch(ran)  # through Pool.submit
            assert pool._lock.struck
            pool._lock.thread = -1  # no strike from here on
            assert _free_for_others(pool._lock.real), "the pool's lock was left held"
            assert ran.value == 0
            d.dispatch(ran)  # no thread still: run here
            assert ran.value == 1
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    def test_pool_starts_a_thread_later_after_ctrl_c_as_the_failed_one_is_forgotten(
        self, refused: Callable[[], None]
    ) -> None:
        """Ctrl-C as the thread that could not start leaves the pool's list: once threads can start, one does."""
        from jobdispatch import Dispatcher
        from support import WAIT

        d = Dispatcher({0: 1}, name="test-no-thread")
        try:
            pool = d._pools[0]
            pool._threads = _StruckList()
            ran = Counter()
            with pytest.raises(KeyboardInterrupt):
                d.dispatch(ran)
            pool._threads = list(pool._threads)
            refused()  # threads start again
            d.dispatch(ran)
            assert d.wait(WAIT), "the job waits for a thread that the pool believes it has"
            assert ran.value == 1
            assert [t.name for t in pool._threads] == ["test-no-thread-p0-1"]
        finally:
            d.finalize(cancel_pending=True, timeout=10)


def _strike_in_mapped_chunk(line_text: str, when: Callable[[Any], bool]) -> Any:
    """Return a trace function that raises KeyboardInterrupt once, at a line of a running mapped chunk."""
    from jobdispatch import _many

    return _strike_at_line(_many.MappedChunk.__call__, line_text, when)


def _strike_at_line(function: Callable[..., Any], line_text: str, when: Callable[[Any], bool]) -> Any:
    """Return a trace function that raises KeyboardInterrupt once, at a line of ``function`` as it runs.

    The line is the first of ``function`` that holds ``line_text``.

    It strikes as the line starts, if ``when(frame)`` holds: where a signal
    reaches the thread at a jump back or at the entry of a call.
    """
    code = function.__code__
    source, first = inspect.getsourcelines(code)
    lines = [first + n for n, text in enumerate(source) if line_text in text]
    assert lines, f"no line {line_text!r} in {function.__qualname__}"
    struck: list[bool] = []

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == lines[0] and not struck and when(frame):
            struck.append(True)
            raise KeyboardInterrupt
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    return tracer


def _strike_as_entered_or_first_returns(function: Callable[..., Any], at: str) -> tuple[Callable[..., Any], Any]:
    """Return ``(sys.settrace or sys.setprofile, a hook for it)`` raising KeyboardInterrupt once in ``function``.

    ``at``: ``entry`` (as the function is entered) or ``return`` (as its first C call returns).
    """
    code = function.__code__
    struck: list[bool] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == ("call" if at == "entry" else "c_return") and frame.f_code is code and not struck:
            struck.append(True)
            raise KeyboardInterrupt

    return (sys.settrace if at == "entry" else sys.setprofile), hook


class TestMappedChunkRunHereInterrupted:
    """A map into a pool that cannot start its thread: the mapping thread runs each chunk itself, and Ctrl-C strikes."""

    @pytest.fixture
    def refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Refuse to start the threads of dispatchers named test-chunk-here."""
        refuse_thread_starts(monkeypatch, "test-chunk-here")

    def _map_struck(self, tracer: Any) -> tuple[int, tuple[int, int, int]]:
        from jobdispatch import Dispatcher

        d = Dispatcher({0: 1}, name="test-chunk-here")
        executor = d.executor(0)
        ran = Counter()

        def call(n: int) -> int:
            ran()
            return n

        previous = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                list(executor.map(call, range(3), chunksize=3))
        finally:
            sys.settrace(previous)
        try:
            assert executor._pending.snapshot() == [], "the chunk's future was never settled"
            stats = d.stats(0)
            return ran.value, (stats.completed, stats.failed, stats.cancelled)
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    def test_ctrl_c_after_the_last_call_counts_each_call_once_and_none_below_zero(self, refused: None) -> None:
        """Ctrl-C as the chunk's loop jumps back after its last call: three calls, three counts, none negative."""
        ran, counts = self._map_struck(
            _strike_in_mapped_chunk(
                "while index < count and not future.dropped", lambda f: f.f_locals["index"] == f.f_locals["count"]
            )
        )
        # All three ran; the thread counts the interrupted chunk as failed, so one of them shows as failed.
        assert (ran, counts) == (3, (2, 1, 0))

    def test_ctrl_c_as_the_chunk_settles_its_future_leaves_no_future_running(self, refused: None) -> None:
        """Ctrl-C at the entry of the call that settles the chunk's future: the future is settled all the same."""
        ran, counts = self._map_struck(_strike_in_mapped_chunk("future.set_result((values, errors))", lambda f: True))
        assert ran == 3
        assert sum(counts) == 3, counts
        assert min(counts) >= 0, counts

    @pytest.mark.parametrize("at", ["entry", "return"])
    def test_ctrl_c_before_the_chunk_runs_a_call_cancels_every_call_and_settles_the_future(
        self, refused: None, at: str
    ) -> None:
        """Ctrl-C as the mapped chunk is entered, or as its first C call returns: no call lost, the future settled."""
        from jobdispatch import Dispatcher, _many

        d = Dispatcher({0: 1}, name="test-chunk-here")
        executor = d.executor(0)
        ran = Counter()
        install, hook = _strike_as_entered_or_first_returns(_many.MappedChunk.__call__, at)
        previous_trace, previous_profile = sys.gettrace(), sys.getprofile()  # coverage's, if any: put back after
        install(hook)
        try:
            with pytest.raises(KeyboardInterrupt):
                list(executor.map(lambda n: ran(), range(3), chunksize=3))
        finally:
            sys.setprofile(previous_profile)
            sys.settrace(previous_trace)
        try:
            assert executor._pending.snapshot() == [], "the chunk's future was never settled"
            stats = d.stats(0)
            # None ran: the thread counts the interrupted chunk as failed, the other two calls are cancelled.
            assert (ran.value, stats.completed, stats.failed, stats.cancelled) == (0, 0, 1, 2), stats
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    def _map_with_a_failure_struck(self, trace: Any, profile: Any) -> tuple[list[int], tuple[int, int, int]]:
        """Map three calls, the first of which raises, as one chunk run here, with ``trace`` and ``profile`` set."""
        from jobdispatch import Dispatcher

        d = Dispatcher({0: 1}, name="test-chunk-here")
        executor = d.executor(0)
        ran: list[int] = []

        def call(n: int) -> int:
            ran.append(n)
            if n == 0:
                raise ValueError(n)
            return n

        previous_trace, previous_profile = sys.gettrace(), sys.getprofile()  # coverage's, if any: put back after
        sys.settrace(trace)
        sys.setprofile(profile)
        try:
            with pytest.raises(KeyboardInterrupt):
                list(executor.map(call, range(3), chunksize=3))
        finally:
            sys.setprofile(previous_profile)
            sys.settrace(previous_trace)
        try:
            assert executor._pending.snapshot() == [], "the chunk's future was never settled"
            stats = d.stats(0)
            return ran, (stats.completed, stats.failed, stats.cancelled)
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    def test_a_second_ctrl_c_as_the_chunk_handles_the_first_leaves_no_call_uncounted(self, refused: None) -> None:
        """Ctrl-C between two calls, then again at a C call before the chunk counts its calls: every call counted."""
        from jobdispatch import _many

        code = _many.MappedChunk.__call__.__code__
        source, start = inspect.getsourcelines(code)
        handler = next(n for n, text in enumerate(source) if "except BaseException as error:" in text)
        counts_in = start + next(n for n in range(handler, len(source)) if "with pool._lock:" in source[n])
        first = _strike_in_mapped_chunk(
            "while index < count and not future.dropped", lambda f: f.f_locals["index"] == 1
        )
        struck_again: list[str] = []

        def again(frame: Any, event: str, arg: Any) -> None:
            # Once the first strike is in, CPython may deliver another Ctrl-C
            # as any C call returns: here, any before the counts are taken.
            if (
                event == "c_return"
                and frame.f_code is code
                and not struck_again
                and "error" in frame.f_locals
                and frame.f_lineno < counts_in
            ):
                struck_again.append(getattr(arg, "__name__", "?"))
                raise KeyboardInterrupt

        ran, counts = self._map_with_a_failure_struck(first, again)
        assert ran == [0]
        # The first call failed, the thread counts the chunk as failed for the call about to run, the last is cancelled.
        assert counts == (0, 2, 1), (counts, struck_again)

    def test_ctrl_c_as_a_failed_calls_value_is_kept_counts_no_call_below_zero(self, refused: None) -> None:
        """Ctrl-C as the chunk keeps the outcome of a call that raised: every call counted once, no count negative."""
        from jobdispatch import _many

        code = _many.MappedChunk.__call__.__code__
        struck: list[bool] = []

        def strike(frame: Any, event: str, arg: Any) -> None:
            if event == "c_return" and frame.f_code is code and getattr(arg, "__name__", "") == "append" and not struck:
                struck.append(True)
                raise KeyboardInterrupt

        ran, counts = self._map_with_a_failure_struck(None, strike)
        assert struck
        assert ran == [0]
        assert counts == (0, 2, 1), counts


class TestChunkRunHereInterrupted:
    """dispatch_many(chunksize=) into a pool that cannot start its thread: the thread runs each chunk itself."""

    @pytest.fixture
    def refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Refuse to start the threads of dispatchers named test-many-here."""
        refuse_thread_starts(monkeypatch, "test-many-here")

    def test_ctrl_c_between_two_jobs_counts_every_job_once(self, refused: None) -> None:
        """Ctrl-C as the second job of a chunk is about to start: the first completed, the others counted, none lost."""
        from jobdispatch import Dispatcher, _many

        d = Dispatcher({0: 1}, name="test-many-here")
        ran = Counter()
        tracer = _strike_at_line(_many.Chunk.__call__, "started = clock()", lambda f: f.f_locals["index"] == 1)
        previous = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                d.dispatch_many([ran, ran, ran], chunksize=3)
        finally:
            sys.settrace(previous)
        try:
            stats = d.stats(0)
            assert ran.value == 1
            # The job about to start counts as failed (the interrupted one), the last as cancelled.
            assert (stats.completed, stats.failed, stats.cancelled) == (1, 1, 1), stats
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    def test_ctrl_c_after_the_last_job_counts_every_job_once_and_none_below_zero(self, refused: None) -> None:
        """Ctrl-C as the chunk's loop jumps back after its last job: three jobs, three counts, none negative."""
        from jobdispatch import Dispatcher, _many

        d = Dispatcher({0: 1}, name="test-many-here")
        ran = Counter()
        tracer = _strike_at_line(
            _many.Chunk.__call__, "while index < count:", lambda f: f.f_locals["index"] == f.f_locals["count"]
        )
        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                d.dispatch_many([ran, ran, ran], chunksize=3)
        finally:
            sys.settrace(previous)
        try:
            stats = d.stats(0)
            assert ran.value == 3
            # The thread counts the interrupted chunk as failed: one of the three shows so.
            assert (stats.completed, stats.failed, stats.cancelled) == (2, 1, 0), stats
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    @pytest.mark.parametrize("at", ["entry", "return"])
    def test_ctrl_c_before_the_chunk_runs_a_job_counts_every_job_once(self, refused: None, at: str) -> None:
        """Ctrl-C as the chunk is entered, or as its first C call returns: its three jobs counted, none run."""
        from jobdispatch import Dispatcher, _many

        d = Dispatcher({0: 1}, name="test-many-here")
        ran = Counter()
        install, hook = _strike_as_entered_or_first_returns(_many.Chunk.__call__, at)
        previous_trace, previous_profile = sys.gettrace(), sys.getprofile()  # coverage's, if any: put back after
        install(hook)
        try:
            with pytest.raises(KeyboardInterrupt) as caught:
                d.dispatch_many([ran, ran, ran], chunksize=3)
        finally:
            sys.setprofile(previous_profile)
            sys.settrace(previous_trace)
        try:
            assert any("dispatch_many dispatched 3 jobs" in note for note in caught.value.__notes__)
            stats = d.stats(0)
            # The thread counts the interrupted chunk as failed; the two other jobs are cancelled.
            assert (ran.value, stats.completed, stats.failed, stats.cancelled) == (0, 0, 1, 2), stats
            assert d.wait(10)
        finally:
            d.finalize(cancel_pending=True, timeout=10)

    def test_ctrl_c_at_any_call_after_a_job_exits_counts_every_job_once(self, refused: None) -> None:
        """A job's SystemExit on the main thread, then Ctrl-C at any later call: three jobs, three counts."""
        from jobdispatch import Dispatcher
        from support import WAIT

        strike = 0
        while True:
            strike += 1
            assert strike < 100, "the chunk's thread never stops making calls"
            d = Dispatcher({0: 1}, name="test-many-here")
            ran = Counter()
            exited: list[bool] = []
            calls = 0

            def leave(exited: list[bool] = exited) -> None:
                exited.append(True)
                raise SystemExit(3)  # a signal handler's exit, as the main thread runs the job

            def tracer(frame: Any, event: str, arg: Any, strike: int = strike, exited: list[bool] = exited) -> None:
                nonlocal calls
                if event == "call" and exited and _injectable(frame):
                    calls += 1
                    if calls == strike:
                        raise KeyboardInterrupt

            previous = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(tracer)
            try:
                with pytest.raises((KeyboardInterrupt, SystemExit)):
                    d.dispatch_many([ran, leave, ran], chunksize=3)
            finally:
                sys.settrace(previous)
            try:
                stats = d.stats(0)
                counts = (stats.completed, stats.failed, stats.cancelled)
                assert ran.value == 1
                assert sum(counts) == 3, f"Ctrl-C at call {strike} after the exit: {counts}"
                assert min(counts) >= 0, f"Ctrl-C at call {strike} after the exit: {counts}"
                assert stats.completed == 1, f"Ctrl-C at call {strike} after the exit: {counts}"
                assert d.wait(WAIT)
            finally:
                d.finalize(cancel_pending=True, timeout=10)
            if calls < strike:  # the dispatch ended before this call: every call was struck
                break


class TestChunksRunHereStruckAtEveryReturn:
    """A chunk run by the dispatching thread, one of its jobs failing: Ctrl-C as each C call of the library returns."""

    @pytest.fixture
    def refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Refuse to start the threads of dispatchers named test-sweep-here."""
        refuse_thread_starts(monkeypatch, "test-sweep-here")

    @pytest.mark.parametrize("failing", [0, 1])
    @pytest.mark.parametrize("how", ["dispatch_many", "map"])
    def test_every_job_is_counted_once_and_no_future_is_left_running(
        self, refused: None, how: str, failing: int
    ) -> None:
        """Ctrl-C after any C call the library makes: a chunk run here is counted whole (three counts) or not at all."""
        from jobdispatch import Dispatcher
        from support import WAIT

        strike = 0
        while True:
            strike += 1
            assert strike < 500, "the chunk never stops making calls"
            d = Dispatcher({0: 1}, name="test-sweep-here")
            executor = d.executor(0)
            calls = 0
            where: list[str] = []
            ran = Counter()

            def fail(n: int = 0, ran: Counter = ran) -> None:
                ran()
                raise ValueError(n)

            def succeed(n: int = 0, ran: Counter = ran) -> int:
                ran()
                return n

            def profile(frame: Any, event: str, arg: Any, strike: int = strike, where: list[str] = where) -> None:
                nonlocal calls
                if event == "c_return" and "jobdispatch" in frame.f_code.co_filename and not where:
                    calls += 1
                    if calls == strike:
                        where.append(f"after {getattr(arg, '__qualname__', arg)} at line {frame.f_lineno}")
                        raise KeyboardInterrupt

            previous_trace, previous_profile = sys.gettrace(), sys.getprofile()  # coverage's, if any: put back after
            sys.setprofile(profile)
            try:
                with contextlib.suppress(KeyboardInterrupt, ValueError):
                    if how == "dispatch_many":
                        d.dispatch_many([fail if n == failing else succeed for n in range(3)], chunksize=3)
                    else:
                        list(executor.map(lambda n: fail(n) if n == failing else succeed(n), range(3), chunksize=3))
            finally:
                sys.setprofile(previous_profile)
                sys.settrace(previous_trace)
            try:
                stats = d.stats(0)
                counts = (stats.completed, stats.failed, stats.cancelled)
                # A chunk is dispatched whole or not at all (the call was struck before it was).
                assert sum(counts) == (3 if sum(counts) or ran.value else 0), f"Ctrl-C {where}: {counts}"
                assert min(counts) >= 0, f"Ctrl-C {where}: {counts}"
                assert executor._pending.snapshot() == [], f"Ctrl-C {where}: a future was left running"
                assert d.wait(WAIT)
            finally:
                d.finalize(cancel_pending=True, timeout=10)
            if not where:  # the call ended before this strike: every C call was struck
                break


class TestTimerWakeUp:
    def test_stale_waiter_left_by_an_interrupted_notify_does_not_keep_the_timer_asleep(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C inside Condition.notify can leave a stale waiter; stop() must still wake the timer."""
        from jobdispatch import Dispatcher, _scheduler
        from support import wait_for

        monkeypatch.setattr(_scheduler, "_STOP_RENOTIFY", 60.0)  # only the first wake-up counts here
        d = Dispatcher({0: 1}, name="test-stale")
        try:
            ran = threading.Event()
            d.dispatch_later(0, ran.set)
            assert ran.wait(10)
            condition = d._scheduler._condition
            waiters: Any = condition._waiters  # type: ignore[attr-defined]
            wait_for(lambda: len(waiters) == 1, "the timer to sleep on an empty heap")
            with d._scheduler._lock:
                stale = waiters[0]
                stale.release()  # what notify() had done when Ctrl-C struck: released, not yet removed
            wait_for(lambda: len(waiters) == 2, "the timer to wake up and sleep again")
            assert waiters[0] is stale
        finally:
            d.finalize(timeout=10)  # TimeoutError if stop() wakes the stale waiter instead of the timer


class TestStopCutShort:
    def test_finalize_after_a_stop_cut_short_gives_every_worker_its_sentinel(self) -> None:
        """A stop() that Ctrl-C ended after one sentinel of two is finished by the next finalize()."""
        from jobdispatch import Dispatcher

        d = Dispatcher({0: 2}, name="test-stop")
        both = threading.Barrier(3)
        d.dispatch(lambda: both.wait(10))
        d.dispatch(lambda: both.wait(10))
        both.wait(10)  # both workers run: both are counted in
        assert d.wait(10)
        pool = d._pools[0]
        with pool._lock:  # what stop() had done when Ctrl-C struck after its first sentinel
            pool._stopping = True
            pool._sentinels += 1
            pool._jobs.put(None)
        d.finalize(timeout=10)  # TimeoutError if the retried stop() adds no sentinel
        assert not [t for t in threading.enumerate() if t.name.startswith("test-stop-")]


class TestWorkerCount:
    """Ctrl-C can interrupt Thread.start() after the thread started: workers count themselves in."""

    def test_thread_beyond_the_limit_leaves_at_once(self) -> None:
        """A worker thread that finds the pool's workers all counted in exits and changes nothing."""
        from jobdispatch import Dispatcher, PoolConfig
        from jobdispatch._threads import _work

        ran = Counter()
        d = Dispatcher([PoolConfig(0, 1, 2)], name="test-extra")
        try:
            d.dispatch(ran)
            assert d.wait(10)
            pool = d._pools[0]
            extra = threading.Thread(target=_work, args=(pool,), name="test-extra-thread")
            extra.start()
            extra.join(10)
            assert not extra.is_alive()
            assert (pool._live, pool._sentinels) == (1, 0)
            for _ in range(3):
                d.dispatch(ran)
            assert d.wait(10)
            assert ran.value == 4
        finally:
            d.finalize(timeout=10)
        assert not [t for t in threading.enumerate() if t.name.startswith("test-extra")]

    def test_thread_counting_in_after_stop_brings_its_own_sentinel(self) -> None:
        """A worker whose start completes only after stop() still exits, and finalize joins it."""
        from jobdispatch import Dispatcher, PoolConfig
        from jobdispatch._threads import _work

        ran = Counter()
        d = Dispatcher([PoolConfig(0, 2, 0)], name="test-late")
        d.dispatch(ran)
        assert d.wait(10)
        pool = d._pools[0]
        threads = pool.stop()
        late = threading.Thread(target=_work, args=(pool,), name="test-late-thread")
        late.start()
        late.join(10)
        assert not late.is_alive()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        assert (pool._live, pool._sentinels) == (0, 0)
        d.finalize(timeout=10)

    def test_reservation_forgotten_after_interrupted_start_is_replaced(self) -> None:
        """A worker whose start() Ctrl-C struck first is counted out, and the next dispatch starts another."""
        from jobdispatch import Dispatcher, PoolConfig

        d = Dispatcher([PoolConfig(0, 2, 4)], name="test-again")
        gate, first = threading.Event(), threading.Event()
        started = threading.Barrier(3)
        try:
            d.dispatch(lambda: (first.set(), started.wait(10), gate.wait(10)))
            assert first.wait(10)  # the first worker runs, so it has counted itself in
            pool = d._pools[0]
            real_start = threading.Thread.start
            calls = 0

            def interrupted_start(thread: threading.Thread) -> None:
                nonlocal calls
                calls += 1
                raise KeyboardInterrupt

            threading.Thread.start = interrupted_start  # type: ignore[method-assign]
            try:
                with pytest.raises(KeyboardInterrupt):
                    d.dispatch(lambda: (started.wait(10), gate.wait(10)))
            finally:
                threading.Thread.start = real_start  # type: ignore[method-assign]
            assert calls == 1
            assert (pool._planned, pool._live) == (1, 1)
            d.dispatch(lambda: None)  # needs the second worker: the queued job is blocked behind the first
            started.wait(10)  # both gated jobs run at once: two workers
        finally:
            started.abort()
            gate.set()
            d.finalize(timeout=10)


class TestBatchDispatchInterrupted:
    """Ctrl-C can strike a batch dispatch after its job was queued: the job counts once, the exit returns."""

    def _interrupt_after_queueing(self, d: Any, monkeypatch: pytest.MonkeyPatch, then: Callable[[], None]) -> None:
        real_submit = d._submit

        def submit_then_interrupt(*args: Any) -> None:
            real_submit(*args)
            then()
            raise KeyboardInterrupt

        monkeypatch.setattr(d, "_submit", submit_then_interrupt)

    def test_job_that_ran_before_the_interrupt_counts_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The job ran and counted over before dispatch raised: the batch counts it done, once, and exits."""
        from jobdispatch import Dispatcher
        from support import wait_for

        ran = Counter()
        with Dispatcher({0: 1}, name="test-ran") as d:
            batch = d.batch()
            self._interrupt_after_queueing(d, monkeypatch, lambda: wait_for(lambda: batch.done == 1, "the job"))
            with pytest.raises(KeyboardInterrupt), batch:
                batch.dispatch(ran)
            assert (ran.value, batch.total, batch.done) == (1, 1, 1)
            assert d.stats()[0].completed == 1

    def test_job_still_queued_at_the_interrupt_is_cancelled(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The job was queued behind a busy worker: the batch forgets it and the pool counts it cancelled."""
        from jobdispatch import Dispatcher

        ran = Counter()
        gate, started = threading.Event(), threading.Event()
        with Dispatcher({0: 1}, name="test-queued") as d:
            d.dispatch(lambda: (started.set(), gate.wait(10)))
            assert started.wait(10)
            batch = d.batch()
            self._interrupt_after_queueing(d, monkeypatch, lambda: None)
            with pytest.raises(KeyboardInterrupt), batch:
                batch.dispatch(ran)
            gate.set()
            assert d.wait(10)
            assert (ran.value, batch.total, batch.done) == (0, 0, 0)
            stats = d.stats()[0]
            assert (stats.completed, stats.cancelled) == (1, 1)

    def test_interrupt_entering_withdraw_does_not_hang_a_normal_exit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Ctrl-C as a refused batch dispatch starts to withdraw its job: a batch left normally still ends."""
        from jobdispatch import Batch, Dispatcher, PoolConfig, PoolFull

        real_withdraw = Batch._withdraw
        calls = 0

        def withdraw_interrupted(batch: Any, call: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyboardInterrupt
            real_withdraw(batch, call)

        gate = threading.Event()
        with Dispatcher([PoolConfig(0, 1, 0)], name="test-withdraw") as d:
            d.dispatch(lambda: gate.wait(10), timeout=0)
            batch = d.batch()
            with batch:
                monkeypatch.setattr(Batch, "_withdraw", withdraw_interrupted)
                with pytest.raises(KeyboardInterrupt):
                    while True:  # the pool is full: each dispatch raises PoolFull and withdraws
                        with contextlib.suppress(PoolFull):
                            batch.dispatch(_tiny, timeout=0)
                gate.set()  # the user caught Ctrl-C and lets the block end normally
            assert (batch.total, batch.done) == (0, 0)

    def test_interrupt_before_an_inline_batch_job_is_counted_does_not_hang_the_batch(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A batch job run by the dispatching thread (no worker thread) and cut short by Ctrl-C counts once."""
        from jobdispatch import Batch, Dispatcher

        real_start = threading.Thread.start
        real_job_over = Batch._job_over

        def refuse(thread: threading.Thread) -> None:
            if thread.name.startswith("test-inline-p"):
                raise RuntimeError("can't start new thread")
            real_start(thread)

        def job_over_interrupted(batch: Any, call: object, *, cancelled: bool) -> None:
            monkeypatch.setattr(Batch, "_job_over", real_job_over)
            raise KeyboardInterrupt  # as Ctrl-C at the entry of _job_over

        monkeypatch.setattr(threading.Thread, "start", refuse)
        ran = Counter()
        with Dispatcher({0: 1}, name="test-inline") as d:
            batch = d.batch()
            with pytest.raises(KeyboardInterrupt), batch:
                monkeypatch.setattr(Batch, "_job_over", job_over_interrupted)
                batch.dispatch(ran)
            assert (ran.value, batch.total, batch.done) == (1, 1, 1)


def _sweep(op_name: str, mode: str, at: str = "calls") -> dict[str, Any]:
    args = ["sweep", op_name, mode, "all" if LONG else "first", at]
    result = subprocess.run(
        [sys.executable, HERE, *args], capture_output=True, text=True, timeout=1200 if LONG else 120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


SWEEP_CASES = [
    pytest.param(op, mode, id=f"{op}-{mode}")
    for op in (
        "dispatch",
        "dispatch_full",
        "dispatch_later",
        "batch",
        "wait",
        "finalize",
        "finalize_cancel",
        "map",
        "map_chunks",
        "dispatch_full_now",
        "dispatch_async_full",
        "many_listed",
        "dispatch_contended",
        "many_listed_full",
        "many_listed_mixed",
        "many_listed_in_job",
        "many_listed_no_thread",
        "run_full",
        "wait_async",
        "cancel_delayed",
        "async_batch",
        "async_with",
    )
    for mode in ("with", "exit", "continue")
]

# Just after a C call returns: the operations that take a pool's lock, queue
# jobs or wait for room, in the mode that checks that no place is lost.
SWEEP_RETURN_CASES = [
    pytest.param(op, id=op)
    for op in (
        "dispatch",
        "dispatch_full",
        "dispatch_full_now",
        "dispatch_async_full",
        "batch",
        "map_chunks",
        "many_listed",
        "dispatch_contended",
        "many_listed_full",
        "many_listed_mixed",
        "many_listed_in_job",
        "many_listed_no_thread",
        "dispatch_later",
        "cancel_delayed",
        "run_full",
        "wait_async",
        "async_batch",
        "async_with",
    )
]


class TestInterruptAnywhere:
    @pytest.mark.timeout(1300 if LONG else 150)
    @pytest.mark.parametrize(("op_name", "mode"), SWEEP_CASES)
    def test_dispatcher_recovers_from_interrupt_at_any_point(self, op_name: str, mode: str) -> None:
        """A KeyboardInterrupt at any function entry inside an operation leaves a dispatcher that recovers."""
        report = _sweep(op_name, mode)
        assert report["points"] >= 1 or report["failures"]
        assert not report["failures"], json.dumps(report["failures"], indent=1)

    @pytest.mark.timeout(1300 if LONG else 150)
    @pytest.mark.parametrize("op_name", SWEEP_RETURN_CASES)
    def test_dispatcher_recovers_from_interrupt_as_any_c_call_returns(self, op_name: str) -> None:
        """A KeyboardInterrupt just after any C call made by jobdispatch leaves a dispatcher that goes on."""
        report = _sweep(op_name, "continue", at="returns")
        assert report["points"] >= 1 or report["failures"]
        assert not report["failures"], json.dumps(report["failures"], indent=1)


if __name__ == "__main__":
    # A child started from a background job inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: install it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kind = sys.argv[1]
    if kind == "trial":
        _child_trial(sys.argv[2], sys.argv[3] == "term")
    elif kind == "block":
        _child_block(sys.argv[2])
    elif kind == "sweep":
        _child_sweep(sys.argv[2], sys.argv[3], sys.argv[4] == "first", sys.argv[5])
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
