"""The timer behind `Dispatcher.dispatch_later`.

One thread per dispatcher, started on first use, sleeps until the earliest
deadline in a heap and hands each due job to its pool without blocking. A
delayed job therefore never holds up another delayed job, a dispatch, or a
pool other than its own (go-dispatcher slept inside its only dispatch loop).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._pool import Pool, _Item

__all__ = ["Scheduler"]

_YIELD_EVERY = 0.001  # seconds between two GIL hand-overs by a busy producer


class Scheduler:
    """A heap of delayed jobs and the one thread that releases them."""

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Pool, _Item]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_yield = 0.0

    def add(self, due: float, pool: Pool, item: _Item) -> None:
        """Release ``item`` into ``pool`` at monotonic time ``due``."""
        with self._condition:
            heap = self._heap
            heapq.heappush(heap, (due, next(self._order), pool, item))
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
                self._thread.start()
            elif heap[0][3] is item:
                self._condition.notify()
            # A busy producer keeps the GIL from the timer thread for up to the
            # switch interval (5 ms): release what is overdue from here.
            now = time.monotonic()
            overdue = self._pop_due_locked(now) if heap[0][0] <= now else []
        if overdue:
            for pool_of_item, due_item in overdue:
                pool_of_item.submit_due(due_item)
            if now >= self._next_yield:
                # Let the woken workers have the GIL now rather than at the end
                # of the switch interval; at most once a millisecond, so that
                # a burst of dispatch_later calls stays fast.
                self._next_yield = now + _YIELD_EVERY
                time.sleep(0)

    def _pop_due_locked(self, now: float) -> list[tuple[Pool, _Item]]:
        heap = self._heap
        due: list[tuple[Pool, _Item]] = []
        while heap and heap[0][0] <= now:
            _, _, pool, item = heapq.heappop(heap)
            due.append((pool, item))
        return due

    def cancel_all(self) -> None:
        """Drop every delayed job that is not due yet, counting it cancelled."""
        with self._condition:
            entries, self._heap = self._heap, []
            self._condition.notify()
        for _, _, pool, item in entries:
            pool.cancel_delayed(item)

    def cancel_batch(self, batch: object) -> None:
        """Drop the delayed jobs of one batch, counting them cancelled."""
        with self._condition:
            dropped = [entry for entry in self._heap if entry[3][3] is batch]
            if not dropped:
                return
            self._heap = [entry for entry in self._heap if entry[3][3] is not batch]
            heapq.heapify(self._heap)
            self._condition.notify()
        for _, _, pool, item in dropped:
            pool.cancel_delayed(item)

    def stop(self, timeout: float | None) -> bool:
        """Let the thread exit once the heap is empty; ``False`` on timeout."""
        with self._condition:
            thread = self._thread
            self._stopping = True
            self._condition.notify()
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def forget_after_fork(self) -> None:
        """Drop the parent's timer state in a forked child."""
        self._condition = threading.Condition(threading.Lock())
        self._heap = []
        self._thread = None
        self._stopping = True

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._condition:
                while True:
                    heap = self._heap
                    if not heap:
                        if self._stopping:
                            self._thread = None
                            return
                        self._condition.wait()
                        continue
                    delay = heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._condition.wait(delay)
                due = self._pop_due_locked(time.monotonic())
            for pool, item in due:
                pool.submit_due(item)
            del due
