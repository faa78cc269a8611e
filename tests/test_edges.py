"""Edges of the core: capacity while finalize drains, the lifecycle read once, lost places, lifetimes.

Each test forces its case deterministically: gates and events, a trace
function that pauses a thread at a chosen line (a test driver, never a hook
in the library), or a child process for fork.
"""

from __future__ import annotations

import enum
import gc
import os
import subprocess
import sys
import textwrap
import threading
import traceback
import types
import weakref
from typing import Any

import pytest

from jobdispatch import Dispatcher, DispatcherClosed, DispatcherError, PoolConfig
from support import WAIT, Counter, Kit, gated, wait_for

NOT_BEFORE = 0.3  # seconds something that must not happen is given to happen


class TestCapacityWhileDraining:
    def test_waking_blocked_producers_adds_no_room(self, kit: Kit) -> None:
        """finalize() wakes producers blocked on a full pool without making room: busy + queued stays in bounds."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0), PoolConfig(1, 1, queue_size=0)])
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started), priority=0)
        assert started.wait(WAIT)
        entered = threading.Event()
        follow_up_ran = Counter()

        def job_blocked_on_pool_0() -> None:
            d.dispatch(follow_up_ran, priority=0)  # pool 0 is full: blocks (another pool's job)
            entered.set()

        d.dispatch(job_blocked_on_pool_0, priority=1)
        pool = d._pools[0]
        wait_for(lambda: len(pool._room_waiters) == 1, "the job to block on pool 0")
        finalizer = threading.Thread(target=d.finalize, kwargs={"timeout": WAIT}, name="test-finalizer")
        finalizer.start()
        wait_for(lambda: d.closed, "finalize to begin")
        assert not entered.wait(NOT_BEFORE), "the blocked job got into a full pool when finalize began"
        stats = d.stats(0)
        assert stats.busy + stats.queued <= 1
        gate.set()
        finalizer.join(WAIT)
        assert not finalizer.is_alive()
        assert entered.is_set()
        assert follow_up_ran.value == 1

    def test_outsider_blocked_on_a_full_pool_is_refused_when_finalize_begins(self, kit: Kit) -> None:
        """A producer blocked on a full pool gets DispatcherClosed once finalize begins, with no chained queue.Empty."""
        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started))
        assert started.wait(WAIT)
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                d.dispatch(lambda: None)
            except DispatcherClosed as error:
                errors.append(error)

        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        wait_for(lambda: len(d._pools[0]._room_waiters) == 1, "the producer to block")
        finalizer = threading.Thread(target=d.finalize, kwargs={"timeout": WAIT}, name="test-finalizer")
        finalizer.start()
        producer.join(WAIT)
        assert not producer.is_alive()
        (error,) = errors
        assert "Empty" not in "".join(traceback.format_exception(error))  # no internal queue.Empty chained
        gate.set()
        finalizer.join(WAIT)


class TestLifecycleReadOnce:
    def test_follow_up_as_finalize_begins_is_accepted(self, kit: Kit) -> None:
        """A job that dispatches just as finalize() changes state is accepted (it may, while finalize drains)."""
        d = kit.dispatcher({0: 2})
        paused, resume = threading.Event(), threading.Event()
        outcome: list[object] = []

        def job() -> None:
            assert paused.wait(WAIT)
            try:
                d.dispatch(lambda: None)
                outcome.append("accepted")
            except DispatcherClosed as error:
                outcome.append(error)
            finally:
                resume.set()

        d.dispatch(job)

        def pause_after_first_state_write(frame: types.FrameType, event: str, arg: Any) -> Any:
            if frame.f_code.co_name != "finalize":
                return None

            def local(frame: types.FrameType, event: str, arg: Any) -> Any:
                if event == "line" and not paused.is_set() and frame.f_locals["self"]._state.value != "open":
                    paused.set()  # the first line after the state left OPEN
                    resume.wait(WAIT)
                return local

            return local

        previous_trace = sys.gettrace()  # coverage's tracer, if any: put back after
        sys.settrace(pause_after_first_state_write)
        try:
            d.finalize(timeout=WAIT)
        finally:
            sys.settrace(previous_trace)
        assert outcome == ["accepted"]
        assert d.stats(0).completed == 2


class TestLostPlaces:
    def test_recursion_error_inside_dispatch_loses_no_place(self, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
        """A RecursionError inside dispatch(), even in its own clean-up, and kept by the caller, costs no place."""
        from jobdispatch._pool import Pool

        d = kit.dispatcher([PoolConfig(0, 1, queue_size=0)])  # one place
        real_reserve, real_failed = Pool._reserve_worker_locked, Pool.enqueue_failed
        strikes = {"reserve": 1, "clean-up": 1}

        def reserve(pool: Pool) -> Any:
            if strikes["reserve"]:
                strikes["reserve"] -= 1
                raise RecursionError("maximum recursion depth exceeded")  # as at the limit
            return real_reserve(pool)

        def failed(pool: Pool, *args: Any) -> Any:
            if strikes["clean-up"]:
                strikes["clean-up"] -= 1
                raise RecursionError("maximum recursion depth exceeded")  # the clean-up call hits it too
            return real_failed(pool, *args)

        monkeypatch.setattr(Pool, "_reserve_worker_locked", reserve)
        monkeypatch.setattr(Pool, "enqueue_failed", failed)
        kept: list[RecursionError] = []
        try:
            d.dispatch(lambda: None)
        except RecursionError as error:
            kept.append(error)  # its traceback keeps the frames of dispatch() alive
        assert len(kept) == 1
        gate = kit.gate()
        started = threading.Event()
        d.dispatch(gated(gate, started), timeout=WAIT)  # PoolFull if the place went with the kept frames
        assert started.wait(WAIT)
        gate.set()
        assert d.wait(WAIT)


class TestFork:
    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_job_forking_while_finalize_drains_gets_a_closed_dispatcher_in_the_child(self) -> None:
        """A job that forks during the drain: in the child, dispatch and wait raise DispatcherClosed."""
        script = textwrap.dedent(
            """
            import os, sys, threading, warnings
            from jobdispatch import Dispatcher, DispatcherClosed

            d = Dispatcher({0: 2}, name="parent")
            ready = threading.Event()
            result = {}

            def job():
                while not d.closed:
                    ready.wait(0.001)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pid = os.fork()
                if pid == 0:
                    out = []
                    for action in (lambda: d.dispatch(lambda: None), lambda: d.wait(1)):
                        try:
                            action()
                            out.append("accepted")
                        except DispatcherClosed:
                            out.append("closed")
                        except Exception as error:
                            out.append(type(error).__name__)
                    print("child:", *out, flush=True)
                    os._exit(0)
                os.waitpid(pid, 0)

            d.dispatch(job)
            d.finalize(timeout=10)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "child: closed closed"


class Size(enum.IntEnum):
    SMALL = 0
    LARGE = 1


class TestErrorTextsOnlyWhenRaised:
    def test_intenum_priority_builds_no_repr(self, kit: Kit) -> None:
        """A Job whose priority() returns an IntEnum is dispatched without computing its repr."""
        reprs = Counter()

        class BigJob:
            def do(self) -> None:
                pass

            def priority(self) -> Size:
                return Size.LARGE

            def __repr__(self) -> str:
                reprs()
                return "<BigJob>"

        d = kit.dispatcher({Size.SMALL: 1, Size.LARGE: 1})
        for _ in range(5):
            d.dispatch(BigJob())
        assert d.wait(WAIT)
        assert reprs.value == 0
        assert d.stats(Size.LARGE).completed == 5

    def test_repr_names_intenum_pools(self, kit: Kit) -> None:
        """The repr of a dispatcher names IntEnum priorities by name."""
        d = kit.dispatcher([PoolConfig(Size.SMALL, 1), PoolConfig(Size.LARGE, 2)], name="test-enum")
        assert repr(d) == "<Dispatcher 'test-enum' open, 2 pools: SMALL 0/1 busy; LARGE 0/2 busy>"


class TestDroppedDispatchers:
    def test_on_error_bound_method_does_not_keep_a_dropped_dispatcher_alive(self) -> None:
        """A dispatcher whose on_error is a method of its owner is collected with its owner; its threads end."""

        class Service:
            def __init__(self) -> None:
                self.dispatcher = Dispatcher(2, name="test-service", on_error=self.failed)

            def failed(self, job: object, error: BaseException) -> None:
                pass

        service = Service()
        service.dispatcher.dispatch(lambda: None)
        assert service.dispatcher.wait(WAIT)
        reference = weakref.ref(service.dispatcher)
        del service
        gc.collect()
        assert reference() is None
        for thread in threading.enumerate():
            if thread.name.startswith("test-service"):
                thread.join(WAIT)
                assert not thread.is_alive()

    def test_live_registry_holds_no_dispatcher(self) -> None:
        """The exit hook's registry of open dispatchers keeps none of them alive, and forgets the collected ones."""
        from jobdispatch import _dispatcher

        d = Dispatcher(1, name="test-registry")
        reference = weakref.ref(d)
        assert d in _dispatcher._live()
        del d
        gc.collect()
        assert reference() is None
        assert reference not in [weakref.ref(x) for x in _dispatcher._live()]
        assert all(ref() is not None for ref in _dispatcher._live_dispatchers.values())  # pruned


class TestBatchInOwnJob:
    def test_batch_entered_in_own_job_after_creation_outside_still_reports_failures(self, kit: Kit) -> None:
        """A batch opened outside and its failing job: the failure reaches the ExceptionGroup, never lost."""
        d = kit.dispatcher(2)
        with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:
            batch.dispatch(lambda: 1 / 0, name="divide")
        (error,) = caught.value.exceptions
        assert isinstance(error, ZeroDivisionError)
        assert error.__notes__ == ["jobdispatch: raised by job divide in pool 0"]

    def test_batch_opened_inside_own_job_is_refused(self, kit: Kit) -> None:
        """batch() inside one of the dispatcher's own jobs raises DispatcherError before anything is dispatched."""
        d = kit.dispatcher(2)
        errors: list[BaseException] = []

        def job() -> None:
            try:
                d.batch()
            except DispatcherError as error:
                errors.append(error)

        d.dispatch(job)
        assert d.wait(WAIT)
        assert len(errors) == 1


class TestFastPath:
    def test_plain_functions_methods_and_known_job_classes_skip_routing(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """dispatch() routes a function, a bound method and a Job of a class seen before inline, on every pool."""
        routed = self._count_routes(monkeypatch)

        class Job:
            def do(self) -> None:
                pass

            def priority(self) -> int:
                return 0

            def method(self) -> None:
                pass

        for config in ({0: 2}, {0: 2, 1: 2}):
            d = kit.dispatcher(config)
            d.dispatch(Job())  # the first Job of its class is routed (and then known)
            before = routed.value
            for _ in range(5):
                d.dispatch(lambda: None, priority=0)
                d.dispatch(Job().method, priority=0)
                d.dispatch(Job())
            assert routed.value == before, f"{routed.value - before} dispatches were routed with {config}"
            assert d.wait(WAIT)

    @staticmethod
    def _known_job_class(d: Dispatcher) -> type:
        """A Job class for pool 0 that ``d`` has seen, so that it dispatches its instances inline.

        An instance made with ``fail=True`` raises in ``priority()``.
        """

        class Job:
            def __init__(self, fail: bool = False) -> None:
                self.fail = fail
                self.ran_in = ""

            def do(self) -> None:
                self.ran_in = threading.current_thread().name

            def priority(self) -> int:
                if self.fail:
                    raise ValueError("no priority today")
                return 0

        first = Job()
        d.dispatch(first)
        assert d.wait(WAIT)
        assert first.ran_in
        return Job

    @staticmethod
    def _count_routes(monkeypatch: pytest.MonkeyPatch) -> Counter:
        routed = Counter()
        real_route = Dispatcher._route

        def counting_route(self: Dispatcher, *args: Any) -> Any:
            routed()
            return real_route(self, *args)

        monkeypatch.setattr(Dispatcher, "_route", counting_route)
        return routed

    def test_an_instance_whose_priority_is_a_number_goes_where_it_says(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An instance of a known Job class whose priority is a plain number, not the method, is routed by it."""
        d = kit.dispatcher({0: 1, 1: 1})
        job = self._known_job_class(d)()
        job.priority = 1
        routed = self._count_routes(monkeypatch)
        d.dispatch(job)
        assert routed.value == 1  # the number is read by the full routing
        assert d.wait(WAIT)
        assert d.stats(1).completed == 1
        assert "-p1" in job.ran_in

    def test_an_instance_whose_priority_is_another_callable_is_routed_by_what_it_returns(self, kit: Kit) -> None:
        """A callable set on the instance as its priority is called, as the class's method would be."""
        d = kit.dispatcher({0: 1, 1: 1})
        job = self._known_job_class(d)()
        job.priority = lambda: 1
        d.dispatch(job)
        wrong = self._known_job_class(d)()
        wrong.priority = lambda: "high"
        with pytest.raises(TypeError, match="must be an int, got 'high'"):
            d.dispatch(wrong)
        assert d.wait(WAIT)
        assert "-p1" in job.ran_in
        assert d.stats(0).completed + d.stats(1).completed == 3  # the two first instances and job

    def test_a_failing_priority_of_a_known_job_class_is_raised_with_a_note(
        self, kit: Kit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """priority() raising on the inline path raises its error, named, and dispatches nothing."""
        d = kit.dispatcher({0: 1, 1: 1})
        cls = self._known_job_class(d)
        routed = self._count_routes(monkeypatch)
        with pytest.raises(ValueError, match="no priority today") as raised:
            d.dispatch(cls(fail=True))
        assert routed.value == 0  # raised on the inline path
        assert any("priority(), called to choose its pool" in note for note in raised.value.__notes__)
        assert d.wait(WAIT)
        assert d.stats(0).completed == 1  # the first instance alone
