"""The timer behind `Dispatcher.dispatch_later`, and the `DelayedJob` handles it returns.

One thread per dispatcher, started with the first delayed job, sleeps until the earliest
deadline in a heap and hands each due job to its pool without blocking. A
delayed job therefore never holds up another delayed job, a dispatch, or a
pool other than its own (go-dispatcher slept inside its only dispatch loop).

Only the timer thread counts a delayed job that is cancelled before it was
handed to its pool. Whoever cancels (`DelayedJob.cancel`, `finalize`, a
batch, the exit hook) marks the job under the timer's lock and leaves a
request for the timer: one store and one C call, so that a Ctrl-C in the
cancelling thread leaves the job either untouched or cancelled, and counted
by the timer either way.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import threading
import time
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import TYPE_CHECKING

from ._config import LONGEST_WAIT, WAIT_SLICE
from ._errors import DispatcherClosed
from ._job import Named
from ._outcome import CancelledBeforeStart, logger, safe_repr
from ._rounds import role

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Callable

    from ._batch import Batch
    from ._pool import Pool, _Item
    from ._rounds import Generation

__all__ = ["DelayedJob", "Run", "Scheduler", "describe_job", "join_thread"]

_YIELD_EVERY = 0.001  # seconds between two GIL hand-overs by a busy producer


class _State(enum.Enum):
    """What became of a delayed job; changed under the timer's lock."""

    PENDING = "pending"  # not started; cancel() can still win
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class _Where(enum.Enum):
    """Where a delayed job is; changed by the timer thread alone."""

    HEAP = "heap"  # waits for its time in the heap
    POPPED = "popped"  # taken from the heap, about to be handed over
    HANDED = "handed"  # handed to its pool (waiting for room, queued, or running)
    COUNTED = "counted"  # cancelled and counted by the timer


# Module constants: looking a member up on an Enum class costs ~70 ns.
_PENDING, _RUNNING, _DONE, _CANCELLED = _State.PENDING, _State.RUNNING, _State.DONE, _State.CANCELLED
_HEAP, _POPPED, _HANDED, _COUNTED = _Where.HEAP, _Where.POPPED, _Where.HANDED, _Where.COUNTED


class DelayedJob:
    """A job scheduled by `Dispatcher.dispatch_later`: when it is due, and a way to cancel it.

    The handle holds the job only until the job is over: keeping a handle
    keeps neither the job nor what it refers to alive.

    Example:
        ```python
        reminder = dispatcher.dispatch_later(30, send_reminder)
        if answered:
            reminder.cancel()
        ```
    """

    __slots__ = ("__weakref__", "_ack", "_due", "_fn", "_item", "_label", "_pool", "_scheduler", "_state", "_where")

    def __init__(self, scheduler: Scheduler, due: float, fn: Callable[[], object], label: str) -> None:
        self._scheduler = scheduler
        self._due = due
        self._fn: Callable[[], object] | None = fn
        self._label = label
        self._state = _PENDING
        self._where = _HEAP
        self._pool: Pool | None = None  # set by Scheduler.push_locked
        self._item: _Item | None = None  # the same; dropped once the job is over
        self._ack: threading.Event | None = None  # set by the timer once it handled a cancel

    @property
    def due(self) -> float:
        """The `time.monotonic` time at which the job is due."""
        return self._due

    def cancel(self) -> bool:
        """Cancel the job unless it has started.

        A cancelled job never runs. It is counted in ``stats().cancelled`` and
        stops counting for `Dispatcher.wait`, `Dispatcher.finalize` and its
        batch by the time this returns; only a job that had already reached
        its pool's queue is counted when a worker reaches it, and a job
        cancelled from a batch's progress callback is counted once that
        callback has returned (counting it may call the callback again).

        Returns:
            ``True`` if the job was cancelled now; ``False`` if it is running,
            done, or was cancelled already.
        """
        scheduler = self._scheduler
        ack = threading.Event()
        with scheduler._lock:
            if self._state is not _PENDING or scheduler._forked:
                return False
            # Wake the timer first (it runs only once the lock is free); then
            # two stores and one C call, after which Ctrl-C may strike: the
            # job is either untouched, or cancelled with its request queued.
            scheduler._condition.notify_all()
            timer = scheduler._thread
            self._ack = ack
            self._state = _CANCELLED
            self._fn = None
            scheduler._requests.append(self)
        if timer is None:
            return True  # no timer: the job was handed over, and the worker counts it
        if role.reporting:
            # A batch's progress callback: counting the job may need that
            # batch's progress lock, which this thread holds. The timer
            # counts it once the callback returns.
            return True
        if timer is threading.current_thread():
            scheduler._serve_requests()  # a job run by the timer itself cancels another
        else:
            # In slices (see WAIT_SLICE): the timer may be running a job
            # itself (its pool has no thread), or a batch's callback.
            while not ack.wait(WAIT_SLICE):
                pass
        return True

    def cancelled(self) -> bool:
        """Whether the job was cancelled (by `cancel`, `finalize`, its batch or interpreter exit)."""
        return self._state is _CANCELLED

    def done(self) -> bool:
        """Whether the job is over: it ran (and returned or raised), or it was cancelled."""
        return self._state is _DONE or self._state is _CANCELLED

    def __repr__(self) -> str:
        state = self._state
        if state is _PENDING:
            left = self._due - time.monotonic()
            when = f"due in {left:.3g} s" if left > 0 else f"due {-left:.3g} s ago"
            return f"<jobdispatch.DelayedJob {self._label} {when}>"
        return f"<jobdispatch.DelayedJob {self._label} {state.value}>"

    def _drop(self) -> None:
        """Mark the job cancelled: its pool dropped it before it started (``finalize(cancel_pending=True)``)."""
        with self._scheduler._lock:
            if self._state is _PENDING:
                self._state = _CANCELLED
            self._fn = self._item = self._pool = None

    def _start(self) -> None:
        """Run the job unless it was cancelled."""
        fn = self._claim()
        try:
            fn()
        finally:
            self._state = _DONE

    def _claim(self) -> Callable[[], object]:
        """Mark the job running and return it, unless it was cancelled (`CancelledBeforeStart`).

        A pool that runs its jobs elsewhere (an engine) claims the job as it
        sends it, and calls `_finish` once the engine is done with it.
        """
        with self._scheduler._lock:
            state, fn = self._state, self._fn
            # The worker holds the job from here, or drops it: either way the
            # handle lets go of it.
            self._fn = self._item = self._pool = None
            if state is not _PENDING:
                raise CancelledBeforeStart
            self._state = _RUNNING
        assert fn is not None
        return fn

    def _finish(self) -> None:
        """Mark a claimed job over."""
        self._state = _DONE


class Run:
    """What the pool runs for a delayed job: the job, unless it was cancelled first."""

    __slots__ = ("handle",)

    def __init__(self, handle: DelayedJob) -> None:
        self.handle = handle

    def __call__(self) -> None:
        self.handle._start()

    def cancel_unstarted(self) -> None:
        """Tell the handle that its pool dropped the job before it started."""
        self.handle._drop()

    def __repr__(self) -> str:
        return repr(self.handle)


def describe_job(job: object) -> str:
    """Return a short label for a delayed job, cheap to make: its name, a function's name, or the job's class."""
    if type(job) is Named:
        return job.name
    if isinstance(job, (FunctionType, BuiltinFunctionType, MethodType)):
        return job.__qualname__
    return f"{type(job).__qualname__} object"


class _CancelWhere:
    """A request to cancel every pending delayed job pushed so far, or those of one batch."""

    __slots__ = ("batch", "before")

    def __init__(self, before: int, batch: object | None) -> None:
        self.before = before  # the push order of the first job left alone
        self.batch = batch

    def chooses(self, order: int, handle: DelayedJob) -> bool:
        if order >= self.before:
            return False
        return self.batch is None or (handle._item is not None and handle._item[3] is self.batch)


class Scheduler:
    """A heap of delayed jobs and the one thread that releases them."""

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        # `with self._lock`, never `with self._condition`: Condition.__exit__ is
        # Python code, where Ctrl-C can strike and leave the lock held. And
        # notify_all, never notify: a Ctrl-C inside Condition.notify, after it
        # released a waiter's lock and before it dropped that waiter from the
        # list, leaves a stale waiter that the next notify() would wake
        # instead of the timer (CPython handles only the case where the stale
        # lock is unlocked).
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        # Entries: (due, push order, handle). A job cancelled in the heap stays
        # there, counted, until it comes up or the heap is compacted: ``_dead``
        # such entries.
        self._heap: list[tuple[float, int, DelayedJob]] = []
        self._dead = 0
        self._order = itertools.count()
        self._requests: list[DelayedJob | _CancelWhere] = []  # cancellations for the timer to count
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._at_exit = False  # the interpreter exits: refuse new delayed jobs
        self._forked = False
        self._orphans: list[threading.Thread] = []  # timers whose start() Ctrl-C interrupted
        self._next_yield = 0.0

    def push_locked(
        self,
        pool: Pool,
        generation: Generation,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        handle: DelayedJob,
    ) -> None:
        """Count a delayed job in ``pool`` and put it in the heap.

        The caller holds the pool's lock. Every call comes first and the heap
        push, one C call, last, with the counting in between done inline:
        Ctrl-C strikes only at a call, so it leaves the job either nowhere or
        both counted and in the heap, never counted alone.

        Raises:
            DispatcherClosed: The interpreter is exiting: delayed jobs are
                cancelled then, so none is accepted.
            RuntimeError: The timer thread cannot start (a thread limit).
        """
        with self._lock:
            if self._at_exit:
                raise DispatcherClosed("cannot delay a job at interpreter exit: delayed jobs are cancelled then")
            if self._thread is None:
                self._start_locked()
            heap = self._heap
            if len(heap) == self._dead or handle._due < heap[0][0]:
                self._condition.notify_all()  # the timer sleeps past ``due``: it must look again
            order = next(self._order)
            handle._pool = pool
            handle._item = (job, fn, generation, batch, context)
            generation.pending += 1
            pool._delayed += 1
            heapq.heappush(heap, (handle._due, order, handle))

    def _start_locked(self) -> None:
        # Known only once started: if Ctrl-C interrupts start(), the next
        # delayed job starts a timer again (and a half-started one sees it
        # is not the timer, and leaves).
        thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._stopping = False
        try:
            thread.start()
        except Exception as error:
            # It never started (a thread limit): refused, nothing counted.
            raise RuntimeError(f"cannot start the timer thread for delayed jobs: {error}") from error
        except BaseException:
            self._orphans.append(thread)  # stop() joins it if it did start
            raise
        self._thread = thread

    def runs_here(self) -> bool:
        """Whether the calling thread is the timer thread."""
        thread = self._thread
        return thread is not None and thread is threading.current_thread()

    def yield_if_overdue(self) -> None:
        """Hand the GIL over if jobs are overdue, at most once a millisecond.

        A producer that schedules a burst of delayed jobs keeps the GIL from
        the timer thread for up to the switch interval (5 ms); yielding now
        and then lets the timer release what is due on time, while the burst
        stays fast.
        """
        now = time.monotonic()
        if now < self._next_yield:
            return
        try:
            first_due = self._heap[0][0]  # read without the lock: the timer may empty the heap meanwhile
        except IndexError:
            return
        if first_due <= now:
            self._next_yield = now + _YIELD_EVERY
            time.sleep(0)

    def cancel_all(self) -> None:
        """Cancel every delayed job not handed to its pool yet; the timer counts them at once."""
        self._cancel_where(None)

    def cancel_batch(self, batch: object) -> None:
        """Cancel the delayed jobs of one batch; the timer counts them at once."""
        self._cancel_where(batch)

    def refuse_at_exit(self) -> int:
        """Refuse new delayed jobs from now on, and cancel the pending ones: the interpreter exits.

        Returns:
            How many delayed jobs it cancelled.
        """
        with self._lock:
            self._at_exit = True
            pending = sum(1 for entry in self._heap if entry[2]._state is _PENDING)
        self.cancel_all()
        return pending

    def _cancel_where(self, batch: object | None) -> None:
        with self._lock:
            if self._thread is None:
                return  # no timer, so no delayed job in the heap
            # Wake the timer first (it runs only once the lock is free), then
            # queue the request, one C call: Ctrl-C leaves either no request
            # or the whole of it, never a half-cancelled heap.
            self._condition.notify_all()
            self._requests.append(_CancelWhere(next(self._order), batch))

    def stop(self, timeout: float | None) -> bool:
        """Let the thread exit once no delayed job is left; ``False`` on timeout."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for orphan in list(self._orphans):
            join_thread(orphan, deadline)
            if not orphan.is_alive():
                self._orphans.remove(orphan)
        if thread is None:
            return True
        while True:
            step = time.monotonic() + _STOP_RENOTIFY
            join_thread(thread, step if deadline is None else min(step, deadline))
            if not thread.is_alive():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            # Belt and braces: re-assert the stop and wake the timer again.
            with self._lock:
                self._stopping = True
                self._condition.notify_all()

    def forget_after_fork(self) -> None:
        """Drop the parent's timer state in a forked child."""
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._heap = []
        self._dead = 0
        self._requests = []
        self._thread = None
        self._stopping = True
        self._forked = True

    # -- the timer thread --------------------------------------------------

    def _run(self) -> None:
        with self._lock:
            # push_locked holds the lock from start() until it records the
            # thread: a thread that is not recorded by then was started by a
            # push that Ctrl-C interrupted, and leaves (the next push starts a
            # timer again).
            if self._thread is not threading.current_thread():
                return
        while True:
            try:
                if not self._step():
                    return
            except BaseException as error:
                # A defect, not a job's failure (those never reach here): the
                # timer must outlive it, or every delayed job after it would
                # wait for ever.
                with contextlib.suppress(BaseException):
                    logger.error(
                        "the timer thread of %s hit an unexpected error; it goes on",
                        self._thread_name,
                        exc_info=error,
                    )
                del error
                time.sleep(_PAUSE_AFTER_ERROR)  # no busy loop if the error repeats

    def _step(self) -> bool:
        """Sleep until something is due or asked for, then release and count; ``False``: exit.

        Everything taken from the heap lives in this frame only, so nothing
        of a job outlives its hand-over while the timer sleeps.
        """
        with self._lock:
            while not self._requests:
                heap = self._heap
                if len(heap) == self._dead:  # nothing to wait for
                    if self._stopping:
                        self._thread = None
                        self._heap, self._dead = [], 0
                        return False
                    self._condition.wait()
                    continue
                delay = heap[0][0] - time.monotonic()
                if delay <= 0:
                    break
                self._condition.wait(min(delay, LONGEST_WAIT))
            popped = self._pop_due_locked(time.monotonic())
            requests, self._requests = self._requests, []
        try:
            self._count_cancelled(requests)
        finally:
            self._release(popped)
            self._acknowledge(requests)
        return True

    def _release(self, popped: list[DelayedJob]) -> None:
        """Hand each due job to its pool, or count it if it was cancelled meanwhile."""
        for handle in popped:
            try:
                if handle._state is _CANCELLED:
                    handle._where = _COUNTED
                    self._count_one(handle)
                else:
                    handle._where = _HANDED
                    pool, item = handle._pool, handle._item
                    assert pool is not None
                    assert item is not None
                    pool.submit_due(item)
                    del pool, item
            except BaseException as error:
                self._lost(handle, error)

    def _pop_due_locked(self, now: float) -> list[DelayedJob]:
        heap = self._heap
        popped: list[DelayedJob] = []
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            if handle._where is _COUNTED:
                self._dead -= 1
            else:
                handle._where = _POPPED
                popped.append(handle)
        return popped

    def _serve_requests(self) -> None:
        """Count the cancellations asked for so far (the timer calls this, or a job it runs)."""
        with self._lock:
            requests, self._requests = self._requests, []
        self._count_cancelled(requests)
        self._acknowledge(requests)

    def _count_cancelled(self, requests: list[DelayedJob | _CancelWhere]) -> None:
        """Count every job that ``requests`` cancelled; runs in the timer thread."""
        if not requests:
            return
        in_heap: list[DelayedJob] = []
        handed: list[DelayedJob] = []
        with self._lock:
            wide = [request for request in requests if isinstance(request, _CancelWhere)]
            if wide:
                for _, order, handle in self._heap:
                    if handle._state is _PENDING and any(request.chooses(order, handle) for request in wide):
                        handle._state = _CANCELLED
                        handle._fn = None
                    if handle._state is _CANCELLED and handle._where is _HEAP:
                        in_heap.append(handle)
            for request in requests:
                if isinstance(request, DelayedJob):
                    if request._where is _HEAP and not wide:
                        in_heap.append(request)
                    elif request._where is _HANDED:
                        handed.append(request)
                    # POPPED: the timer counts it as it hands it over.
            for handle in in_heap:
                handle._where = _COUNTED
            self._dead += len(in_heap)
            if self._dead > _COMPACT_AFTER and 2 * self._dead > len(self._heap):
                heap = [entry for entry in self._heap if entry[2]._where is not _COUNTED]
                heapq.heapify(heap)
                self._heap, self._dead = heap, 0
        for handle in in_heap:
            try:
                self._count_one(handle)
            except BaseException as error:
                self._lost(handle, error)
        for handle in handed:
            pool, item = handle._pool, handle._item
            if pool is not None and item is not None and pool.cancel_waiting_due(item):
                handle._item = handle._pool = None

    def _count_one(self, handle: DelayedJob) -> None:
        """Count a job cancelled before its hand-over as cancelled in its pool and batch."""
        pool, item = handle._pool, handle._item
        handle._item = handle._pool = None
        if pool is not None and item is not None:
            pool.cancel_delayed(item)

    def _lost(self, handle: DelayedJob, error: BaseException) -> None:
        """Count as failed a job whose hand-over raised, so that nothing waits for it for ever."""
        with self._lock:
            pool, item = handle._pool, handle._item
            handle._item = handle._pool = None
            if handle._state is _PENDING:
                handle._state = _DONE
        if pool is not None and item is not None:
            pool.fail_delayed(item, error)
        else:
            with contextlib.suppress(BaseException):
                logger.error("the timer could not hand over delayed job %s", safe_repr(handle), exc_info=error)

    def _acknowledge(self, requests: list[DelayedJob | _CancelWhere]) -> None:
        for request in requests:
            if isinstance(request, DelayedJob) and request._ack is not None:
                request._ack.set()
                request._ack = None


def join_thread(thread: threading.Thread, deadline: float | None) -> None:
    """Join a thread, even one whose start() a Ctrl-C interrupted.

    Such a thread may never have started, or may be starting still: it is
    given a moment to show up before it is taken as never started, but never
    beyond ``deadline``.
    """
    give_up = time.monotonic() + _INTERRUPTED_START_GRACE
    if deadline is not None:
        give_up = min(give_up, deadline)
    while True:
        remaining = WAIT_SLICE if deadline is None else min(WAIT_SLICE, max(0.0, deadline - time.monotonic()))
        try:
            thread.join(remaining)  # in slices: see WAIT_SLICE
        except RuntimeError:  # "cannot join thread before it is started"
            if time.monotonic() >= give_up:
                return
            time.sleep(0.001)
        else:
            if not thread.is_alive() or (deadline is not None and time.monotonic() >= deadline):
                return


_INTERRUPTED_START_GRACE = 0.2  # seconds
_PAUSE_AFTER_ERROR = 0.005  # seconds the timer pauses after an unexpected error
_STOP_RENOTIFY = 0.1  # seconds between two wake-ups of a timer that stop() waits for
_COMPACT_AFTER = 64  # cancelled entries the heap may keep before it is rebuilt without them
