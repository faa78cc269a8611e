"""Model-based testing: random sequences of operations against a simple model of the dispatcher.

A hypothesis state machine drives one dispatcher (1 to 3 small pools) with
dispatch (blocking and ``timeout=0``), dispatch_later, jobs that block on a
gate, gate releases, wait, batches, stats and finalize, and checks after every
step that no job is lost or run twice and that the counters add up. The model
only calls a blocking operation when it can prove it will return, and every
blocking call has a timeout anyway, so a wrong model fails instead of hanging.

``pytest --hypothesis-profile=long tests/test_model.py`` runs thousands of
sequences instead of the CI profile's 60.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobdispatch import Batch, Dispatcher, DispatcherClosed, PoolConfig, PoolFull

WAIT = 10.0  # seconds a call the model proved will return may take before the test fails
DELAYS = (0.0, 0.0005, 0.002, 0.01)
KINDS = ("quick", "gated", "fail")

_names = itertools.count()


class Gate:
    """An event jobs block on; released once, then replaced by a fresh one in the model."""

    def __init__(self) -> None:
        self.event = threading.Event()

    @property
    def released(self) -> bool:
        return self.event.is_set()


class ModelJob:
    """A job of the model: counts its runs, may block on a gate, may fail."""

    def __init__(self, pool: int, kind: str, gate: Gate | None, *, delayed: bool, batch: Batch | None) -> None:
        self.pool = pool
        self.kind = kind
        self.gate = gate
        self.delayed = delayed
        self.batch = batch
        self.runs = 0
        self.may_be_cancelled = False  # its batch was left by an exception
        self._lock = threading.Lock()

    def do(self) -> None:
        with self._lock:
            self.runs += 1
        if self.gate is not None:
            self.gate.event.wait(3 * WAIT)
        if self.kind == "fail":
            raise ValueError("model job failed on purpose")

    def priority(self) -> int:
        return self.pool

    @property
    def blocked(self) -> bool:
        """Whether the job may hold its worker until a gate is released."""
        return self.gate is not None and not self.gate.released


def call_in_thread(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run a call that could block on a helper thread; fail the test if it does not end within WAIT."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((fn(), None))
        except BaseException as error:
            outcome.append((None, error))

    thread = threading.Thread(target=run, name="test-model-helper")
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "a call the model expected to return is blocked"
    result: tuple[Any, BaseException | None] = outcome[0]
    return result


class DispatcherMachine(RuleBasedStateMachine):
    """The dispatcher under test and the model it is checked against."""

    def __init__(self) -> None:
        super().__init__()
        self.d: Dispatcher | None = None
        self.prefix = ""
        self.configs: dict[int, PoolConfig] = {}
        self.jobs: list[ModelJob] = []
        self.accepted: dict[int, int] = {}
        self.settled: set[int] = set()  # ids of jobs known to be over (a wait or batch exit saw them)
        self.gates: list[Gate] = []
        self.all_gates: list[Gate] = []
        self.batches: list[tuple[Batch, list[ModelJob]]] = []
        self.failures: list[tuple[object, BaseException]] = []
        self.finalized = False
        self.cancel_used = False

    # -- setup ---------------------------------------------------------------

    @initialize(
        pools=st.lists(
            st.tuples(st.integers(1, 3), st.integers(0, 3)),
            min_size=1,
            max_size=3,
        )
    )
    def make_dispatcher(self, pools: list[tuple[int, int]]) -> None:
        self._start([PoolConfig(p, workers, queue) for p, (workers, queue) in enumerate(pools)])

    def _start(self, configs: list[PoolConfig]) -> None:
        """Start a fresh dispatcher and a fresh model (also after a finalize, for the next lifetime)."""
        self.prefix = f"test-model-{next(_names)}"
        self.configs = {c.priority: c for c in configs}
        self.accepted = dict.fromkeys(self.configs, 0)
        self.jobs = []
        self.settled = set()
        self.gates = [self._new_gate() for _ in range(2)]
        self.batches = []
        self.failures = []
        self.finalized = False
        self.cancel_used = False
        self.d = Dispatcher(configs, name=self.prefix, on_error=lambda job, error: self.failures.append((job, error)))

    def _new_gate(self) -> Gate:
        gate = Gate()
        self.all_gates.append(gate)
        return gate

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.d is not None
        return self.d

    # -- what the model can prove ----------------------------------------------

    def _unsettled(self, pool: int) -> list[ModelJob]:
        return [j for j in self.jobs if j.pool == pool and id(j) not in self.settled]

    def _may_stall(self, pool: int) -> bool:
        """Whether gated jobs could occupy every worker of the pool (then its queue may never drain)."""
        blocked = sum(1 for j in self._unsettled(pool) if j.blocked)
        return blocked >= self.configs[pool].workers

    def _capacity(self, pool: int) -> int:
        c = self.configs[pool]
        return c.workers + c.queue_size

    def _surely_room(self, pool: int) -> bool:
        """Even if no unsettled job has ended, the pool has a free place."""
        return len(self._unsettled(pool)) < self._capacity(pool)

    def _surely_full(self, pool: int) -> bool:
        """Gated, non-delayed jobs hold every place of the pool."""
        holding = sum(1 for j in self._unsettled(pool) if j.blocked and not j.delayed)
        return holding >= self._capacity(pool)

    def _make_job(self, pool: int, kind: str, gate: int, *, delayed: bool, batch: Batch | None) -> ModelJob:
        return ModelJob(pool, kind, self.gates[gate] if kind == "gated" else None, delayed=delayed, batch=batch)

    def _accept(self, job: ModelJob) -> None:
        self.jobs.append(job)
        self.accepted[job.pool] += 1

    # -- rules -----------------------------------------------------------------

    @precondition(lambda self: not self.finalized)
    @rule(data=st.data(), kind=st.sampled_from(KINDS), gate=st.integers(0, 1), by_priority_method=st.booleans())
    def dispatch(self, data: st.DataObject, kind: str, gate: int, by_priority_method: bool) -> None:
        """Blocking dispatch, only into a pool that will surely have room."""
        pool = data.draw(st.sampled_from(sorted(self.configs)))
        if self._may_stall(pool) and not self._surely_room(pool):
            return
        job = self._make_job(pool, kind, gate, delayed=False, batch=None)
        if by_priority_method:
            self.dispatcher.dispatch(job, timeout=WAIT)
        else:
            self.dispatcher.dispatch(job.do, priority=pool, timeout=WAIT)
        self._accept(job)

    @precondition(lambda self: not self.finalized)
    @rule(data=st.data(), kind=st.sampled_from(KINDS), gate=st.integers(0, 1))
    def dispatch_nowait(self, data: st.DataObject, kind: str, gate: int) -> None:
        """dispatch(timeout=0): accepted when there surely is room, PoolFull when surely full."""
        pool = data.draw(st.sampled_from(sorted(self.configs)))
        job = self._make_job(pool, kind, gate, delayed=False, batch=None)
        room, full = self._surely_room(pool), self._surely_full(pool)
        if not room and not full:
            # Either outcome would be right (test_races covers that); the model stays
            # deterministic so that hypothesis can replay and shrink a failure.
            return
        try:
            self.dispatcher.dispatch(job, timeout=0)
        except PoolFull:
            assert not room, "PoolFull although the pool had a free place"
            return
        assert not full, "a job was accepted although gated jobs held every place"
        self._accept(job)

    @precondition(lambda self: not self.finalized)
    @rule(data=st.data(), kind=st.sampled_from(KINDS), gate=st.integers(0, 1), delay=st.sampled_from(DELAYS))
    def dispatch_later(self, data: st.DataObject, kind: str, gate: int, delay: float) -> None:
        """dispatch_later never blocks, whatever the state of the pool."""
        pool = data.draw(st.sampled_from(sorted(self.configs)))
        job = self._make_job(pool, kind, gate, delayed=True, batch=None)
        self.dispatcher.dispatch_later(delay, job)
        self._accept(job)

    @precondition(lambda self: not self.finalized)
    @rule(gate=st.integers(0, 1))
    def release_gate(self, gate: int) -> None:
        """Open a gate: the jobs blocked on it finish; later gated jobs get a new gate."""
        self.gates[gate].event.set()
        self.gates[gate] = self._new_gate()

    @precondition(lambda self: not self.finalized)
    @rule()
    def wait(self) -> None:
        """wait() returns True once nothing is gated; with gated jobs a short wait returns False."""
        if any(j.blocked for j in self.jobs if id(j) not in self.settled):
            assert self.dispatcher.wait(timeout=0.001) is False
            return
        assert self.dispatcher.wait(timeout=WAIT) is True
        for job in self.jobs:
            assert job.runs == 1 or (job.may_be_cancelled and job.runs == 0), "wait() returned before a job ran"
            self.settled.add(id(job))
        for pool, stats in self.dispatcher.stats().items():
            assert (stats.busy, stats.queued, stats.delayed) == (0, 0, 0)
            assert stats.completed + stats.failed + stats.cancelled == self.accepted[pool]

    @precondition(lambda self: not self.finalized and len(self.batches) < 3)
    @rule()
    def enter_batch(self) -> None:
        """Open a batch (several may be open at once)."""
        batch = self.dispatcher.batch()
        assert batch.__enter__() is batch
        self.batches.append((batch, []))

    @precondition(lambda self: not self.finalized and bool(self.batches))
    @rule(data=st.data(), kind=st.sampled_from(KINDS), gate=st.integers(0, 1), later=st.booleans())
    def batch_dispatch(self, data: st.DataObject, kind: str, gate: int, later: bool) -> None:
        """Dispatch (or dispatch_later) through an open batch."""
        batch, members = data.draw(st.sampled_from(self.batches))
        pool = data.draw(st.sampled_from(sorted(self.configs)))
        job = self._make_job(pool, kind, gate, delayed=later, batch=batch)
        if later:
            batch.dispatch_later(data.draw(st.sampled_from(DELAYS)), job)
        else:
            if self._may_stall(pool) and not self._surely_room(pool):
                return
            batch.dispatch(job, timeout=WAIT)
        self._accept(job)
        members.append(job)
        assert batch.total == len(members)

    def _batch_can_finish(self, members: list[ModelJob]) -> bool:
        if any(j.blocked for j in members):
            return False
        return not any(self._may_stall(p) for p in {j.pool for j in members})

    @precondition(lambda self: not self.finalized and bool(self.batches))
    @rule(data=st.data(), body_raises=st.booleans())
    def exit_batch(self, data: st.DataObject, body_raises: bool) -> None:
        """Leaving a batch waits for its jobs only; failures come back as a group, body errors propagate."""
        index = data.draw(st.integers(0, len(self.batches) - 1))
        batch, members = self.batches[index]
        if not self._batch_can_finish(members):
            return
        del self.batches[index]
        if body_raises:
            body_error = RuntimeError("batch body failed")
            result, error = call_in_thread(lambda: batch.__exit__(RuntimeError, body_error, None))
            assert error is None
            assert result is None
            self.cancel_used = True
            for job in members:
                assert job.runs <= 1
                job.may_be_cancelled = True
                self.settled.add(id(job))
            return
        _, error = call_in_thread(lambda: batch.__exit__(None, None, None))
        for job in members:
            assert job.runs == 1, "batch exit returned before one of its jobs had run"
            self.settled.add(id(job))
        failing = sum(1 for j in members if j.kind == "fail")
        if failing:
            assert isinstance(error, BaseExceptionGroup)
            assert len(error.exceptions) == failing
            assert str(error).startswith(f"{failing} of {len(members)} jobs in the batch failed")
        else:
            assert error is None
        assert (batch.done, batch.total) == (len(members), len(members))

    @precondition(lambda self: not self.finalized)
    @rule()
    def stats_and_repr(self) -> None:
        """stats() of each pool agrees with stats(), available_workers, queued_jobs and repr."""
        d = self.dispatcher
        text = repr(d)
        assert text.startswith(f"<Dispatcher {self.prefix!r} open, ")
        for priority in self.configs:
            assert d.total_workers(priority) == self.configs[priority].workers
            assert 0 <= d.available_workers(priority) <= self.configs[priority].workers
            assert d.queued_jobs(priority) >= 0

    @precondition(lambda self: not self.finalized and len(self.jobs) >= 4)
    @rule(cancel=st.booleans())
    def finalize(self, cancel: bool) -> None:
        """finalize drains (or cancels) everything, joins every thread, and nothing is lost."""
        d = self.dispatcher
        if cancel:
            self.cancel_used = True
            try:
                d.finalize(cancel_pending=True, timeout=0.001)  # gated jobs may still run
            except TimeoutError:
                assert d.closed
        for gate in self.all_gates:
            gate.event.set()
        d.finalize(timeout=WAIT)
        self.finalized = True
        self._check_threads_gone()
        for pool, stats in d.stats().items():
            assert (stats.busy, stats.queued, stats.delayed) == (0, 0, 0)
            jobs = [j for j in self.jobs if j.pool == pool]
            ran = [j for j in jobs if j.runs == 1]
            assert all(j.runs <= 1 for j in jobs)
            assert stats.completed + stats.failed == len(ran)
            assert stats.failed == sum(1 for j in ran if j.kind == "fail")
            assert stats.cancelled == len(jobs) - len(ran)
            assert stats.cancelled == sum(1 for j in jobs if not j.runs)
            if not self.cancel_used:
                assert stats.cancelled == 0
        failed_outside_batches = [j for j in self.jobs if j.runs and j.kind == "fail" and j.batch is None]
        assert len(self.failures) == len(failed_outside_batches)
        for batch, members in self.batches:
            self._exit_after_finalize(batch, members)
        self.batches = []

    def _exit_after_finalize(self, batch: Batch, members: list[ModelJob]) -> None:
        _, error = call_in_thread(lambda: batch.__exit__(None, None, None))
        failing = sum(1 for j in members if j.kind == "fail" and j.runs)
        cancelled = sum(1 for j in members if not j.runs)
        if failing:
            assert isinstance(error, BaseExceptionGroup)
            assert len(error.exceptions) == failing
        elif cancelled:
            assert isinstance(error, DispatcherClosed)
            assert str(error) == f"{cancelled} of {len(members)} jobs in the batch were cancelled"
        else:
            assert error is None

    def _check_threads_gone(self) -> None:
        for thread in threading.enumerate():
            if thread.name.startswith(f"{self.prefix}-"):
                thread.join(WAIT)
                assert not thread.is_alive(), f"{thread.name} still runs after finalize"

    @precondition(lambda self: self.finalized)
    @rule(data=st.data())
    def use_after_finalize(self, data: st.DataObject) -> None:
        """After finalize: dispatch, dispatch_later, batch refuse; wait, finalize return; then a new lifetime."""
        d = self.dispatcher
        pool = data.draw(st.sampled_from(sorted(self.configs)))
        before = d.stats()
        with pytest.raises(DispatcherClosed):
            d.dispatch(lambda: None, priority=pool, timeout=0)
        with pytest.raises(DispatcherClosed):
            d.dispatch_later(0, lambda: None, priority=pool)
        with pytest.raises(DispatcherClosed):
            d.batch()
        assert d.wait(timeout=WAIT) is True
        d.finalize(cancel_pending=data.draw(st.booleans()), timeout=0)
        assert d.stats() == before
        self._start(list(self.configs.values()))

    # -- invariants ------------------------------------------------------------

    @invariant()
    def counters_add_up(self) -> None:
        """Per pool: completed+failed+cancelled+busy+queued+delayed == accepted; limits hold."""
        if self.d is None:
            return
        for pool, stats in self.d.stats().items():
            config = self.configs[pool]
            assert stats.workers == config.workers
            assert 0 <= stats.busy <= config.workers
            assert stats.idle == config.workers - stats.busy
            assert stats.queued >= 0
            assert stats.delayed >= 0
            # queued counts jobs handed to a free worker that has not picked them up yet,
            # so the bound is on the whole pool: running + waiting <= workers + queue_size.
            assert stats.busy + stats.queued <= config.workers + config.queue_size
            total = stats.completed + stats.failed + stats.cancelled + stats.busy + stats.queued + stats.delayed
            assert total == self.accepted[pool], f"pool {pool}: {stats} vs {self.accepted[pool]} accepted"
            if not self.cancel_used:
                assert stats.cancelled == 0

    @invariant()
    def no_job_runs_twice(self) -> None:
        """No job ever runs more than once."""
        assert all(j.runs <= 1 for j in self.jobs)

    @invariant()
    def thread_limit(self) -> None:
        """A pool never has more threads than workers; none is left after finalize."""
        if self.d is None:
            return
        names = [t.name for t in threading.enumerate() if t.name.startswith(f"{self.prefix}-p")]
        for pool, config in self.configs.items():
            assert sum(1 for n in names if n.startswith(f"{self.prefix}-p{pool}-")) <= config.workers
        assert self.d.closed is self.finalized

    def teardown(self) -> None:
        for gate in self.all_gates:
            gate.event.set()
        if self.d is not None:
            self.d.finalize(cancel_pending=True, timeout=WAIT)
            for batch, _ in self.batches:
                call_in_thread(lambda b=batch: b.__exit__(None, None, None))
            self._check_threads_gone()


class TestDispatcherModel:
    # Every blocking call inside has its own timeout; the whole run gets more time under the long profile.
    @pytest.mark.timeout(max(60, settings.default.max_examples))
    def test_random_operation_sequences(self) -> None:
        """Random operation sequences keep every job accounted for, respect the limits and never hang."""
        run_state_machine_as_test(DispatcherMachine)
