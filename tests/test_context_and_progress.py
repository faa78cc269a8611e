"""contextvars propagation, batch progress reporting, and the failure log."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
import types

import pytest

from jobdispatch import Dispatcher, PoolConfig

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class TestContextVars:
    def test_job_sees_the_dispatchers_context(self) -> None:
        """A job runs in a copy of the context of the code that dispatched it."""
        seen: list[str] = []
        with Dispatcher(2) as d:
            token = request_id.set("req-42")
            try:
                d.dispatch(lambda: seen.append(request_id.get()))
                d.dispatch_later(0, lambda: seen.append(request_id.get()))
            finally:
                request_id.reset(token)
            assert d.wait(10)
        assert seen == ["req-42", "req-42"]

    def test_job_changes_do_not_leak_back(self) -> None:
        """A job that sets a context variable changes only its own copy."""
        with Dispatcher(1) as d:
            d.dispatch(lambda: request_id.set("changed"))
            assert d.wait(10)
        assert request_id.get() == "none"

    def test_propagation_can_be_turned_off(self) -> None:
        """With propagate_context=False, jobs run in the worker's own context."""
        seen: list[str] = []
        with Dispatcher(1, propagate_context=False) as d:
            token = request_id.set("req-7")
            try:
                d.dispatch(lambda: seen.append(request_id.get()))
            finally:
                request_id.reset(token)
            assert d.wait(10)
        assert seen == ["none"]

    def test_propagate_context_must_be_a_bool(self) -> None:
        """propagate_context rejects non-bools with a message naming it."""
        with pytest.raises(TypeError, match=r"^propagate_context must be a bool, got 1"):
            Dispatcher(1, propagate_context=1)  # type: ignore[arg-type]


class TestProgress:
    def test_callback_sees_every_job(self) -> None:
        """progress=callable is called once per finished job, ending at (total, total)."""
        calls: list[tuple[int, int]] = []
        with Dispatcher(3) as d, d.batch(progress=lambda done, total: calls.append((done, total))) as batch:
            for _ in range(10):
                batch.dispatch(lambda: None)
        assert len(calls) == 10
        assert [done for done, _ in calls] == list(range(1, 11))
        assert calls[-1] == (10, 10)

    def test_raising_callback_is_logged_not_fatal(self, caplog: pytest.LogCaptureFixture) -> None:
        """A progress callback that raises is logged; the batch still completes."""

        def bad(done: int, total: int) -> None:
            raise RuntimeError("progress broke")

        with Dispatcher(1) as d, caplog.at_level(logging.ERROR, logger="jobdispatch"):
            with d.batch(progress=bad) as batch:
                batch.dispatch(lambda: None)
            assert batch.done == 1
        assert "progress callback" in caplog.text

    def test_progress_true_uses_tqdm(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """progress=True drives a tqdm bar with the batch's counts."""
        bars: list[FakeBar] = []

        class FakeBar:
            def __init__(self, total: int, unit: str) -> None:
                self.total, self.n, self.closed = total, 0, False
                bars.append(self)

            def refresh(self) -> None:
                pass

            def close(self) -> None:
                self.closed = True

        monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
        with Dispatcher([PoolConfig(0, 1)]) as d:
            gate = threading.Event()
            with d.batch(progress=True) as batch:
                batch.dispatch(lambda: gate.wait(10))
                batch.dispatch(lambda: None)
                gate.set()
        assert bars
        assert bars[-1].n == bars[-1].total == 2
        assert bars[-1].closed

    def test_progress_true_without_tqdm_says_how_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """progress=True without tqdm raises ModuleNotFoundError naming the extra."""
        monkeypatch.setitem(sys.modules, "tqdm", None)
        with Dispatcher(1) as d, pytest.raises(ModuleNotFoundError, match=r"jobdispatch\[progress\]"):
            d.batch(progress=True)

    def test_progress_rejects_other_types(self) -> None:
        """progress must be a bool, a callable or None."""
        with Dispatcher(1) as d, pytest.raises(TypeError, match=r"^progress must be .*got 3"):
            d.batch(progress=3)  # type: ignore[arg-type]


class TestFailureLog:
    def test_failure_is_logged_with_pool_and_job(self, caplog: pytest.LogCaptureFixture) -> None:
        """Without on_error, a failed job is logged at ERROR with its repr, pool and traceback."""

        class Named:
            def do(self) -> None:
                raise OSError("disk full")

            def priority(self) -> int:
                return 0

            def __repr__(self) -> str:
                return "<Named job>"

        with Dispatcher(1) as d, caplog.at_level(logging.ERROR, logger="jobdispatch"):
            d.dispatch(Named())
            assert d.wait(10)
        (record,) = caplog.records
        assert record.getMessage() == "job <Named job> failed in pool 0"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], OSError)
        assert record.pool == 0  # type: ignore[attr-defined]
        assert 0 <= record.duration < 10  # type: ignore[attr-defined]

    def test_failure_record_carries_the_run_time(self, caplog: pytest.LogCaptureFixture) -> None:
        """The failure record's duration covers the job's run, measured on the worker."""
        release = threading.Event()

        def slow_failure() -> None:
            threading.Timer(0.05, release.set).start()  # started by the job: it runs at least 50 ms
            release.wait(10)
            raise ValueError("late")

        with Dispatcher(1) as d, caplog.at_level(logging.ERROR, logger="jobdispatch"):
            before = time.perf_counter()
            d.dispatch(slow_failure)
            assert d.wait(10)
            elapsed = time.perf_counter() - before
        (record,) = caplog.records
        assert 0.05 <= record.duration <= elapsed  # type: ignore[attr-defined]
