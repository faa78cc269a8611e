"""The same scenarios against the standard library's ThreadPoolExecutor and jobdispatch's drop-in.

Every test runs twice (the ``kind`` fixture): with
``concurrent.futures.ThreadPoolExecutor``, which shows that the test states
what the standard library does, and with ``jobdispatch.ThreadPoolExecutor``,
which must do the same. Where the two differ on purpose
(docs/howto/from-threadpoolexecutor.md), the difference is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import logging
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest

import jobdispatch
from support import WAIT, gated, threads_named, wait_for

EXECUTORS: dict[str, type[cf.Executor]] = {
    "stdlib": cf.ThreadPoolExecutor,
    "jobdispatch": jobdispatch.ThreadPoolExecutor,
}
# Where each class is imported from, for the scripts run in a new interpreter.
IMPORTS = {
    "stdlib": "from concurrent.futures import ThreadPoolExecutor",
    "jobdispatch": "from jobdispatch import ThreadPoolExecutor",
}
PREFIX = "test-parity"  # thread names: the leak check of conftest.py covers both classes


class Harness:
    """The executors and gates of one test: gates open, then executors shut down, after it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.type = EXECUTORS[kind]
        self.executors: list[cf.Executor] = []
        self.gates: list[threading.Event] = []

    def executor(self, max_workers: int = 2, **kwargs: Any) -> Any:
        kwargs.setdefault("thread_name_prefix", PREFIX)
        executor = self.type(max_workers, **kwargs)
        self.executors.append(executor)
        return executor

    def gate(self) -> threading.Event:
        event = threading.Event()
        self.gates.append(event)
        return event


@pytest.fixture(params=sorted(EXECUTORS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(kind: str) -> Iterator[Harness]:
    h = Harness(kind)
    try:
        yield h
    finally:
        for gate in h.gates:
            gate.set()
        for executor in h.executors:
            executor.shutdown(wait=True, cancel_futures=True)


def run_child(kind: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter, with ``ThreadPoolExecutor`` imported from ``kind``'s module."""
    code = IMPORTS[kind] + "\n" + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=6 * WAIT, check=False)


class _Item:
    """An argument that can be watched for being freed."""


class TestSubmit:
    def test_keyword_arguments_named_fn_and_self_reach_the_call(self, harness: Harness) -> None:
        """submit passes keyword arguments called ``fn`` and ``self`` to the call, not to itself."""
        executor = harness.executor()
        assert executor.submit(dict, fn=1, self=2).result(WAIT) == {"fn": 1, "self": 2}

    def test_submit_after_shutdown_raises_runtime_error(self, harness: Harness) -> None:
        """submit after shutdown raises RuntimeError with the standard library's message."""
        executor = harness.executor()
        executor.shutdown()
        with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
            executor.submit(int)

    def test_submit_from_a_call_once_shutdown_began_raises(self, harness: Harness) -> None:
        """A call running as shutdown(wait=True) waits gets RuntimeError when it submits a follow-up."""
        executor = harness.executor(1)
        started, go_on = threading.Event(), harness.gate()

        def follow_up() -> str:
            started.set()
            assert go_on.wait(WAIT)
            try:
                executor.submit(int)
            except RuntimeError as error:
                return str(error)
            return "accepted"

        future = executor.submit(follow_up)
        assert started.wait(WAIT)
        closer = threading.Thread(target=executor.shutdown)
        closer.start()
        wait_for(lambda: _refuses(executor), "shutdown to begin")
        go_on.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert future.result(WAIT) == "cannot schedule new futures after shutdown"

    def test_running_call_cannot_be_cancelled(self, harness: Harness) -> None:
        """cancel() of a running call returns False, and the call's result still comes."""
        executor = harness.executor(1)
        started, gate = threading.Event(), harness.gate()
        future = executor.submit(lambda: (started.set(), gate.wait(WAIT))[1])
        assert started.wait(WAIT)
        assert not future.cancel()
        with pytest.raises(TimeoutError):
            future.result(timeout=0)
        gate.set()
        assert future.result(WAIT) is True

    def test_exception_in_a_done_callback_is_logged_not_raised(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A done callback that raises is logged on the concurrent.futures logger; the future is unharmed."""
        executor = harness.executor(1)
        seen = threading.Event()

        def callback(future: cf.Future[Any]) -> None:
            seen.set()
            raise ZeroDivisionError

        with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
            future = executor.submit(int, 7)
            future.add_done_callback(callback)
            assert seen.wait(WAIT)
            assert future.result(WAIT) == 7
            executor.shutdown()
        assert any(r.name == "concurrent.futures" and r.exc_info for r in caplog.records)

    def test_nested_call_waited_for_by_a_call_runs_on_another_thread(self, harness: Harness) -> None:
        """A call may submit to its own executor and wait for the result while a thread is free."""
        executor = harness.executor(2)
        assert executor.submit(lambda: executor.submit(pow, 2, 5).result(WAIT) + 1).result(WAIT) == 33

    def test_calls_that_submit_themselves_again_stop_at_shutdown(self, harness: Harness) -> None:
        """A chain of calls that each submit the next ends at shutdown: the next submit is refused."""
        executor = harness.executor(1)
        futures: list[cf.Future[Any]] = []

        def again() -> None:
            futures.append(executor.submit(again))

        futures.append(executor.submit(again))  # may come after some the chain appended
        wait_for(lambda: len(futures) > 10, "the chain to run")
        executor.shutdown()
        errors = [f.exception(WAIT) for f in list(futures)]
        refused = [error for error in errors if error is not None]
        assert len(refused) == 1  # the call that found the executor shut down
        assert isinstance(refused[0], RuntimeError)


def _refuses(executor: Any) -> bool:
    """Whether ``executor`` refuses a new call (a call it takes runs later)."""
    try:
        executor.submit(int)
    except RuntimeError:
        return True
    return False


class TestSubclass:
    def test_map_submits_through_a_subclass_submit(self, harness: Harness) -> None:
        """map makes each call through the submit of a subclass that overrides it."""
        seen: list[tuple[Any, ...]] = []

        base: Any = harness.type

        class Recording(base):  # type: ignore[misc]
            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
                seen.append(args)
                return super().submit(fn, *args, **kwargs)

        executor = Recording(2, thread_name_prefix=PREFIX)
        harness.executors.append(executor)
        assert list(executor.map(pow, [2, 3, 4], [2, 2, 2])) == [4, 9, 16]
        assert list(executor.map(abs, [-1, -2, -3], chunksize=2)) == [1, 2, 3]
        assert seen == [(2, 2), (3, 2), (4, 2), (-1,), (-2,), (-3,)]


class TestMap:
    def test_iterables_of_unequal_length_are_zipped_to_the_shortest(self, harness: Harness) -> None:
        """map stops at the end of its shortest iterable."""
        assert list(harness.executor().map(divmod, [7, 8, 9], [2, 3])) == [(3, 1), (2, 2)]

    def test_map_of_no_iterable_yields_nothing(self, harness: Harness) -> None:
        """map with a function and no iterable yields nothing."""
        assert list(harness.executor().map(abs)) == []

    def test_iterator_closed_before_its_first_result_leaves_the_calls_to_run(self, harness: Harness) -> None:
        """The calls of a map run even if its iterator is closed before it was read."""
        executor = harness.executor(1)
        ran: list[int] = []
        results = executor.map(ran.append, range(5))
        results.close()
        executor.shutdown()
        assert ran == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize("timeout", [0, -1, -0.5], ids=["zero", "minus-one", "minus-half"])
    def test_a_timeout_that_has_run_out_raises_at_the_first_result_not_ready(
        self, harness: Harness, timeout: float
    ) -> None:
        """With a timeout of 0 or less, results ready come, the first one not ready raises, the rest never run."""
        executor = harness.executor(1)
        started, gate = threading.Event(), harness.gate()
        ran: list[int] = []

        def call(n: int) -> int:
            if n == 2:
                started.set()
                assert gate.wait(3 * WAIT)
            ran.append(n)
            return n

        results = executor.map(call, range(4), timeout=timeout)
        assert started.wait(WAIT)  # calls 0 and 1 are over: one thread takes them in order
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(TimeoutError):
            next(results)
        gate.set()
        executor.shutdown()
        assert ran == [0, 1, 2]


class TestReferences:
    @pytest.mark.parametrize("how", ["submit", "map", "map-chunks"])
    def test_arguments_of_a_failed_call_are_freed_once_it_is_over(self, harness: Harness, how: str) -> None:
        """The exception of a call that failed keeps no reference to the call's arguments."""
        executor = harness.executor(1)
        item = _Item()
        ref = weakref.ref(item)
        gc.disable()
        try:
            if how == "submit":
                future = executor.submit(divmod, item, 0)
                del item
                error = future.exception(WAIT)
            else:
                results = executor.map(divmod, [item, 1], [0, 1], chunksize=1 if how == "map" else 2)
                del item
                with pytest.raises(TypeError) as info:
                    next(results)
                error = info.value
            assert isinstance(error, TypeError)
            wait_for(lambda: ref() is None, "the argument of the failed call to be freed")
            assert error.__traceback__ is not None  # the exception, with its traceback, is still held
        finally:
            gc.enable()

    def test_executor_dropped_without_shutdown_still_runs_its_calls(self, harness: Harness) -> None:
        """An executor collected without shutdown runs the calls it had, and its threads exit."""
        executor = harness.type(2, thread_name_prefix=f"{PREFIX}-dropped")
        gate = threading.Event()
        futures = [executor.submit(gate.wait, WAIT) for _ in range(4)]
        ref = weakref.ref(executor)
        del executor
        gc.collect()
        gate.set()
        assert ref() is None
        assert [f.result(WAIT) for f in futures] == [True] * 4
        for thread in threads_named(f"{PREFIX}-dropped"):
            thread.join(WAIT)
            assert not thread.is_alive()


class TestShutdown:
    def test_cancel_futures_cancels_the_queued_calls_and_waits_for_the_running_one(self, harness: Harness) -> None:
        """shutdown(cancel_futures=True) cancels what waits, and the running call still completes."""
        executor = harness.executor(1)
        started, gate = threading.Event(), harness.gate()
        running = executor.submit(gated(gate, started))
        assert started.wait(WAIT)
        queued = [executor.submit(int, n) for n in range(5)]
        cancelled: list[cf.Future[Any]] = []

        def open_when_all_cancelled(future: cf.Future[Any]) -> None:
            cancelled.append(future)
            if len(cancelled) == len(queued):
                gate.set()  # only then may the running call end

        for future in queued:
            future.add_done_callback(open_when_all_cancelled)
        executor.shutdown(cancel_futures=True)
        assert running.done()
        assert running.result() is None
        assert all(f.cancelled() for f in queued)

    def test_context_manager_left_on_an_exception_waits_for_the_calls(self, harness: Harness) -> None:
        """Leaving ``with`` on an exception waits for the calls, which all run, and lets the exception go on."""
        executor = harness.executor(1)
        ran: list[int] = []
        with pytest.raises(KeyError), executor:
            for n in range(5):
                executor.submit(ran.append, n)
            raise KeyError("left")
        assert ran == [0, 1, 2, 3, 4]

    def test_max_workers_must_be_greater_than_zero(self, kind: str) -> None:
        """max_workers of 0 or less raises ValueError with the standard library's message."""
        for workers in (0, -1):
            with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
                EXECUTORS[kind](workers)


class TestBroken:
    def test_failed_initializer_breaks_the_pool_for_pending_and_later_calls(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failing initializer settles the calls submitted with BrokenThreadPool; later submits raise it."""

        submitted = harness.gate()

        def initializer() -> None:
            assert submitted.wait(WAIT)
            raise ValueError("no setup")

        with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
            executor = harness.executor(1, initializer=initializer)
            futures = [executor.submit(int, n) for n in range(3)]
            submitted.set()
            for future in futures:
                with pytest.raises(BrokenThreadPool):
                    future.result(WAIT)
            with pytest.raises(BrokenThreadPool):
                executor.submit(int)
        assert executor._broken


class TestThreadSet:
    def test_private_thread_set_holds_the_threads_started(self, harness: Harness) -> None:
        """``_threads``, which some code reads, holds the threads started, at most max_workers, then all joinable."""
        if harness.kind == "stdlib" and not getattr(sys, "_is_gil_enabled", lambda: True)():
            # Seen here about once in a thousand runs: with all its threads
            # busy and fewer than max_workers, it started none for the call.
            pytest.skip("without the GIL, the standard library's executor at times starts no thread for a call")
        executor = harness.executor(3)
        assert executor.submit(int).result(WAIT) == 0
        gate = harness.gate()
        futures = []
        for _ in range(3):  # one at a time: each call finds every thread busy, so each starts one
            started = threading.Event()
            futures.append(executor.submit(gated(gate, started)))
            assert started.wait(WAIT)
        threads = executor._threads
        assert len(threads) == 3
        assert all(isinstance(thread, threading.Thread) and thread.name.startswith(PREFIX) for thread in threads)
        gate.set()
        assert [f.result(WAIT) for f in futures] == [None] * 3
        executor.shutdown()
        for thread in executor._threads:
            thread.join(WAIT)
            assert not thread.is_alive()


class TestThreadsACallStarts:
    def test_a_call_runs_on_a_thread_that_its_own_threads_see_as_no_daemon(self, harness: Harness) -> None:
        """A thread that a call creates is no daemon by default, as the call's own thread says it is none."""
        executor = harness.executor(1)

        def look() -> tuple[bool, bool]:
            return threading.current_thread().daemon, threading.Thread(target=int).daemon

        assert executor.submit(look).result(WAIT) == (False, False)

    def test_a_thread_a_call_started_is_waited_for_at_exit(self, kind: str) -> None:
        """The interpreter waits at exit for a thread that a call started and left running."""
        child = run_child(
            kind,
            """
            import threading

            def background():
                threading.main_thread().join()  # works on once the main thread is over
                for n in range(1000):
                    print(n, flush=True)

            with ThreadPoolExecutor(1) as executor:
                executor.submit(lambda: threading.Thread(target=background).start()).result()
            """,
        )
        assert (child.returncode, child.stderr) == (0, "")
        assert child.stdout.split() == [str(n) for n in range(1000)]


class TestWithOthers:
    def test_wait_and_as_completed_take_futures_of_both_classes(self, harness: Harness) -> None:
        """concurrent.futures.wait and as_completed work on our futures mixed with the standard library's."""
        with cf.ThreadPoolExecutor(1) as other:
            futures = [harness.executor().submit(int, 1), other.submit(int, 2)]
            done, not_done = cf.wait(futures, timeout=WAIT)
            assert (len(done), not_done) == (2, set())
            assert sorted(f.result() for f in cf.as_completed(futures, timeout=WAIT)) == [1, 2]

    def test_run_in_executor_runs_the_call(self, harness: Harness) -> None:
        """asyncio's loop.run_in_executor runs a call on the executor."""
        executor = harness.executor()

        async def main() -> object:
            return await asyncio.get_running_loop().run_in_executor(executor, pow, 2, 5)

        assert asyncio.run(main()) == 32


class TestInterpreterExit:
    def test_calls_of_an_executor_dropped_without_shutdown_run_before_exit(self, kind: str) -> None:
        """An executor collected without shutdown runs its queued calls before the interpreter exits."""
        child = run_child(
            kind,
            """
            import threading

            gate = threading.Event()
            executor = ThreadPoolExecutor(1)
            executor.submit(gate.wait)
            for n in range(1000):
                executor.submit(print, n, flush=True)
            del executor
            gate.set()  # the calls start as the interpreter exits
            """,
        )
        assert (child.returncode, child.stderr) == (0, "")
        assert child.stdout.split() == [str(n) for n in range(1000)]

    def test_shutdown_without_wait_cancelling_the_queued_calls_exits(self, kind: str) -> None:
        """shutdown(wait=False, cancel_futures=True) lets the interpreter exit; the running call completes."""
        child = run_child(
            kind,
            """
            import threading

            started = threading.Event()
            gate = threading.Event()

            def first():
                started.set()
                gate.wait()
                print("first", flush=True)

            executor = ThreadPoolExecutor(1)
            executor.submit(first)
            started.wait()
            executor.submit(print, "queued", flush=True)
            executor.shutdown(wait=False, cancel_futures=True)
            gate.set()
            """,
        )
        assert (child.returncode, child.stdout, child.stderr) == (0, "first\n", "")
