"""Causal rounds: a barrier waits for the follow-up jobs its own round dispatches, and only for those.

A follow-up is a job dispatched from inside one of the dispatcher's jobs. It
joins the round of the job that dispatched it, so `wait()` (and
`wait_async()`) return only once it is done, transitively. Jobs that other
threads dispatch during the wait still go to the next round.

A barrier that returned early could do so at any moment after the parent
finished; the job that must outlive the barrier checks, with a bounded wait,
that the barrier has not returned (``NOT_BEFORE`` seconds: a check that it
does *not* happen, never a wait for something that must).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from jobdispatch import Dispatcher, PoolConfig
from support import WAIT, Counter, Kit, gated, on_round_closed, wait_for

NOT_BEFORE = 0.3  # seconds a barrier is given to return too early


@pytest.fixture
def round_closed(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set each time a barrier has closed the current round."""
    closed = threading.Event()
    on_round_closed(monkeypatch, closed)
    return closed


def waiter(d: Dispatcher, returned: threading.Event, results: list[bool]) -> threading.Thread:
    def run() -> None:
        results.append(d.wait(WAIT))
        returned.set()

    thread = threading.Thread(target=run, name="test-waiter")
    thread.start()
    return thread


class TestFollowUps:
    def test_follow_up_dispatched_after_the_wait_began_is_waited_for(
        self, kit: Kit, round_closed: threading.Event
    ) -> None:
        """A job dispatches a follow-up after wait() closed its round: wait() returns only after the follow-up."""
        d = kit.dispatcher({0: 2, 1: 2})
        returned = threading.Event()
        seen_returned: list[bool] = []

        def child() -> None:
            seen_returned.append(returned.wait(NOT_BEFORE))

        def parent() -> None:
            assert round_closed.wait(WAIT)
            d.dispatch(child, priority=1)  # another pool, another worker

        d.dispatch(parent, priority=0)
        results: list[bool] = []
        thread = waiter(d, returned, results)
        thread.join(WAIT)
        assert not thread.is_alive()
        assert results == [True]
        assert seen_returned == [False]
        assert d.stats(1).completed == 1

    def test_grandchild_is_waited_for(self, kit: Kit, round_closed: threading.Event) -> None:
        """A follow-up of a follow-up joins the round too."""
        d = kit.dispatcher({0: 2, 1: 2})
        returned = threading.Event()
        seen_returned: list[bool] = []

        def grandchild() -> None:
            seen_returned.append(returned.wait(NOT_BEFORE))

        def child() -> None:
            d.dispatch(grandchild, priority=0)

        def parent() -> None:
            assert round_closed.wait(WAIT)
            d.dispatch(child, priority=1)

        d.dispatch(parent, priority=0)
        results: list[bool] = []
        thread = waiter(d, returned, results)
        thread.join(WAIT)
        assert not thread.is_alive()
        assert (results, seen_returned) == ([True], [False])

    @pytest.mark.parametrize("how", ["dispatch_later", "executor-submit", "executor-map", "blocking"])
    def test_follow_ups_by_every_means_are_waited_for(self, kit: Kit, round_closed: threading.Event, how: str) -> None:
        """A follow-up joins its parent's round whether it was delayed, submitted or sent through a view."""
        d = kit.dispatcher({0: 2, 1: 2})
        returned = threading.Event()
        seen_returned: list[bool] = []

        def child() -> None:
            seen_returned.append(returned.wait(NOT_BEFORE))

        def parent() -> None:
            assert round_closed.wait(WAIT)
            if how == "dispatch_later":
                d.dispatch_later(0.01, child, priority=1)
            elif how == "executor-submit":
                d.executor(1).submit(child)
            elif how == "executor-map":
                d.executor(1).map(lambda _: child(), [0])
            else:
                d.dispatch(child, priority=1, timeout=WAIT)

        d.dispatch(parent, priority=0)
        results: list[bool] = []
        thread = waiter(d, returned, results)
        thread.join(WAIT)
        assert not thread.is_alive()
        assert (results, seen_returned) == ([True], [False])

    def test_another_threads_dispatch_during_the_wait_is_not_waited_for(
        self, kit: Kit, round_closed: threading.Event
    ) -> None:
        """A job that another thread dispatches while wait() runs belongs to the next round."""
        d = kit.dispatcher({0: 2})
        gate = kit.gate()
        release_first = kit.gate()
        d.dispatch(gated(release_first))
        results: list[bool] = []
        returned = threading.Event()
        thread = waiter(d, returned, results)
        assert round_closed.wait(WAIT)
        d.dispatch(gated(gate))  # from this thread, not from a job: the next round
        release_first.set()
        thread.join(WAIT)
        assert not thread.is_alive(), "wait() waited for a job another thread dispatched during the wait"
        assert results == [True]
        assert d.stats(0).busy == 1  # the other thread's job still runs
        gate.set()

    def test_steady_stream_from_jobs_of_the_next_round_does_not_hold_the_barrier(self, kit: Kit) -> None:
        """Follow-ups of jobs dispatched after the call do not hold the barrier, however many they are."""
        d = kit.dispatcher({0: 2})
        stop = threading.Event()
        chained = Counter()

        def chain() -> None:
            chained()
            if not stop.is_set():
                d.dispatch(chain)

        first = kit.gate()
        d.dispatch(gated(first))
        results: list[bool] = []
        returned = threading.Event()
        thread = waiter(d, returned, results)
        wait_for(lambda: d._closed_rounds, "the barrier to close its round")
        d.dispatch(chain)  # another thread's job: a chain of the next round
        wait_for(lambda: chained.value >= 5, "the chain to run")
        first.set()
        thread.join(WAIT)
        stop.set()
        assert not thread.is_alive()
        assert results == [True]

    def test_follow_up_into_own_full_pool_runs_inline_and_counts(self, kit: Kit) -> None:
        """A follow-up into its own full pool runs in the dispatching worker, inside the round, no deadlock."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        ran = Counter()

        def parent() -> None:
            d.dispatch(ran)  # the only worker is this one: the follow-up runs here

        d.dispatch(parent)
        assert d.wait(WAIT)
        assert ran.value == 1


class TestFanOut:
    def test_recursive_fan_out_is_done_when_wait_returns(self, kit: Kit) -> None:
        """A 3-level fan-out (2 workers, no queue) has finished every job when wait() returns, 50 times in a row."""
        for attempt in range(50):
            d = kit.dispatcher([PoolConfig(0, 2, queue_size=0)], name=f"test-fan-{attempt}")
            done = Counter()

            def node(depth: int, d: Dispatcher = d, done: Counter = done) -> None:
                if depth < 3:
                    for _ in range(2):
                        d.dispatch(node, depth + 1)
                done()

            d.dispatch(node, 0)
            assert d.wait(WAIT)
            assert done.value == 1 + 2 + 4 + 8, f"run {attempt}: wait() returned after {done.value} of 15 jobs"
            d.finalize(timeout=WAIT)

    def test_tree_walk_across_pools(self, kit: Kit) -> None:
        """Directory jobs on one pool dispatch file jobs on another and subdirectory jobs on their own."""
        d = kit.dispatcher({0: 2, 1: 3})
        files = Counter()

        def directory(depth: int) -> None:
            for _ in range(3):
                d.dispatch(files, priority=1)
            if depth < 3:
                for _ in range(2):
                    d.dispatch(directory, depth + 1, priority=0)

        for _ in range(2):
            d.dispatch(directory, 0, priority=0)
            assert d.wait(WAIT)
            expected = 3 * (1 + 2 + 4 + 8)
            assert files.value == expected
            files.value = 0


class TestBatchFollowUps:
    def test_batch_follow_ups_keep_the_batch_open_and_join_its_errors(self, kit: Kit) -> None:
        """Follow-ups sent through batch.dispatch from a batch job are waited for; their failures join the group."""
        d = kit.dispatcher({0: 2, 1: 2})
        returned = threading.Event()
        seen_returned: list[bool] = []

        def child() -> None:
            seen_returned.append(returned.wait(NOT_BEFORE))
            raise ValueError("child failed")

        with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:

            def parent() -> None:
                batch.dispatch(child, priority=1)

            batch.dispatch(parent, priority=0)
        returned.set()
        assert seen_returned == [False]
        assert [str(e) for e in caught.value.exceptions] == ["child failed"]
        assert (batch.total, batch.done) == (2, 2)

    def test_follow_up_with_the_dispatchers_own_dispatch_joins_the_dispatchers_round(
        self, kit: Kit, round_closed: threading.Event
    ) -> None:
        """From a batch job, dispatcher.dispatch is not part of the batch, but wait() waits for it."""
        d = kit.dispatcher({0: 2, 1: 2})
        gate = kit.gate()
        started = threading.Event()
        with d.batch() as batch:
            batch.dispatch(lambda: d.dispatch(gated(gate, started), priority=1), priority=0)
        assert started.wait(WAIT)  # the batch ended while its parent's follow-up still runs
        assert batch.done == 1
        results: list[bool] = []
        returned = threading.Event()
        thread = waiter(d, returned, results)
        assert round_closed.wait(WAIT)
        assert not returned.wait(NOT_BEFORE)
        gate.set()
        thread.join(WAIT)
        assert results == [True]


class TestWaitAsync:
    def test_wait_async_waits_for_follow_ups(self, kit: Kit, round_closed: threading.Event) -> None:
        """wait_async() waits for follow-ups dispatched after it began, like wait()."""
        d = kit.dispatcher({0: 2, 1: 2})
        returned = threading.Event()
        seen_returned: list[bool] = []

        def child() -> None:
            seen_returned.append(returned.wait(NOT_BEFORE))

        def parent() -> None:
            assert round_closed.wait(WAIT)
            d.dispatch(child, priority=1)

        async def main() -> bool:
            d.dispatch(parent, priority=0)
            result = await d.wait_async(WAIT)
            returned.set()
            return result

        assert asyncio.run(main()) is True
        assert seen_returned == [False]

    def test_wait_async_timeout_leaves_no_waiter_behind(self, kit: Kit) -> None:
        """wait_async(timeout) that times out forgets its waiters at once."""
        d = kit.dispatcher({0: 1})
        gate = kit.gate()
        d.dispatch(gated(gate))

        async def poll() -> list[bool]:
            return [await d.wait_async(0.001) for _ in range(20)]

        assert asyncio.run(poll()) == [False] * 20
        pool = d._pools[0]
        generations: list[Any] = [g for r in d._closed_rounds for g in r.generations] + [pool._generation]
        assert sum(len(g.waiters) for g in generations) == 0
        gate.set()
