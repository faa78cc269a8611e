"""dispatch_many: many jobs for less per job, with the accounting, barrier and errors of dispatch."""

from __future__ import annotations

import contextvars
import itertools
import sys
import threading
from typing import Any

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, PoolConfig, PoolFull, UnknownPriority
from jobdispatch._outcome import CancelledBeforeStart
from support import WAIT, Counter, Kit, gated, refuse_thread_starts, wait_for

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class Tagged:
    def __init__(self, priority: int, seen: list[int]) -> None:
        self._priority = priority
        self._seen = seen

    def do(self) -> None:
        self._seen.append(self._priority)

    def priority(self) -> int:
        return self._priority


class TestDispatchMany:
    @pytest.mark.parametrize("chunksize", [1, 7, 32])
    def test_runs_every_job_and_counts_each(self, kit: Kit, chunksize: int) -> None:
        """Every job runs once and counts once in completed, chunked or not."""
        d = kit.dispatcher({0: 3})
        ran = Counter()
        assert d.dispatch_many((ran for _ in range(1000)), chunksize=chunksize) == 1000
        assert d.wait(WAIT)
        assert ran.value == 1000
        stats = d.stats(0)
        assert (stats.completed, stats.failed, stats.busy, stats.queued) == (1000, 0, 0, 0)

    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_jobs_go_to_the_pool_of_their_priority(self, kit: Kit, chunksize: int) -> None:
        """Job objects are routed one by one by their priority()."""
        d = kit.dispatcher({0: 2, 1: 2})
        seen: list[int] = []
        lock = threading.Lock()

        class Locked(Tagged):
            def do(self) -> None:
                with lock:
                    super().do()

        jobs = [Locked(n % 2, seen) for n in range(50)]
        assert d.dispatch_many(jobs, chunksize=chunksize) == 50
        assert d.wait(WAIT)
        assert sorted(seen) == sorted(n % 2 for n in range(50))
        assert (d.stats(0).completed, d.stats(1).completed) == (25, 25)

    def test_failures_in_a_chunk_are_each_counted_and_named(self, kit: Kit) -> None:
        """A chunk with failing jobs counts each failure and reports each, named, to the log or on_error."""
        errors: list[tuple[object, list[str]]] = []
        lock = threading.Lock()

        def on_error(job: object, error: BaseException) -> None:
            with lock:
                errors.append((job, error.__notes__))

        d = kit.dispatcher({0: 1}, on_error=on_error)

        def boom() -> None:
            raise ValueError("boom")

        jobs = [boom if n % 3 == 0 else (lambda: None) for n in range(9)]
        d.dispatch_many(jobs, chunksize=4)
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.failed) == (6, 3)
        assert [job for job, _ in errors] == [boom, boom, boom]
        assert all(notes == [f"jobdispatch: raised by job {boom.__qualname__} in pool 0"] for _, notes in errors)

    def test_a_chunk_whose_jobs_all_fail(self, kit: Kit) -> None:
        """A chunk in which every job fails counts every failure, and counters never go down."""
        d = kit.dispatcher({0: 1}, on_error=lambda job, error: None)

        def boom() -> None:
            raise ValueError

        d.dispatch_many([boom] * 5, chunksize=5)
        assert d.wait(WAIT)
        stats = d.stats(0)
        assert (stats.completed, stats.failed) == (0, 5)

    def test_each_job_of_a_chunk_runs_in_its_own_copy_of_the_context(self, kit: Kit) -> None:
        """Jobs of a chunk see the dispatching code's context, and not one another's changes."""
        d = kit.dispatcher({0: 1})
        seen: list[str] = []

        def job() -> None:
            seen.append(request_id.get())
            request_id.set("changed by a job")

        token = request_id.set("r-42")
        try:
            d.dispatch_many([job] * 3, chunksize=3)
        finally:
            request_id.reset(token)
        assert d.wait(WAIT)
        assert seen == ["r-42"] * 3

    def test_cancelled_chunks_count_every_job(self, kit: Kit) -> None:
        """finalize(cancel_pending=True) counts every job of a queued chunk as cancelled."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=4)])
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        ran = Counter()
        d.dispatch_many((ran for _ in range(12)), chunksize=4)  # three chunks wait in the queue
        finalizer = threading.Thread(target=d.finalize, kwargs={"cancel_pending": True, "timeout": WAIT})
        finalizer.start()
        # The gate opens once the chunks are cancelled: before, the worker could run one.
        wait_for(lambda: d.stats(0).cancelled, "finalize to cancel the queued chunks")
        gate.set()
        finalizer.join(WAIT)
        stats = d.stats(0)
        assert ran.value == 0
        assert (stats.completed, stats.cancelled) == (1, 12)

    def test_endless_iterable_is_read_lazily_with_backpressure(self, kit: Kit) -> None:
        """An endless iterable is dispatched as room comes; a timeout ends it with a note of how many went out."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=2)])
        gate = kit.gate()
        with pytest.raises(PoolFull) as caught:
            d.dispatch_many((gated(gate) for _ in itertools.count()), timeout=0)
        assert caught.value.__notes__ == [
            "jobdispatch: dispatch_many dispatched 3 jobs before this error, and no other"
        ]
        gate.set()
        assert d.wait(WAIT)
        assert d.stats(0).completed == 3

    def test_barrier_waits_for_chunks(self, kit: Kit) -> None:
        """wait() covers jobs sent in chunks."""
        d = kit.dispatcher({0: 2})
        ran = Counter()
        d.dispatch_many((ran for _ in range(100)), chunksize=16)
        assert d.wait(WAIT)
        assert ran.value == 100

    def test_bad_chunksize(self, kit: Kit) -> None:
        """chunksize must be an int >= 1."""
        d = kit.dispatcher(1)
        with pytest.raises(ValueError, match=r"^chunksize must be >= 1, got 0$"):
            d.dispatch_many([], chunksize=0)
        with pytest.raises(TypeError, match=r"^chunksize must be an int, got 1.5$"):
            d.dispatch_many([], chunksize=1.5)  # type: ignore[arg-type]

    def test_after_finalize(self) -> None:
        """dispatch_many after finalize raises DispatcherClosed, chunked or not."""
        d = Dispatcher(1)
        d.finalize()
        for chunksize in (1, 4):
            with pytest.raises(DispatcherClosed):
                d.dispatch_many([lambda: None], chunksize=chunksize)

    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_priority_is_asked_once_per_job_when_no_thread_pool_has_it(self, kit: Kit, chunksize: int) -> None:
        """A known Job class whose priority() names no pool: priority() is called once, UnknownPriority raised."""
        d = kit.dispatcher({0: 1})
        asked = Counter()

        class Counted:
            def __init__(self, priority: int) -> None:
                self._priority = priority

            def do(self) -> None:
                pass

            def priority(self) -> int:
                asked()
                return self._priority

        d.dispatch_many([Counted(0), Counted(0)], chunksize=chunksize)  # the class is known from now on
        assert asked.value == 2
        with pytest.raises(UnknownPriority):
            d.dispatch_many([Counted(7)], chunksize=chunksize)
        assert asked.value == 3
        assert d.wait(WAIT)
        assert d.stats(0).completed == 2

    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_jobs_of_every_kind_mixed_keep_their_order_in_a_pool(self, kit: Kit, chunksize: int) -> None:
        """Jobs, functions, bound methods and callable objects, interleaved, run in order on one worker.

        Callable objects go through the full routing each time; the others
        are routed inline (a list without chunks is also queued in bulk).
        """
        d = kit.dispatcher({0: 1})
        order: list[str] = []

        class Job:
            def __init__(self, tag: str) -> None:
                self.tag = tag

            def do(self) -> None:
                order.append(self.tag)

            def priority(self) -> int:
                return 0

            def method(self) -> None:
                order.append("m" + self.tag)

        def function(tag: str) -> Any:
            def run() -> None:
                order.append("f" + tag)

            return run

        class Called:  # callable, and no Job: routed in full
            def __init__(self, tag: str) -> None:
                self.tag = tag

            def __call__(self) -> None:
                order.append("c" + self.tag)

        jobs: list[Any] = []
        for n in range(50):
            jobs += [Job(str(n)), function(str(n)), Job(str(n)).method, Called(str(n))]
        assert d.dispatch_many(jobs, chunksize=chunksize) == 200
        assert d.wait(WAIT)
        assert order == [tag for n in range(50) for tag in (str(n), f"f{n}", f"m{n}", f"c{n}")]

    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_a_coroutine_function_among_the_jobs_stops_the_call_and_says_how_far_it_got(
        self, kit: Kit, chunksize: int
    ) -> None:
        """An async def among plain functions raises TypeError; the note counts exactly the jobs that run."""
        d = kit.dispatcher({0: 2})
        ran = Counter()

        async def not_here() -> None:
            pass

        jobs: list[Any] = [ran] * 6 + [not_here] + [ran] * 3
        with pytest.raises(TypeError, match="coroutine function") as raised:
            d.dispatch_many(jobs, chunksize=chunksize)
        assert d.wait(WAIT)
        assert f"dispatched {ran.value} jobs before this error" in " ".join(raised.value.__notes__)
        assert ran.value == (6 if chunksize == 1 else 4)  # a whole chunk of 4 went; the next was being filled


class TestDispatchManyOfAList:
    """A list or a tuple without chunks: routed ahead, queued under one hold of a pool's lock."""

    @pytest.mark.parametrize("kind", [list, tuple])
    def test_every_job_runs_once_within_the_pool_s_bound(self, kit: Kit, kind: type) -> None:
        """Many more jobs than places: each runs once, counted once, never more in the pool than it holds."""
        d = kit.dispatcher([PoolConfig(0, 2, 3)])
        lock = threading.Lock()
        inside = most = 0
        ran = Counter()

        def job() -> None:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside + d.stats(0).queued)
            ran()
            with lock:
                inside -= 1

        assert d.dispatch_many(kind([job] * 500)) == 500
        assert d.wait(WAIT)
        assert ran.value == 500
        assert most <= 5
        stats = d.stats(0)
        assert (stats.completed, stats.busy, stats.queued) == (500, 0, 0)

    def test_a_failing_priority_stops_the_call_after_the_jobs_before_it(self, kit: Kit) -> None:
        """priority() raising for the 10th job: the 9 before it are dispatched and run, none after it."""
        d = kit.dispatcher({0: 2, 1: 2})
        seen: list[int] = []
        lock = threading.Lock()

        class Job(Tagged):
            def do(self) -> None:
                with lock:
                    super().do()

            def priority(self) -> int:
                if self._priority < 0:
                    raise LookupError("which pool?")
                return self._priority

        jobs = [Job(n % 2, seen) for n in range(9)] + [Job(-1, seen)] + [Job(0, seen) for _ in range(5)]
        with pytest.raises(LookupError, match="which pool") as raised:
            d.dispatch_many(jobs)
        assert d.wait(WAIT)
        assert len(seen) == 9
        assert any("dispatched 9 jobs before this error" in note for note in raised.value.__notes__)

    def test_a_full_pool_that_may_not_wait_says_how_many_got_in(self, kit: Kit) -> None:
        """timeout=0 on a pool with 3 places held by nothing: 3 jobs get in, PoolFull says so."""
        d = kit.dispatcher([PoolConfig(0, 1, 2)])
        gate = kit.gate()
        started = threading.Event()
        ran = Counter()

        def first() -> None:
            started.set()
            gate.wait(WAIT)
            ran()

        def job() -> None:
            ran()

        with pytest.raises(PoolFull) as raised:
            d.dispatch_many([first, job, job, job, job], timeout=0)
        assert any("dispatched 3 jobs before this error" in note for note in raised.value.__notes__)
        assert started.wait(WAIT)
        gate.set()
        assert d.wait(WAIT)
        assert ran.value == 3

    def test_a_list_dispatched_from_a_job_joins_its_round(self, kit: Kit) -> None:
        """The jobs a job dispatches with dispatch_many are follow-ups: wait() returns after them."""
        d = kit.dispatcher({0: 2})
        gate = kit.gate()
        ran = Counter()

        def late() -> None:
            gate.wait(WAIT)
            ran()

        dispatched = threading.Event()

        def parent() -> None:
            d.dispatch_many([late, ran, ran])
            dispatched.set()

        d.dispatch(parent)
        assert dispatched.wait(WAIT)
        assert not d.wait(0.05)  # the parent is over or about to be; its gated follow-up holds the barrier
        gate.set()
        assert d.wait(WAIT)
        assert ran.value == 3


class TestDispatchManyOfAListChangedMeanwhile:
    """A list changed while it is dispatched: read as a for loop reads it, a few dozen jobs ahead."""

    def test_a_priority_that_shortens_the_list_raises_nothing_and_says_how_many_ran(self, kit: Kit) -> None:
        """priority() of the 6th job deletes the jobs after it: no error; the call returns how many it dispatched."""
        d = kit.dispatcher({0: 2})
        seen: list[int] = []
        lock = threading.Lock()
        jobs: list[Any] = []

        class Trimming(Tagged):
            def do(self) -> None:
                with lock:
                    super().do()

            def priority(self) -> int:
                if self is jobs[5]:
                    del jobs[6:]
                return 0

        jobs += [Trimming(0, seen) for _ in range(20)]
        dispatched = d.dispatch_many(jobs)
        assert 6 <= dispatched <= 20
        assert d.wait(WAIT)
        assert (len(seen), d.stats(0).completed) == (dispatched, dispatched)

    def test_a_job_that_shortens_the_list_leaves_the_jobs_still_in_it_dispatched(self, kit: Kit) -> None:
        """The first job cuts 100 jobs to 70 while the producer waits for room: those 70 run, the call returns 70."""
        d = kit.dispatcher([PoolConfig(0, 1, 0)])  # one place: the producer waits while the first job runs
        ran = Counter()
        jobs: list[Any] = []

        def first() -> None:
            del jobs[70:]  # before the producer reads on: the first job holds the only place until it returns
            ran()

        jobs += [first] + [ran] * 99
        assert d.dispatch_many(jobs) == 70
        assert d.wait(WAIT)
        assert (ran.value, d.stats(0).completed) == (70, 70)

    def test_jobs_added_to_the_list_while_it_is_dispatched_are_dispatched_too(self, kit: Kit) -> None:
        """priority() of the last job appends 3 more: they are dispatched as well, and counted in the return."""
        d = kit.dispatcher({0: 2})
        seen: list[int] = []
        lock = threading.Lock()
        jobs: list[Any] = []

        class Growing(Tagged):
            def do(self) -> None:
                with lock:
                    super().do()

            def priority(self) -> int:
                if self._priority == 1:
                    jobs.extend(Growing(0, seen) for _ in range(3))
                return 0

        jobs += [Growing(0, seen) for _ in range(9)] + [Growing(1, seen)]
        assert d.dispatch_many(jobs) == 13
        assert d.wait(WAIT)
        assert (len(seen), d.stats(0).completed) == (13, 13)


class TestDispatchManyRunByTheCaller:
    """A pool that cannot start a thread: the dispatching thread runs each job itself."""

    def test_ctrl_c_in_a_job_the_caller_runs_counts_that_job_as_dispatched(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C in the 2nd job, run by the main thread: the note says 2 jobs were dispatched, as the pool counts."""
        refuse_thread_starts(monkeypatch, "test-caller-runs")
        d = kit.dispatcher({0: 1}, name="test-caller-runs")
        ran = Counter()

        def interrupted() -> None:
            ran()
            raise KeyboardInterrupt  # Ctrl-C as the main thread runs the job

        assert threading.current_thread() is threading.main_thread()
        with pytest.raises(KeyboardInterrupt) as caught:
            d.dispatch_many([ran, interrupted, ran])
        assert any("dispatched 2 jobs before this error" in note for note in caught.value.__notes__)
        stats = d.stats(0)
        assert (ran.value, stats.completed, stats.failed) == (2, 1, 1)

    def test_ctrl_c_in_a_job_of_a_chunk_the_caller_runs_counts_each_job_once(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C in the 2nd job of a chunk run by the main thread: one completed, one failed, one cancelled."""
        refuse_thread_starts(monkeypatch, "test-caller-runs")
        d = kit.dispatcher({0: 1}, name="test-caller-runs")
        ran = Counter()

        def interrupted() -> None:
            ran()
            raise KeyboardInterrupt  # Ctrl-C as the main thread runs the job

        with pytest.raises(KeyboardInterrupt) as caught:
            d.dispatch_many([ran, interrupted, ran], chunksize=3)
        assert any("dispatched 3 jobs before this error" in note for note in caught.value.__notes__)
        stats = d.stats(0)
        assert (ran.value, stats.completed, stats.failed, stats.cancelled) == (2, 1, 1, 1), stats

    def test_ctrl_c_as_a_c_call_returns_after_the_chunk_ran_says_its_jobs_were_dispatched(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C after any C call of jobdispatch that returns once a chunk ran: the note counts the chunk's jobs."""
        refuse_thread_starts(monkeypatch, "test-caller-runs")
        strike = 0
        while True:
            strike += 1
            assert strike < 100, "the dispatch never stops making calls"
            d = kit.dispatcher({0: 1}, name="test-caller-runs")
            ran = Counter()
            returns = 0

            def profiler(frame: Any, event: str, arg: object, strike: int = strike, ran: Counter = ran) -> None:
                nonlocal returns
                if event == "c_return" and ran.value == 3 and "jobdispatch" in frame.f_code.co_filename:
                    returns += 1
                    if returns == strike:
                        raise KeyboardInterrupt

            sys.setprofile(profiler)
            try:
                dispatched = d.dispatch_many([ran, ran, ran], chunksize=3)
            except KeyboardInterrupt as error:
                notes = getattr(error, "__notes__", [])
                assert any("dispatch_many dispatched 3 jobs" in note for note in notes), (strike, notes)
            else:
                assert dispatched == 3
            finally:
                sys.setprofile(None)
            assert ran.value == 3
            stats = d.stats(0)
            assert stats.completed + stats.failed + stats.cancelled == 3, stats
            if returns < strike:  # the dispatch ended before this return: every one was struck
                break

    @pytest.mark.parametrize("chunksize", [1, 3])
    def test_ctrl_c_at_any_call_after_a_job_exits_leaves_a_note_that_counts_as_the_pool(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch, chunksize: int
    ) -> None:
        """A job's SystemExit on the main thread, then Ctrl-C at any later call of _run_here: the note is right.

        The note on the exception says as many jobs were dispatched as the pool counted.
        """
        from jobdispatch._pool import Pool

        run_here = Pool._run_here.__code__
        refuse_thread_starts(monkeypatch, "test-caller-runs")
        strike = 0
        while True:
            strike += 1
            assert strike < 100, "the dispatch never stops making calls"
            d = kit.dispatcher({0: 1}, name="test-caller-runs")
            ran = Counter()
            exited: list[bool] = []
            calls = 0

            def leave(exited: list[bool] = exited) -> None:
                exited.append(True)
                raise SystemExit(3)  # a signal handler's exit, as the main thread runs the job

            def tracer(frame: Any, event: str, arg: object, strike: int = strike, exited: list[bool] = exited) -> None:
                nonlocal calls
                if event == "call" and exited and frame.f_back.f_code is run_here:
                    calls += 1
                    if calls == strike:
                        raise KeyboardInterrupt

            previous = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(tracer)
            try:
                with pytest.raises((KeyboardInterrupt, SystemExit)) as caught:
                    d.dispatch_many([ran, leave, ran], chunksize=chunksize)
            finally:
                sys.settrace(previous)
            said = [note for note in getattr(caught.value, "__notes__", []) if "dispatch_many dispatched" in note]
            stats = d.stats(0)
            counted = stats.completed + stats.failed + stats.cancelled
            assert said == [f"jobdispatch: dispatch_many dispatched {counted} jobs before this error, and no other"], (
                f"Ctrl-C at call {strike} after the exit: {said}, {stats}"
            )
            if calls < strike:  # the dispatch ended before this call: every call was struck
                break


class TestBatchDispatchMany:
    def test_batch_waits_for_and_reports_every_job(self, kit: Kit) -> None:
        """Batch.dispatch_many puts every job in the batch: waited for, failures in the group."""
        d = kit.dispatcher({0: 2})
        ran = Counter()

        def boom() -> None:
            raise KeyError("x")

        with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:
            assert batch.dispatch_many([ran, boom, ran]) == 3
        assert ran.value == 2
        assert len(caught.value.exceptions) == 1
        assert (batch.total, batch.done) == (3, 3)


class TestInterruptedAfterTheHandOver:
    def _interrupt_as_the_worker_starts(self) -> Any:
        """A trace function that raises KeyboardInterrupt as a reserved worker thread is started (Ctrl-C there)."""
        from jobdispatch import _pool

        start_reserved = _pool.Pool.start_reserved.__code__

        def tracer(frame: Any, event: str, arg: object) -> None:
            if event == "call" and frame.f_code is start_reserved:
                raise KeyboardInterrupt

        return tracer

    def test_dispatch_says_the_job_was_queued(self, kit: Kit) -> None:
        """Ctrl-C after the hand-over: the exception's note says the job will run, and it does."""
        d = kit.dispatcher({0: 2})
        gate = kit.gate()
        d.dispatch(gated(gate))  # one busy worker: the next dispatch reserves a second one
        ran = Counter()
        previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(self._interrupt_as_the_worker_starts())
        try:
            with pytest.raises(KeyboardInterrupt) as caught:
                d.dispatch(ran)
        finally:
            sys.settrace(previous_trace)
        gate.set()
        assert d.wait(WAIT)
        assert caught.value.__notes__ == ["jobdispatch: the job was queued before this exception struck: it will run"]
        assert ran.value == 1

    def test_batch_dispatch_taken_back_says_nothing(self, kit: Kit) -> None:
        """A batch takes back a job whose dispatch Ctrl-C interrupted: no note claims it will run, and it does not."""
        d = kit.dispatcher({0: 3})
        gate = kit.gate()
        d.dispatch(gated(gate))
        d.dispatch(gated(gate))  # two workers busy: the batch job reserves a third, which never starts
        ran = Counter()
        batch = d.batch()
        with pytest.raises(KeyboardInterrupt) as caught, batch:
            previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
            sys.settrace(self._interrupt_as_the_worker_starts())
            try:
                batch.dispatch(ran)
            finally:
                sys.settrace(previous_trace)
        gate.set()
        assert d.wait(WAIT)
        assert getattr(caught.value, "__notes__", []) == []
        assert ran.value == 0


class _ContextStruckAt:
    """Stands for a context whose copy is interrupted (Ctrl-C) at the ``strike``-th copy: between two jobs."""

    def __init__(self, strike: int) -> None:
        self.copies = 0
        self.strike = strike

    def copy(self) -> contextvars.Context:
        self.copies += 1
        if self.copies == self.strike:
            raise KeyboardInterrupt
        return contextvars.copy_context()


class TestChunkCountsWhenStruckBetweenJobs:
    """A chunk run directly, struck between two jobs: it counts its share of the jobs once, none below zero.

    The thread that runs a chunk counts the chunk itself as one failed job when
    it is interrupted; run directly here, nothing counts that one.
    """

    def test_dispatch_many_chunk(self, kit: Kit) -> None:
        from jobdispatch._many import Chunk

        d = kit.dispatcher(1)
        pool = d._pools[0]
        ran = Counter()
        chunk = Chunk(pool, [(ran, ran), (ran, ran), (ran, ran)], _ContextStruckAt(2))  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            chunk()
        s = d.stats(0)
        # The first job completed; the second, about to start, is the one its thread counts as failed; the third
        # is cancelled.
        assert (ran.value, s.completed, s.failed, s.cancelled) == (1, 1, 0, 1), s

    def test_map_chunk(self, kit: Kit) -> None:
        from concurrent.futures import CancelledError

        from jobdispatch._calls import Pending
        from jobdispatch._many import ChunkFuture, MappedChunk

        d = kit.dispatcher(1)
        pool = d._pools[0]
        future = ChunkFuture()
        future.calls = 3
        chunk = MappedChunk(pool, Pending(), abs, [(-1,), (-2,), (-3,)], future, _ContextStruckAt(2))  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            chunk()
        s = d.stats(0)
        assert (s.completed, s.failed, s.cancelled) == (1, 0, 1), s
        with pytest.raises(KeyboardInterrupt):
            future.result(0)  # settled: nothing waits on it for ever
        assert not isinstance(future.exception(0), CancelledError)

    def test_map_chunk_dropped_as_it_starts_cancels_every_call(self, kit: Kit) -> None:
        from concurrent.futures import CancelledError

        from jobdispatch._calls import Pending
        from jobdispatch._many import ChunkFuture, MappedChunk

        d = kit.dispatcher(1)
        pool = d._pools[0]
        future = ChunkFuture()
        future.calls = 3
        future.dropped = True  # cancel() came as the worker took the chunk: its future was still pending
        ran: list[int] = []
        chunk = MappedChunk(pool, Pending(), ran.append, [(1,), (2,), (3,)], future, None)
        with pytest.raises(CancelledBeforeStart):
            chunk()
        values, errors = future.result(0)
        assert ran == []
        assert len(values) == 3
        assert errors is not None
        assert all(isinstance(errors[i], CancelledError) for i in range(3))
        # Two counted here; the thread that runs the chunk counts the third.
        assert d.stats(0).cancelled == 2


class TestLeftToCount:
    @pytest.mark.parametrize(
        ("outcomes", "left"),
        [
            ((2, 1, 0), (1, 1, 0)),  # counted completed by its thread
            ((0, 2, 1), (0, 1, 1)),  # ... failed
            ((0, 0, 3), (0, 0, 2)),  # ... cancelled
        ],
    )
    def test_the_thread_counts_one_job_of_the_chunk(
        self, outcomes: tuple[int, int, int], left: tuple[int, int, int]
    ) -> None:
        """A chunk run to its end leaves out the job its thread counts: completed, else failed, else cancelled."""
        from jobdispatch._many import _left_to_count

        assert _left_to_count(*outcomes) == left
