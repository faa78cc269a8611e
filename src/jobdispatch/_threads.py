"""The thread runner: the loop each worker thread of a pool runs."""

from __future__ import annotations

import sys
import threading
import time
from queue import Empty

from ._outcome import CancelledBeforeStart, ReportedElsewhere, call_job, tell_cancelled
from ._pool import Pool, count_worker_in, take_contended
from ._rounds import Running, WorkerThread, generation_done, role

__all__ = ["ThreadPool"]

# Without the GIL, CPython frees an object that another thread let go of
# only once the thread that made it runs Python code again (biased
# reference counting). An idle worker blocked on its queue runs none: it
# would keep a result or an exception made by one of its jobs alive for as
# long as it idles. Idle workers on such a build wake this often to let
# CPython free them; with the GIL they sleep until work comes.
IDLE_WAKE_UP = None if getattr(sys, "_is_gil_enabled", lambda: True)() else 0.5


class ThreadPool(Pool):
    """A pool whose jobs run on its own worker threads, started on demand."""

    __slots__ = ()

    def _worker_main(self) -> None:
        thread = threading.current_thread()
        plain = type(thread) is threading.Thread
        if plain:
            thread.__class__ = WorkerThread  # threads its jobs start are no daemons (see WorkerThread)
        try:
            _work(self)
        finally:
            if plain:
                thread.__class__ = threading.Thread


def _work(pool: Pool) -> None:
    """Run jobs from ``pool`` until a ``None`` sentinel arrives."""
    if not count_worker_in(pool):
        return
    lock = pool._lock
    role.pool = pool
    running = role.running = Running()  # the jobs a job dispatches join its round
    if pool.initializer is not None:
        call_job(pool.initializer, None)
    get = pool._jobs.get
    clock = time.perf_counter
    acquire = lock.acquire
    release = lock.release
    idle_wake_up = IDLE_WAKE_UP
    while True:
        try:
            item = get(True, idle_wake_up)
        except Empty:
            continue  # the jump back lets CPython free what others let go of
        if item is None:
            with lock:
                pool._sentinels -= 1
                pool._live -= 1
            return
        job, fn, generation, batch, context = item
        del item
        running.generation = generation
        error: BaseException | type[CancelledBeforeStart | ReportedElsewhere] | None = None
        if generation.cancelled:  # finalize(cancel_pending=True) dropped it
            error = CancelledBeforeStart
            tell_cancelled(fn)
        else:
            started = clock()
            try:
                if context is None:
                    fn()
                else:
                    context.run(fn)
            except CancelledBeforeStart:
                error = CancelledBeforeStart
            except ReportedElsewhere:
                error = ReportedElsewhere
            except BaseException as exc:
                error = exc
                pool._report(job, exc, batch, clock() - started)
        # The accounting of `job_over`, inlined: the call would cost the
        # worker a quarter of its time per job. Workers never see
        # KeyboardInterrupt, so the cheaper explicit acquire/release is safe
        # here (a `with` costs twice as much).
        if not acquire(False):
            take_contended(lock)
        try:
            if error is None:
                pool._completed += 1
            else:
                pool._left_otherwise += 1
                if error is CancelledBeforeStart:
                    pool.count_cancelled_locked()
                else:
                    pool._failed += 1
            # Give the place back before the barrier can open, so that a
            # wait() that returns leaves the pool with room.
            if pool._wanted:
                pool.free_place_locked()
            else:
                pool._room += 1
            generation.pending -= 1
            if not generation.pending and generation.done is not None:
                generation_done(generation)
        finally:
            release()
        if batch is not None:
            running.generation = None  # the job is over: a progress report joins no round
            batch._job_over(fn, cancelled=error is CancelledBeforeStart)
        # Drop every reference before blocking, so no job outlives its run.
        del job, fn, generation, batch, context, error
