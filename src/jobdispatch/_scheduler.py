"""The timer behind `Dispatcher.dispatch_later`.

One thread per dispatcher, started with the first delayed job, sleeps until the earliest
deadline in a heap and hands each due job to its pool without blocking. A
delayed job therefore never holds up another delayed job, a dispatch, or a
pool other than its own (go-dispatcher slept inside its only dispatch loop).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import contextvars

    from ._batch import Batch
    from ._pool import Generation, Pool, _Item

__all__ = ["Scheduler", "join_thread"]

_YIELD_EVERY = 0.001  # seconds between two GIL hand-overs by a busy producer


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
        # Entries: (due, order, pool, item, cancelled). Cancelling makes an
        # entry due at once and marks it, and the timer thread counts it
        # cancelled: the thread that cancels (perhaps one Ctrl-C can
        # interrupt) only rebuilds the heap, in one step.
        self._heap: list[tuple[float, int, Pool, _Item, bool]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._orphans: list[threading.Thread] = []  # timers whose start() was interrupted
        self._next_yield = 0.0

    def push_locked(
        self,
        due: float,
        pool: Pool,
        generation: Generation,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
    ) -> None:
        """Count a delayed job in ``pool`` and put it in the heap.

        The caller holds the pool's lock. Every call comes first and the heap
        push, one C call, last, with the counting in between done inline:
        Ctrl-C strikes only at a call, so it leaves the job either nowhere or
        both counted and in the heap, never counted alone.
        """
        with self._lock:
            if self._thread is None:
                # Known only once started: if Ctrl-C interrupts start(), the
                # next delayed job starts a timer again (and a half-started
                # one sees it is not the timer, and leaves).
                thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
                self._stopping = False
                try:
                    thread.start()
                except BaseException:
                    self._orphans.append(thread)  # stop() joins it if it did start
                    raise
                self._thread = thread
            heap = self._heap
            if not heap or due < heap[0][0]:
                self._condition.notify_all()  # the timer sleeps past ``due``: it must look again
            order = next(self._order)
            generation.pending += 1
            pool._delayed += 1
            heapq.heappush(heap, (due, order, pool, (job, fn, generation, batch, context), False))

    def yield_if_overdue(self) -> None:
        """Hand the GIL over if jobs are overdue, at most once a millisecond.

        A producer that schedules a burst of delayed jobs keeps the GIL from
        the timer thread for up to the switch interval (5 ms); yielding now
        and then lets the timer release what is due on time, while the burst
        stays fast.
        """
        heap = self._heap
        now = time.monotonic()
        if heap and heap[0][0] <= now and now >= self._next_yield:
            self._next_yield = now + _YIELD_EVERY
            time.sleep(0)

    def _pop_due_locked(self, now: float) -> list[tuple[Pool, _Item, bool]]:
        heap = self._heap
        due: list[tuple[Pool, _Item, bool]] = []
        while heap and heap[0][0] <= now:
            _, _, pool, item, cancelled = heapq.heappop(heap)
            due.append((pool, item, cancelled))
        return due

    def cancel_all(self) -> None:
        """Cancel every delayed job that is not due yet; the timer counts them cancelled at once."""
        self._cancel_where(lambda item: True)

    def cancel_batch(self, batch: object) -> None:
        """Cancel the delayed jobs of one batch; the timer counts them cancelled at once."""
        self._cancel_where(lambda item: item[3] is batch)

    def _cancel_where(self, chosen: Callable[[_Item], bool]) -> None:
        with self._lock:
            if not self._heap:
                return
            # Wake the timer first (it runs only once the lock is free), then
            # rebuild in one assignment: Ctrl-C leaves the heap either as it
            # was or entirely rebuilt, never half-cancelled, and never a
            # rebuilt heap the timer does not know of.
            self._condition.notify_all()
            self._heap = [
                (0.0, order, pool, item, True) if chosen(item) else (due, order, pool, item, cancelled)
                for due, order, pool, item, cancelled in self._heap
            ]
            heapq.heapify(self._heap)

    def stop(self, timeout: float | None) -> bool:
        """Let the thread exit once the heap is empty; ``False`` on timeout."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for orphan in self._orphans:
            join_thread(orphan, deadline)
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
        self._thread = None
        self._stopping = True

    def _run(self) -> None:
        with self._lock:
            # push_locked holds the lock from start() until it records the
            # thread: a thread that is not recorded by then was started by a
            # push that Ctrl-C interrupted, and leaves (the next push starts a
            # timer again).
            if self._thread is not threading.current_thread():
                return
        heap = self._heap
        parked: set[Pool] = set()  # pools where a due job waits for a place
        while True:
            with self._lock:
                while True:
                    heap = self._heap
                    if not heap:
                        if self._stopping and not parked:
                            self._thread = None
                            return
                        if parked:
                            self._condition.wait(_SERVE_EVERY)
                            break
                        self._condition.wait()
                        continue
                    delay = heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    if parked:
                        self._condition.wait(min(delay, _SERVE_EVERY))
                        break
                    self._condition.wait(delay)
                due = self._pop_due_locked(time.monotonic())
            for pool, item, cancelled in due:
                if cancelled:
                    pool.cancel_delayed(item)
                elif pool.submit_due(item):
                    parked.add(pool)
            del due
            # Workers hand freed places to waiting due jobs; offering them
            # again here covers places given back by any other way.
            parked = {pool for pool in parked if not pool.serve_due()}


def join_thread(thread: threading.Thread, deadline: float | None) -> None:
    """Join a thread, even one whose start() a Ctrl-C interrupted.

    Such a thread may never have started, or may be starting still: it is
    given a moment to show up before it is taken as never started.
    """
    give_up = time.monotonic() + _INTERRUPTED_START_GRACE
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            thread.join(remaining)
        except RuntimeError:  # "cannot join thread before it is started"
            if time.monotonic() >= give_up:
                return
            time.sleep(0.001)
        else:
            return


_INTERRUPTED_START_GRACE = 0.2  # seconds
_SERVE_EVERY = 0.005  # seconds between two offers of free places to due jobs that wait
_STOP_RENOTIFY = 0.1  # seconds between two wake-ups of a timer that stop() waits for
