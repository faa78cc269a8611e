"""Shutdown: finalize, the context manager, and the threads left (or not) behind."""

from __future__ import annotations

import gc
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, DispatcherError, PoolConfig
from support import LONG, WAIT, Counter, Kit, gated, threads_named, wait_for


class TestFinalize:
    def test_waits_for_every_job(self) -> None:
        """finalize() returns once every dispatched job, queued or delayed, has run."""
        d = Dispatcher({0: 2, 1: 1})
        counter = Counter()
        for _ in range(50):
            d.dispatch(counter, priority=0)
            d.dispatch(counter, priority=1)
        d.dispatch_later(0.02, counter, priority=1)
        d.finalize()
        assert counter.value == 101
        assert d.closed

    def test_joins_every_thread(self) -> None:
        """After finalize() no worker or timer thread of the dispatcher is left."""
        d = Dispatcher({0: 3, 1: 2}, name="test-join")
        gate = threading.Event()
        for _ in range(3):
            d.dispatch(gated(gate), priority=0)
        d.dispatch(lambda: None, priority=1)
        d.dispatch_later(0, lambda: None, priority=1)
        threads = threads_named("test-join-")
        assert {t.name for t in threads} >= {"test-join-p0-1", "test-join-p0-2", "test-join-p0-3", "test-join-timer"}
        gate.set()
        d.finalize()
        assert not any(t.is_alive() for t in threads)
        assert threads_named("test-join-") == []

    def test_idempotent(self) -> None:
        """finalize() may be called again, with any arguments, and does nothing more."""
        d = Dispatcher(1)
        d.dispatch(lambda: None)
        d.finalize()
        d.finalize()
        d.finalize(cancel_pending=True, timeout=0)
        assert d.closed
        assert d.stats(0).completed == 1

    def test_finalize_unused_dispatcher(self) -> None:
        """A dispatcher that never ran a job finalizes at once."""
        d = Dispatcher({0: 1000, 1: 1})
        d.finalize(timeout=WAIT)
        assert d.closed

    def test_refuses_work_after(self) -> None:
        """After finalize, dispatch, dispatch_later and batch raise DispatcherClosed (a RuntimeError)."""
        d = Dispatcher({0: 1, 1: 1})
        d.finalize()
        message = r"^cannot dispatch after finalize\(\) was called$"
        with pytest.raises(DispatcherClosed, match=message):
            d.dispatch(lambda: None, priority=0)
        with pytest.raises(DispatcherClosed, match=message):
            d.dispatch_later(1, lambda: None, priority=1)
        with pytest.raises(RuntimeError, match=r"^cannot start a batch after finalize\(\) was called$"):
            d.batch()
        assert isinstance(DispatcherClosed("x"), DispatcherError)

    def test_closed_property(self, kit: Kit) -> None:
        """closed is False until finalize begins, True from then on, even if finalize times out."""
        d = kit.dispatcher(1)
        gate = kit.gate()
        assert d.closed is False
        d.dispatch(gated(gate))
        with pytest.raises(TimeoutError):
            d.finalize(timeout=0.01)
        assert d.closed is True
        gate.set()
        d.finalize()
        assert d.closed is True

    def test_cancel_pending_counts_queued_and_delayed(self, kit: Kit) -> None:
        """finalize(cancel_pending=True) drops queued and delayed jobs, counting them; the running one ends."""
        d = kit.dispatcher({0: 1, 1: 1})
        gate = kit.gate()
        started = threading.Event()
        dropped = Counter()
        d.dispatch(gated(gate, started), priority=0)
        d.dispatch(dropped, priority=0)
        d.dispatch(dropped, priority=0)
        d.dispatch_later(LONG, dropped, priority=0)
        d.dispatch_later(LONG, dropped, priority=1)
        assert started.wait(WAIT)
        with pytest.raises(TimeoutError, match=r"^jobs were still running after 0\.05 s$"):
            d.finalize(cancel_pending=True, timeout=0.05)
        stats = d.stats(0)
        assert (stats.cancelled, stats.queued, stats.delayed, stats.busy) == (3, 0, 0, 1)
        assert (d.stats(1).cancelled, d.stats(1).delayed) == (1, 0)
        gate.set()
        d.finalize()
        assert dropped.value == 0
        assert (d.stats(0).completed, d.stats(0).cancelled) == (1, 3)

    def test_timeout_then_finish(self, kit: Kit) -> None:
        """finalize(timeout) raises TimeoutError while a job runs; called again after, it finishes."""
        d = kit.dispatcher(1, name="test-fto")
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        before = time.monotonic()
        with pytest.raises(TimeoutError, match=r"^jobs were still running after 0\.05 s$"):
            d.finalize(timeout=0.05)
        assert time.monotonic() - before >= 0.045
        assert repr(d) == "<Dispatcher 'test-fto' draining, 1 pool: p0 1/1 busy>"
        with pytest.raises(DispatcherClosed):
            d.dispatch(lambda: None)
        gate.set()
        d.finalize(timeout=WAIT)
        assert repr(d) == "<Dispatcher 'test-fto' closed, 1 pool: p0 0/1 busy>"
        assert threads_named("test-fto-") == []

    def test_zero_timeout_while_threads_exit(self) -> None:
        """finalize(timeout=0) with threads still exiting raises TimeoutError naming one; a second call ends."""
        for n in range(10):
            d = Dispatcher({0: 2}, name="test-fz")
            d.dispatch(lambda: None)
            if n % 2:
                d.dispatch_later(0, lambda: None)
            assert d.wait(WAIT)
            try:
                d.finalize(timeout=0)
            except TimeoutError as error:
                message = str(error)
                assert message in {
                    "the timer thread was still running after 0.0 s",
                    "thread test-fz-p0-1 was still running after 0.0 s",
                }, message
            d.finalize(cancel_pending=True)
            assert d.stats(0).cancelled == 0
            assert threads_named("test-fz-") == []

    def test_infinite_timeout(self, kit: Kit) -> None:
        """finalize(timeout=math.inf) waits for the jobs like timeout=None."""
        d = kit.dispatcher(1)
        gate = kit.gate()
        d.dispatch(gated(gate))
        errors: list[BaseException] = []

        def finish() -> None:
            try:
                d.finalize(timeout=math.inf)
            except BaseException as error:
                errors.append(error)

        finisher = threading.Thread(target=finish, name="test-finisher")
        finisher.start()
        finisher.join(0.05)
        gate.set()
        finisher.join(WAIT)
        assert not finisher.is_alive()
        assert errors == []
        assert d.stats(0).completed == 1

    def test_releases_blocked_producer(self, kit: Kit) -> None:
        """A producer blocked on a full pool gets DispatcherClosed when finalize begins; its job never runs."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        d.dispatch(gated(gate))
        about_to = threading.Event()
        refused = Counter()
        errors: list[BaseException] = []

        def produce() -> None:
            about_to.set()
            try:
                d.dispatch(refused)
            except BaseException as error:
                errors.append(error)

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        assert about_to.wait(WAIT)
        producer.join(0.05)
        with pytest.raises(TimeoutError):
            d.finalize(timeout=0.05)
        producer.join(WAIT)
        assert not producer.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], DispatcherClosed)
        assert str(errors[0]) == "cannot dispatch after finalize() was called"
        gate.set()
        d.finalize()
        assert refused.value == 0
        assert d.stats(0).completed == 1

    def test_concurrent_calls(self, kit: Kit) -> None:
        """finalize() called from several threads at once returns in each of them."""
        d = kit.dispatcher(2, name="test-cc")
        gate = kit.gate()
        d.dispatch(gated(gate))
        d.dispatch(gated(gate))
        errors: list[BaseException] = []

        def finish() -> None:
            try:
                d.finalize()
            except BaseException as error:
                errors.append(error)

        finishers = [threading.Thread(target=finish, name=f"test-finisher-{n}") for n in range(3)]
        for finisher in finishers:
            finisher.start()
        wait_for(lambda: d.closed, "finalize to begin")
        gate.set()
        for finisher in finishers:
            finisher.join(WAIT)
        assert not any(f.is_alive() for f in finishers)
        assert errors == []
        assert threads_named("test-cc-") == []

    def test_failures_do_not_stop_finalize(self) -> None:
        """finalize() completes normally when jobs failed; the failures are counted."""
        d = Dispatcher(2, on_error=lambda job, exc: None)
        for _ in range(10):
            d.dispatch(lambda: 1 / 0)
        d.finalize()
        assert d.stats(0).failed == 10

    def test_inside_own_job_raises(self, kit: Kit) -> None:
        """finalize() from one of the dispatcher's own jobs raises DispatcherError; the dispatcher stays open."""
        d = kit.dispatcher(1)
        errors: list[BaseException] = []

        def job() -> None:
            try:
                d.finalize()
            except DispatcherError as error:
                errors.append(error)

        d.dispatch(job)
        assert d.wait(WAIT)
        assert [str(e) for e in errors] == [
            "cannot finalize from inside one of the dispatcher's own jobs: it would deadlock"
        ]
        assert not d.closed
        counter = Counter()
        d.dispatch(counter)
        assert d.wait(WAIT)
        assert counter.value == 1

    def test_inside_another_dispatchers_job(self, kit: Kit) -> None:
        """A job of one dispatcher may finalize another dispatcher."""
        outer = kit.dispatcher(1)
        inner = Dispatcher(1)
        counter = Counter()
        inner.dispatch(counter)
        outer.dispatch(inner.finalize)
        assert outer.wait(WAIT)
        assert outer.stats(0).completed == 1
        assert inner.closed
        assert counter.value == 1

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"cancel_pending": "yes"}, TypeError, r"^cancel_pending must be a bool, got 'yes'$"),
            ({"cancel_pending": 1}, TypeError, r"^cancel_pending must be a bool, got 1$"),
            ({"cancel_pending": None}, TypeError, r"^cancel_pending must be a bool, got None$"),
            ({"timeout": "1"}, TypeError, r"^timeout must be a number of seconds or None, got '1'$"),
            ({"timeout": True}, TypeError, r"^timeout must be a number of seconds or None, got True$"),
            ({"timeout": -1}, ValueError, r"^timeout must be >= 0, got -1$"),
            ({"timeout": math.nan}, ValueError, r"^timeout must be >= 0, got nan$"),
        ],
    )
    def test_bad_arguments(self, kit: Kit, kwargs: dict[str, object], error: type[Exception], message: str) -> None:
        """A bad argument is refused before anything happens; the dispatcher stays open."""
        d = kit.dispatcher(1)
        with pytest.raises(error, match=message):
            d.finalize(**kwargs)  # type: ignore[arg-type]
        assert not d.closed

    def test_keyword_only(self, kit: Kit) -> None:
        """cancel_pending and timeout are keyword-only."""
        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=r"^Dispatcher\.finalize\(\) takes 1 positional argument but 2 were given$"):
            d.finalize(True)  # type: ignore[call-arg]


class TestContextManager:
    def test_returns_itself_and_finalizes(self) -> None:
        """`with Dispatcher(...) as d` gives the dispatcher and finalizes it, jobs run, on exit."""
        counter = Counter()
        dispatcher = Dispatcher(2, name="test-cm")
        with dispatcher as d:
            assert d is dispatcher
            for _ in range(20):
                d.dispatch(counter)
        assert d.closed
        assert counter.value == 20
        assert threads_named("test-cm-") == []

    @pytest.mark.parametrize("error_type", [RuntimeError, KeyboardInterrupt])
    def test_exception_cancels_pending_and_propagates(self, error_type: type[BaseException]) -> None:
        """If the block raises, queued and delayed jobs are cancelled, the running one ends, the error propagates."""
        gate = threading.Event()
        started = threading.Event()
        dropped = Counter()
        body_error = error_type("body")
        d = Dispatcher(1, name="test-cmx")

        def open_gate_once_cancelled() -> None:
            wait_for(lambda: d.stats(0).cancelled == 2, "the queued and delayed jobs to be cancelled")
            gate.set()

        opener = threading.Thread(target=open_gate_once_cancelled, name="test-opener")
        try:
            with pytest.raises(error_type) as caught, d:
                d.dispatch(gated(gate, started))
                d.dispatch(dropped)
                d.dispatch_later(LONG, dropped)
                assert started.wait(WAIT)
                opener.start()
                raise body_error
        finally:
            gate.set()
            opener.join(WAIT)
        assert caught.value is body_error
        assert d.closed
        assert dropped.value == 0
        stats = d.stats(0)
        assert (stats.completed, stats.cancelled) == (1, 2)
        assert threads_named("test-cmx-") == []

    def test_interrupted_drain_cancels_and_reraises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """If draining at the end of the block is interrupted, the rest is cancelled and the interrupt propagates."""
        d = Dispatcher(1)
        real_finalize = d.finalize
        calls: list[dict[str, object]] = []

        def interrupted_once(**kwargs: Any) -> None:
            calls.append(kwargs)
            if len(calls) == 1:
                raise KeyboardInterrupt
            real_finalize(**kwargs)

        monkeypatch.setattr(d, "finalize", interrupted_once)
        with pytest.raises(KeyboardInterrupt), d:
            d.dispatch(lambda: None)
        assert calls == [{}, {"cancel_pending": True}]
        assert d.closed


class TestThreadCleanup:
    def test_thread_names_and_daemon(self, kit: Kit) -> None:
        """Workers are named '<name>-p<priority>-<n>', the timer '<name>-timer'; all are daemon threads."""
        d = kit.dispatcher({-3: 2, 4: 1}, name="test-nm")
        gate = kit.gate()
        d.dispatch(gated(gate), priority=-3)
        d.dispatch(gated(gate), priority=-3)
        d.dispatch(gated(gate), priority=4)
        d.dispatch_later(LONG, lambda: None, priority=4)
        threads = threads_named("test-nm-")
        assert sorted(t.name for t in threads) == ["test-nm-p-3-1", "test-nm-p-3-2", "test-nm-p4-1", "test-nm-timer"]
        assert all(t.daemon for t in threads)

    def test_cycles_leave_no_thread(self) -> None:
        """Creating, using and finalizing dispatchers over and over leaves the thread list as it was."""
        before = set(threading.enumerate())
        for _ in range(20):
            d = Dispatcher({0: 4, 1: 2})
            for _ in range(10):
                d.dispatch(lambda: None, priority=0)
                d.dispatch(lambda: None, priority=1)
            d.dispatch_later(0, lambda: None, priority=1)
            d.finalize()
        assert set(threading.enumerate()) == before

    def test_garbage_collected_dispatcher_runs_queue_then_stops(self) -> None:
        """A dispatcher dropped without finalize still runs its queued jobs, then its threads exit."""
        gate = threading.Event()
        started = threading.Event()
        counter = Counter()
        d = Dispatcher(1, name="test-gc")
        d.dispatch(gated(gate, started))
        for _ in range(3):
            d.dispatch(counter)
        assert started.wait(WAIT)
        threads = threads_named("test-gc-")
        del d
        gc.collect()
        gate.set()
        for thread in threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in threads)
        assert counter.value == 3

    def test_interpreter_exit_runs_queued_and_cancels_delayed(self) -> None:
        """At interpreter exit an open dispatcher runs its queued jobs and cancels delayed ones with a warning."""
        script = textwrap.dedent(
            """
            import atexit
            import threading

            from jobdispatch import Dispatcher

            gate = threading.Event()
            d = Dispatcher(1, name="left-open")
            d.dispatch(lambda: gate.wait(30))
            for n in range(3):
                d.dispatch(lambda n=n: print("queued job", n, flush=True))
            d.dispatch_later(60, lambda: print("delayed job", flush=True))
            atexit.register(gate.set)  # runs first: atexit handlers run last-registered first
            print("main done", flush=True)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["main done", "queued job 0", "queued job 1", "queued job 2"]
        assert "interpreter exit: cancelling 1 delayed jobs of dispatcher 'left-open' that was not finalized" in (
            result.stderr
        )

    def test_exit_hook_in_process(self, caplog: pytest.LogCaptureFixture) -> None:
        """The interpreter-exit hook finalizes open and half-finalized dispatchers, cancelling delayed jobs."""
        from jobdispatch._dispatcher import _finalize_live_dispatchers  # the hook atexit runs

        counter = Counter()
        with_delayed = Dispatcher(1, name="test-exit")
        for _ in range(3):
            with_delayed.dispatch(counter)
        with_delayed.dispatch_later(LONG, counter)
        plain = Dispatcher(1, name="test-exit")
        plain.dispatch(counter)
        gate = threading.Event()
        closing = Dispatcher(1, name="test-exit")
        closing.dispatch(gated(gate))
        with pytest.raises(TimeoutError):
            closing.finalize(timeout=0.01)
        gate.set()
        with caplog.at_level(logging.WARNING, logger="jobdispatch"):
            _finalize_live_dispatchers()
        assert with_delayed.closed
        assert plain.closed
        assert closing.closed
        assert counter.value == 4
        assert (with_delayed.stats(0).completed, with_delayed.stats(0).cancelled) == (3, 1)
        assert closing.stats(0).completed == 1
        assert [r.getMessage() for r in caplog.records if r.name == "jobdispatch"] == [
            "interpreter exit: cancelling 1 delayed jobs of dispatcher 'test-exit' that was not finalized"
        ]
        assert threads_named("test-exit-") == []

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_fork_child_refuses_inherited_dispatcher(self, kit: Kit) -> None:
        """In a forked child the inherited dispatcher refuses work; a new one works; the parent is unaffected."""
        d = kit.dispatcher(2)
        d.dispatch(lambda: None)
        assert d.wait(WAIT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            code = 1
            try:
                try:
                    d.dispatch(lambda: None)
                except DispatcherClosed as error:
                    if "fork" in str(error) and d.closed:
                        code = 2
                if code == 2:
                    counter = Counter()
                    with Dispatcher(2) as fresh:
                        for _ in range(5):
                            fresh.dispatch(counter)
                    code = 0 if counter.value == 5 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        counter = Counter()
        d.dispatch(counter)
        assert d.wait(WAIT)
        assert counter.value == 1
