"""Lifetime: dispatchers dropped without finalize, interpreter exit, and os.fork()."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import pytest

from jobdispatch import Dispatcher, PoolConfig

WAIT = 10.0  # seconds to wait for a state that should come at once; the test fails after that
CHILD_TIMEOUT = 30.0  # a child process that runs longer than this is hung

_names = itertools.count()


def unique(prefix: str) -> str:
    """A dispatcher name no other test uses, so its threads can be found by name."""
    return f"test-{prefix}-{next(_names)}"


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def join_named(prefix: str) -> list[str]:
    """Join every thread whose name starts with ``prefix``; return the names of those still alive."""
    for thread in threads_named(prefix):
        thread.join(WAIT)
    return [t.name for t in threads_named(prefix)]


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter; fail (not hang) if it does not end within CHILD_TIMEOUT."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


class Recorder:
    """A job factory whose jobs record their number, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ran: list[int] = []

    def job(self, n: int) -> object:
        def run() -> None:
            with self._lock:
                self.ran.append(n)

        return run


class TestDroppedWithoutFinalize:
    def test_collected_dispatcher_runs_queued_jobs_then_stops_threads(self) -> None:
        """A dispatcher dropped without finalize runs its queued jobs, then its threads exit."""
        name = unique("life-drop")
        d = Dispatcher([PoolConfig(0, 2, 100), PoolConfig(1, 1, 100)], name=name)
        gate = threading.Event()
        started = threading.Event()

        def hold() -> None:
            started.set()
            gate.wait(WAIT)

        recorder = Recorder()
        d.dispatch(hold, priority=1)
        for n in range(50):
            d.dispatch(recorder.job(n), priority=n % 2)
        assert started.wait(WAIT)
        assert len(threads_named(f"{name}-")) == 3
        del d
        gc.collect()
        gate.set()  # the queued jobs behind `hold` may now run
        assert join_named(f"{name}-") == []
        assert sorted(recorder.ran) == list(range(50))

    def test_exit_hook_waits_for_the_queued_jobs_of_a_collected_dispatcher(self) -> None:
        """The interpreter-exit hook returns only once a dispatcher collected without finalize ran its queued jobs."""
        from jobdispatch._dispatcher import _finalize_live_dispatchers  # the hook atexit runs

        name = unique("life-drop-exit")
        d = Dispatcher(1, name=name)
        gate = threading.Event()
        recorder = Recorder()
        d.dispatch(lambda: gate.wait(WAIT))
        for n in range(3):
            d.dispatch(recorder.job(n))
        collected = weakref.ref(d)
        del d
        gc.collect()
        assert collected() is None
        seen: list[list[int]] = []
        hook = threading.Thread(target=lambda: (_finalize_live_dispatchers(), seen.append(list(recorder.ran))))
        hook.start()
        hook.join(0.2)  # time for a hook that does not wait to return: it would see no job run
        gate.set()
        hook.join(WAIT)
        assert seen == [[0, 1, 2]]
        assert join_named(f"{name}-") == []

    def test_collected_dispatcher_cancels_delayed_jobs_with_a_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        """Delayed jobs of a collected dispatcher are cancelled (never run) and a warning says how many."""
        caplog.set_level(logging.WARNING, logger="jobdispatch")
        name = unique("life-drop-late")
        d = Dispatcher({0: 1}, name=name)
        recorder = Recorder()
        for n in range(3):
            d.dispatch_later(60, recorder.job(n))
        d.dispatch(recorder.job(99))
        assert threads_named(f"{name}-timer")
        del d
        gc.collect()
        assert join_named(f"{name}-") == []
        assert recorder.ran == [99]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("3 delayed jobs cancelled" in m for m in warnings), warnings

    def test_many_dropped_dispatchers_leave_no_thread(self) -> None:
        """Creating and dropping dispatchers in a loop (used or not) leaves no thread behind."""
        prefix = unique("life-many")
        for i in range(30):
            d = Dispatcher({0: 2, 1: 1}, name=f"{prefix}-{i}")
            if i % 3:
                d.dispatch(lambda: None, priority=i % 2)
            if i % 5 == 0:
                d.dispatch_later(0, lambda: None, priority=0)
            del d
        gc.collect()
        assert join_named(f"{prefix}-") == []

    def test_dropped_dispatcher_with_batch_reference_stays_alive(self) -> None:
        """A dispatcher still referenced by an open batch is not collected: the batch still works."""
        name = unique("life-batch")
        batch = Dispatcher(1, name=name).batch()
        gc.collect()
        recorder = Recorder()
        with batch as b:
            b.dispatch(recorder.job(1))
        assert recorder.ran == [1]
        del batch, b
        gc.collect()
        assert join_named(f"{name}-") == []


EXIT_SCRIPT = """
    import sys, threading
    from jobdispatch import Dispatcher, PoolConfig

    out = open(sys.argv[1], "a", buffering=1)
    gate = threading.Event()
    d = Dispatcher([PoolConfig(0, 2, 500), PoolConfig(1, 1, 500)], name="exiting")
    # The first job of each pool holds its worker a little, so the rest is still
    # queued when the main thread ends.
    d.dispatch(lambda: gate.wait(0.2), priority=0)
    d.dispatch(lambda: gate.wait(0.2), priority=1)
    for n in range(300):
        d.dispatch(lambda n=n: out.write(f"job {n}\\n"), priority=n % 2)
    d.dispatch_later(60, lambda: out.write("delayed job ran\\n"), priority=0)
    d.dispatch_later(60, lambda: out.write("delayed job ran\\n"), priority=1)
    print("main done", flush=True)
    {ending}
"""


class TestInterpreterExit:
    @pytest.mark.parametrize(
        "ending",
        ["pass", "sys.exit(3)", "raise SystemExit(3)", "raise RuntimeError('main failed')"],
        ids=["falls-off", "sys-exit", "system-exit", "uncaught-error"],
    )
    def test_queued_jobs_run_and_delayed_ones_are_reported(self, tmp_path: Path, ending: str) -> None:
        """At exit an un-finalized dispatcher runs every queued job, cancels delayed ones with a warning, exits."""
        out = tmp_path / "out.txt"
        result = run_child(EXIT_SCRIPT.replace("{ending}", ending), str(out))
        expected_code = {"pass": 0, "sys.exit(3)": 3, "raise SystemExit(3)": 3}.get(ending, 1)
        assert result.returncode == expected_code, result.stderr
        assert result.stdout == "main done\n"
        lines = out.read_text().splitlines()
        assert sorted(lines) == sorted(f"job {n}" for n in range(300))
        assert "delayed job ran" not in lines
        assert "interpreter exit: cancelling 2 delayed jobs of dispatcher 'exiting' that was not finalized" in (
            result.stderr
        )

    def test_a_thread_a_job_started_is_waited_for_at_exit(self, tmp_path: Path) -> None:
        """The interpreter waits at exit for a thread that a job started (no daemon, like one started elsewhere)."""
        out = tmp_path / "out.txt"
        script = """
            import sys, threading
            from jobdispatch import Dispatcher

            out = open(sys.argv[1], "a", buffering=1)

            def background():
                threading.main_thread().join()  # works on once the main thread is over
                for n in range(1000):
                    out.write(f"{n}\\n")

            with Dispatcher(1, name="starts-a-thread") as d:
                d.dispatch(lambda: threading.Thread(target=background).start())
            """
        result = run_child(script, str(out))
        assert (result.returncode, result.stderr) == (0, "")
        assert out.read_text().split() == [str(n) for n in range(1000)]

    def test_exit_with_several_open_dispatchers(self, tmp_path: Path) -> None:
        """Several independent un-finalized dispatchers all drain their queued jobs at exit."""
        out = tmp_path / "out.txt"
        script = """
            import sys
            from jobdispatch import Dispatcher

            out = open(sys.argv[1], "a", buffering=1)
            dispatchers = [Dispatcher({0: 1, 1: 2}, name=f"d{i}") for i in range(4)]
            for i, d in enumerate(dispatchers):
                for n in range(50):
                    d.dispatch(lambda i=i, n=n: out.write(f"{i} {n}\\n"), priority=n % 2)
            """
        result = run_child(script, str(out))
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        lines = out.read_text().splitlines()
        assert sorted(lines) == sorted(f"{i} {n}" for i in range(4) for n in range(50))

    def test_exit_with_dispatchers_feeding_each_other(self, tmp_path: Path) -> None:
        """Jobs that dispatch into another open dispatcher (and back) all run when the interpreter exits."""
        out = tmp_path / "out.txt"
        script = """
            import sys
            from jobdispatch import Dispatcher

            out = open(sys.argv[1], "a", buffering=1)
            a = Dispatcher({0: 2}, name="a")
            b = Dispatcher({0: 1}, name="b")

            def first(n):
                out.write(f"a {n}\\n")
                b.dispatch(lambda: second(n))

            def second(n):
                out.write(f"b {n}\\n")
                a.dispatch(lambda: out.write(f"c {n}\\n"))

            for n in range(50):
                a.dispatch(lambda n=n: first(n))
            """
        result = run_child(script, str(out))
        assert result.returncode == 0, result.stderr
        assert "DispatcherClosed" not in result.stderr
        lines = out.read_text().splitlines()
        assert sorted(lines) == sorted(f"{s} {n}" for s in "abc" for n in range(50))


FORK_SCRIPT = """
    import os, sys, threading
    from jobdispatch import Dispatcher, DispatcherClosed

    d = Dispatcher({0: 1, 1: 2}, name="parent")
    gate = threading.Event()
    started = threading.Event()
    d.dispatch(lambda: (started.set(), gate.wait(10)), priority=0)
    for _ in range(5):
        d.dispatch(lambda: None, priority=0)  # queued behind the gated job
    d.dispatch_later(60, lambda: None, priority=1)
    started.wait(10)

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for attempt in (
                lambda: d.dispatch(lambda: None, priority=1),
                lambda: d.dispatch_later(0, lambda: None, priority=1),
                lambda: d.batch(),
            ):
                try:
                    attempt()
                except DispatcherClosed:
                    pass
                else:
                    print("inherited dispatcher accepted work", flush=True)
                    code = 2
            assert d.closed
            repr(d)
            d.stats()
            d.finalize(timeout=1)  # returns at once: nothing of it runs in the child
            ran = []
            with Dispatcher({0: 2, 1: 1}, name="child") as fresh:
                for n in range(20):
                    fresh.dispatch(lambda n=n: ran.append(n), priority=n % 2)
                fresh.dispatch_later(0, lambda: ran.append(-1), priority=1)
                assert fresh.wait(10)
            if sorted(ran) != [-1, *range(20)]:
                print("fresh dispatcher lost jobs", sorted(ran), flush=True)
                code = 3
            if [t.name for t in threading.enumerate() if t.name.startswith("child-")]:
                print("fresh dispatcher left threads", flush=True)
                code = 4
        except BaseException as error:
            print("child failed:", repr(error), flush=True)
            code = 5
        sys.stdout.flush()
        os._exit(code)

    _, status = os.waitpid(pid, 0)
    gate.set()
    d.finalize(timeout=10, cancel_pending=True)  # cancels the delayed job, and maybe some queued ones
    print("child exit code", os.waitstatus_to_exitcode(status))
    s0, s1 = d.stats(0), d.stats(1)
    print("parent accounted", s0.completed + s0.cancelled, s1.completed + s1.cancelled, s1.cancelled)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
class TestFork:
    def test_child_refuses_inherited_and_uses_new_dispatcher(self) -> None:
        """After fork, the child's inherited dispatcher refuses work; a new one runs every job; parent unaffected."""
        result = run_child(FORK_SCRIPT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["child exit code 0", "parent accounted 6 1 1"], result.stdout

    def test_child_exits_normally_with_atexit_hook(self) -> None:
        """A forked child that exits normally (atexit hooks run) does not hang on the inherited dispatcher."""
        script = """
            import os, sys, threading
            from jobdispatch import Dispatcher

            d = Dispatcher({0: 1}, name="parent")
            gate = threading.Event()
            started = threading.Event()
            d.dispatch(lambda: (started.set(), gate.wait(10)))
            d.dispatch(lambda: None)
            d.dispatch_later(60, lambda: None)
            started.wait(10)
            pid = os.fork()
            if pid == 0:
                fresh = Dispatcher(1, name="child")
                fresh.dispatch(lambda: print("child job ran", flush=True))
                sys.exit(7)  # atexit: finalizes `fresh`, must ignore the inherited `d`
            _, status = os.waitpid(pid, 0)
            gate.set()
            d.finalize(timeout=10, cancel_pending=True)
            print("child exit code", os.waitstatus_to_exitcode(status))
            """
        result = run_child(script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["child job ran", "child exit code 7"]

    def test_child_wait_on_inherited_dispatcher_returns(self) -> None:
        """In a forked child, wait() on the inherited dispatcher raises DispatcherClosed or returns at once."""
        script = """
            import os, sys, threading
            from jobdispatch import Dispatcher, DispatcherClosed

            d = Dispatcher({0: 1}, name="parent")
            gate = threading.Event()
            started = threading.Event()
            d.dispatch(lambda: (started.set(), gate.wait(10)))
            d.dispatch(lambda: None)
            started.wait(10)
            pid = os.fork()
            if pid == 0:
                outcome = []

                def wait():
                    try:
                        outcome.append(d.wait())
                    except DispatcherClosed:
                        outcome.append("closed")

                waiter = threading.Thread(target=wait, daemon=True)
                waiter.start()
                waiter.join(2)
                print("child wait:", outcome or "blocked", flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
            gate.set()
            d.finalize(timeout=10)
            """
        result = run_child(script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() in ("child wait: ['closed']", "child wait: [True]")
