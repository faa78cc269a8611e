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


class Scheduler:
    """A heap of delayed jobs and the one thread that releases them."""

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Pool, _Item]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, due: float, pool: Pool, item: _Item) -> None:
        """Release ``item`` into ``pool`` at monotonic time ``due``."""
        with self._condition:
            heapq.heappush(self._heap, (due, next(self._order), pool, item))
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
                self._thread.start()
            elif self._heap[0][3] is item:
                self._condition.notify()

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
                due: list[tuple[Pool, _Item]] = []
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    _, _, pool, item = heapq.heappop(heap)
                    due.append((pool, item))
            for pool, item in due:
                pool.submit_due(item)
            del due
