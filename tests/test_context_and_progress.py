"""contextvars propagation, batch progress reporting, and the failure log."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jobdispatch import Dispatcher, PoolConfig
from jobdispatch._progress import TqdmProgress, wait_reporting
from support import on_round_closed, wait_for

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

    def test_progress_true_draws_a_tqdm_bar_to_the_final_count(self, capsys: pytest.CaptureFixture[str]) -> None:
        """progress=True draws one tqdm bar on stderr, which ends showing every job of the batch."""
        pytest.importorskip("tqdm")
        with Dispatcher([PoolConfig(0, 1)]) as d:
            gate = threading.Event()
            with d.batch(progress=True) as batch:
                batch.dispatch(lambda: gate.wait(10))
                batch.dispatch(lambda: None)
                gate.set()
        err = capsys.readouterr().err
        assert err.count("\n") == 1  # one bar, closed once
        assert err.rstrip("\n").rsplit("\r", 1)[-1].startswith("100%")
        assert " 2/2 " in err.rsplit("\r", 1)[-1]

    def test_progress_bar_stays_one_bar_when_jobs_catch_up(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A bar is not ended each time the jobs catch up with the dispatches, only when the batch ends."""
        pytest.importorskip("tqdm")
        with Dispatcher(1) as d, d.batch(progress=True) as batch:
            for n in range(1, 4):
                batch.dispatch(lambda: None)
                wait_for(lambda n=n: batch.done == n, f"job {n} of the batch to end")
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert " 3/3 " in err.rsplit("\r", 1)[-1]

    def test_progress_bar_output_stays_small_for_many_jobs(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A bar over 20,000 quick jobs writes a few lines to a non-terminal stderr, not one per job."""
        pytest.importorskip("tqdm")
        jobs = 20_000
        with Dispatcher(4) as d, d.batch(progress=True) as batch:
            for _ in range(jobs):
                batch.dispatch(lambda: None)
        err = capsys.readouterr().err
        assert f" {jobs}/{jobs} " in err.rsplit("\r", 1)[-1]
        # tqdm redraws at most every 0.1 s: a line of ~80 bytes each time, a few a second.
        assert len(err) < 4000, f"{len(err)} bytes of progress output"

    def test_broken_progress_bar_is_logged_not_fatal(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bar that cannot draw (stderr fails) is logged; the batch still runs and counts every job."""
        pytest.importorskip("tqdm")

        class BrokenStream:
            def write(self, text: str) -> int:
                raise OSError("stderr is gone")

            def flush(self) -> None:
                raise OSError("stderr is gone")

        with Dispatcher(2) as d, caplog.at_level(logging.ERROR, logger="jobdispatch"):
            monkeypatch.setattr(sys, "stderr", BrokenStream())
            with d.batch(progress=True) as batch:
                for _ in range(1000):
                    batch.dispatch(lambda: None)
            monkeypatch.undo()
            assert batch.done == 1000
        assert "the progress bar of a batch raised" in caplog.text
        assert len(caplog.records) < 100  # not once per job: a failing bar is retried at most every 0.1 s

    def test_progress_true_without_tqdm_says_how_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """progress=True without tqdm raises ModuleNotFoundError naming tqdm itself and the extra."""
        monkeypatch.setitem(sys.modules, "tqdm", None)
        with Dispatcher(1) as d, pytest.raises(ModuleNotFoundError) as raised:
            d.batch(progress=True)
        hint = "pip install tqdm (or pip install 'jobdispatch[progress]')"
        assert str(raised.value) == f"progress=True needs tqdm: {hint}"
        assert raised.value.name == "tqdm"

    def test_progress_rejects_other_types(self) -> None:
        """progress must be a bool, a callable or None."""
        with Dispatcher(1) as d, pytest.raises(TypeError, match=r"^progress must be .*got 3"):
            d.batch(progress=3)  # type: ignore[arg-type]


class TestTqdmProgress:
    """The bar behind progress=True, which `Dispatcher.wait` can drive too."""

    def test_close_draws_the_last_count_reported(self, tmp_path: Path) -> None:
        """Reports within tqdm's interval are not drawn; close draws the last one and ends the bar."""
        pytest.importorskip("tqdm")
        with (tmp_path / "bar.txt").open("w") as file:
            bar = TqdmProgress(unit="file", file=file)
            for done in range(1, 1001):
                bar(done, 1000)
            bar.close()
        text = (tmp_path / "bar.txt").read_bytes().decode()
        assert text.count("\n") == 1
        assert text.count("\r") < 20
        assert " 1000/1000 " in text.rsplit("\r", 1)[-1]
        assert "file/s" in text

    def test_close_draws_the_final_counts_and_ends_the_bar(self, tmp_path: Path) -> None:
        """close(done, total) draws those counts even after a stale report; reports after it are ignored."""
        pytest.importorskip("tqdm")
        with (tmp_path / "bar.txt").open("w") as file:
            bar = TqdmProgress(file=file)
            bar(5, 5)
            bar(4, 5)  # a report overtaken by a later one, as from another thread
            bar.close(5, 5)
            size = file.tell()
            bar(6, 6)
            bar.close()
            assert file.tell() == size
        text = (tmp_path / "bar.txt").read_bytes().decode()
        assert text.count("\n") == 1
        assert " 5/5 " in text.rsplit("\r", 1)[-1]

    def test_close_without_a_report_writes_nothing(self, tmp_path: Path) -> None:
        """close before any report draws no bar."""
        pytest.importorskip("tqdm")
        with (tmp_path / "bar.txt").open("w") as file:
            TqdmProgress(file=file).close()
        assert (tmp_path / "bar.txt").read_text() == ""


class TestWaitReporting:
    """The loop `Dispatcher.wait` can use to show progress while it blocks."""

    def test_reports_between_waits_until_done(self) -> None:
        """Counts are reported after each wait that times out, and once more when the wait succeeds."""
        finished = threading.Event()
        reports: list[tuple[int, int]] = []

        def progress(done: int, total: int) -> None:
            reports.append((done, total))
            if len(reports) == 3:
                finished.set()

        assert wait_reporting(finished.wait, lambda: (len(reports), 9), progress, None, every=0.001)
        assert reports == [(0, 9), (1, 9), (2, 9), (3, 9)]

    def test_gives_up_at_the_deadline(self) -> None:
        """With a deadline that passes, the wait returns False after a last report."""
        never = threading.Event()
        reports: list[tuple[int, int]] = []
        deadline = time.monotonic() + 0.01
        assert not wait_reporting(never.wait, lambda: (1, 2), lambda d, t: reports.append((d, t)), deadline)
        assert time.monotonic() >= deadline
        assert reports[-1] == (1, 2)

    def test_drives_a_bar(self, tmp_path: Path) -> None:
        """With a TqdmProgress, the bar ends at the counts of the last report."""
        pytest.importorskip("tqdm")
        finished = threading.Event()
        finished.set()
        with (tmp_path / "bar.txt").open("w") as file:
            bar = TqdmProgress(file=file)
            assert wait_reporting(finished.wait, lambda: (4, 4), bar, None)
            bar.close()
        assert " 4/4 " in (tmp_path / "bar.txt").read_bytes().decode().rsplit("\r", 1)[-1]


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


class TestWaitProgress:
    def test_wait_reports_jobs_and_follow_ups_to_a_callable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """wait(progress=callback) reports (done, total) of the round, follow-ups included, ending at the total."""
        reports: list[tuple[int, int]] = []
        gate = threading.Event()
        on_round_closed(monkeypatch, gate)
        with Dispatcher({0: 2}, name="test-wait-progress") as d:

            def parent() -> None:
                gate.wait(10)
                d.dispatch(lambda: None)  # a follow-up: the total grows

            d.dispatch(parent)
            d.dispatch(lambda: gate.wait(10))
            assert d.wait(10, progress=lambda done, total: reports.append((done, total)))
        assert reports[-1] == (3, 3)
        assert all(done <= total for done, total in reports)
        assert [total for _, total in reports] == sorted(total for _, total in reports)

    def test_wait_progress_counts_the_jobs_that_end_as_it_starts(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Jobs of the round that end between the barrier's close and its first count are counted, not dropped."""
        reports: list[tuple[int, int]] = []
        gate, followed = threading.Event(), threading.Event()
        real = Dispatcher._close_round

        def close_then_let_the_round_end(self: Dispatcher) -> Any:
            rounds = real(self)
            gate.set()
            assert followed.wait(10)
            wait_for(lambda: self.stats(0).busy == 0, "the round's jobs to end")
            return rounds

        monkeypatch.setattr(Dispatcher, "_close_round", close_then_let_the_round_end)
        with Dispatcher({0: 2}, name="test-wait-progress-late") as d:

            def parent() -> None:
                gate.wait(10)
                d.dispatch(followed.set)  # a follow-up of the round

            d.dispatch(parent)
            assert d.wait(10, progress=lambda done, total: reports.append((done, total)))
        assert reports[-1] == (2, 2)

    def test_wait_progress_true_draws_a_bar(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """wait(progress=True) draws a tqdm bar that ends at the number of jobs waited for."""
        pytest.importorskip("tqdm")
        gate = threading.Event()
        on_round_closed(monkeypatch, gate)
        with Dispatcher({0: 2}, name="test-wait-bar") as d:
            for _ in range(5):
                d.dispatch(lambda: gate.wait(10))
            assert d.wait(10, progress=True)
        assert "5/5" in capsys.readouterr().err

    def test_wait_progress_bad_type(self) -> None:
        """A progress that is neither a bool, a callable nor None is refused, with the value."""
        with (
            Dispatcher(1, name="test-wait-bad") as d,
            pytest.raises(TypeError, match=r"^progress must be a bool, a callable or None, got 3$"),
        ):
            d.wait(progress=3)  # type: ignore[arg-type]
