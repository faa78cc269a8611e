"""One bulkhead: a bounded queue of jobs, its places, its counters, and the threads it starts.

The hand-off is built only from C-implemented primitives. A pool owns two
`queue.SimpleQueue` objects: ``_jobs`` carries work items to the workers,
and ``_slots`` holds the free places of the pool as `Place` tokens
(``workers + queue_size`` of them, made as the pool first needs them). A
producer takes a place before it enqueues a job, the place travels with the
job, and the worker gives it back when the job is over, so a producer blocks,
inside C, exactly while the pool is full. Every counter is
changed under the pool's own lock, which no other pool ever takes: pools share
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, TypeAlias

from ._config import PoolConfig
from ._errors import DispatcherClosed, PoolFull
from ._job import job_name, unwrap
from ._outcome import (
    CancelledBeforeStart,
    NoThread,
    ReportedElsewhere,
    call_job,
    interrupts_caller,
    logger,
    mark_queued,
    tell_cancelled,
)
from ._places import NOWHERE, Place, WakeUp
from ._rounds import Generation, Round, Running, finish_generation, generation_done, role, runs_jobs_of, wake_future
from ._state import State
from ._stats import PoolStats

if TYPE_CHECKING:
    from ._batch import Batch
    from ._scheduler import DelayedJob, Scheduler

__all__ = [
    "ErrorHandler",
    "Pool",
    "count_worker_in",
    "job_over",
]


ErrorHandler: TypeAlias = Callable[[Any, BaseException], object]


# A delayed job: (job, callable to run, generation, batch or None, context or None).
_Item: TypeAlias = "tuple[object, Callable[[], object], Generation, Batch | None, contextvars.Context | None]"


# A queued job: the same, and the place it holds in the pool.
_Queued: TypeAlias = "tuple[object, Callable[[], object], Generation, Batch | None, contextvars.Context | None, Place]"


_OPEN = State.OPEN


_DRAINING = State.DRAINING


class Pool:
    """The queue, the threads and the counters of one priority."""

    def __init__(
        self,
        config: PoolConfig,
        *,
        index: int,
        round_: Round,
        name: str,
        on_error: Callable[[], ErrorHandler | None],
    ) -> None:
        self.index = index  # the pool's generation in every Round
        self.priority = config.priority
        self.workers = config.workers
        self.queue_size = config.queue_size
        self.owner = round_.owner
        self._thread_name = f"{name}-p{config.priority}"
        self._on_error = on_error  # returns the dispatcher's hook: the pool holds no reference to it
        # Run once by each worker thread before its first job (the initializer
        # of a `ThreadPoolExecutor`, which handles its own failure).
        self.initializer: Callable[[], object] | None = None
        self._lock = threading.Lock()
        self._jobs: SimpleQueue[_Queued | None] = SimpleQueue()
        self._slots: SimpleQueue[Place] = SimpleQueue()
        self._take_slot = self._slots.get  # bound once: the hot path saves a lookup
        self._put_job = self._jobs.put
        self._unissued = config.workers + config.queue_size  # places not made yet
        self._thread_limit = config.workers  # a subclass that runs jobs elsewhere lowers it
        # Worker threads. Ctrl-C can interrupt Thread.start() before or after
        # the thread really starts, so a worker counts itself in ``_live``
        # once it runs (see `_threads._work`), and ``_planned`` may briefly lag behind.
        self._threads: list[threading.Thread] = []  # every thread ever started, for joining
        self._planned = 0  # threads started, less those whose start() was interrupted
        self._live = 0  # workers running their loop, under the limit
        self._spawning = True  # fewer threads than workers so far
        self._generation = round_.generations[index]
        self._due: deque[_Item] = deque()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._state = _OPEN  # OPEN, DRAINING (own jobs may still dispatch) or CLOSED
        self._stopping = False
        self._sentinels = 0
        self._blocked_producers = 0
        self._wake_ups = 0  # WakeUp tokens in _slots: not room
        # Counters, all changed under _lock. Items that went through _jobs and
        # completed are counted in _completed alone (the hot path); every
        # other way out of _jobs is counted in _left_otherwise as well, so
        # that busy = _entered - _completed - _left_otherwise - queued.
        self._entered = 0  # items ever put into _jobs
        self._completed = 0  # items from _jobs that returned normally
        self._left_otherwise = 0  # items from _jobs that failed or were cancelled
        self._inline_completed = 0  # jobs run by the dispatching worker itself
        self._delayed = 0
        self._failed = 0
        self._cancelled = 0
        self._slow_release = False  # _due or _room_waiters is not empty
        self._queue_cancelled = False  # every job still queued or due will be dropped
        self._precounted = 0  # of those, how many are counted cancelled already

    @property
    def label(self) -> str:
        """The pool's priority as people read it: an enum member by its name."""
        priority = self.priority
        return priority.name if isinstance(priority, enum.Enum) else str(priority)

    @property
    def capacity(self) -> str:
        """The pool's room, as said in error messages."""
        return f"{self.workers} workers + queue_size {self.queue_size}"

    # -- producers ---------------------------------------------------------

    def follow_up_locked(self, parent: Generation) -> Generation:
        """Return the generation, in this pool, of the round of ``parent``, for a job it dispatches.

        The caller holds the lock and counts the job in. A barrier may be
        waiting for that round already: a follow-up reopens it.
        """
        generation = parent.round.generations[self.index]
        if not generation.pending and generation.done is not None:
            generation.done.clear()
        generation.follow_ups += 1
        return generation

    def submit(
        self,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        timeout: float | None,
    ) -> None:
        """Enqueue a job, blocking while the pool is full.

        Raises:
            PoolFull: No room came before ``timeout`` ran out.
            DispatcherClosed: The pool was closed.
        """
        try:
            place: Place | None = self._take_slot(False)
        except Empty:
            place = None
        if place is None:  # outside the except block: no chained Empty in the caller's traceback
            place = self._wait_for_slot(timeout)
            if place is None:
                self._run_inline(job, fn, batch, context)
                return
        self._submit_with(place, job, fn, batch, context, timeout)

    def _submit_with(
        self,
        place: Place,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        timeout: float | None,
    ) -> None:
        """Queue a job with the place it took (the body of `submit`, and what `Dispatcher.dispatch` inlines)."""
        running = role.running
        queued = False
        spawn = None
        try:
            with self._lock:
                if self._state is not _OPEN:
                    place = self.check_open_locked(place)
                spawn = self._spawning and self._reserve_worker_locked()
                generation = self._generation if running is None else self.join_round_locked(running)
                queued = True
                generation.pending += 1
                self._entered += 1
                self._put_job((job, fn, generation, batch, context, place))  # the last call: see Dispatcher.dispatch
            if spawn:
                self.start_reserved(spawn)
        except BaseException as error:
            if not queued:
                self._slots.put(place)  # first, one C call: even a RecursionError cannot lose the place
            else:
                mark_queued(error)
            self.enqueue_failed(error, spawn, job, fn, batch, context, timeout)

    def join_round_locked(self, running: Running) -> Generation:
        """Return the generation for a job dispatched from a thread that runs jobs.

        A job of this dispatcher dispatching a follow-up: the follow-up joins
        its round. Anyone else: the current generation.
        """
        parent = running.generation
        if parent is None or parent.round.owner is not self.owner:
            return self._generation
        return self.follow_up_locked(parent)

    def check_open_locked(self, place: Place) -> Place:
        """Refuse a dispatch to a pool that is not open, unless the caller may still dispatch.

        Raises:
            DispatcherClosed: The caller is refused.
        """
        if self.refuses():
            raise DispatcherClosed("cannot dispatch after finalize() was called")
        if type(place) is WakeUp:
            # One of the dispatcher's own jobs, while finalize drains, took a
            # wake-up meant for a blocked producer: it gives it back and
            # waits for room (`enqueue_failed`).
            raise _WokenInstead
        return place

    def enqueue_failed(
        self,
        error: BaseException,
        spawn: threading.Thread | bool | None,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        timeout: float | None,
    ) -> None:
        """Clean up after an enqueue (`submit`, `Dispatcher.dispatch`) that raised; re-raise but for `NoThread`.

        The caller has put back the place already, unless the job was queued
        with it. `NoThread`: the pool has no thread and cannot start one, so
        the caller runs the job. A wake-up taken instead of a place: wait for
        room. Anything else (DispatcherClosed, Ctrl-C): a reserved worker
        that did not start is counted out.
        """
        self.pass_room_on()  # under the lock: the place the caller put back may be what an async producer awaits
        if isinstance(error, NoThread):
            self._run_inline(job, fn, batch, context)
            return
        if isinstance(error, _WokenInstead):
            place = self._wait_for_slot(timeout)
            if place is None:
                self._run_inline(job, fn, batch, context)
            else:
                self._submit_with(place, job, fn, batch, context, timeout)
            return
        if isinstance(spawn, threading.Thread):
            self.forget_reservation(spawn)
        raise error

    def _wait_for_slot(self, timeout: float | None) -> Place | None:
        """Block until the pool has room; ``None`` means run the job inline."""
        if self._unissued:
            with self._lock:
                if self._unissued:
                    return self._issue_place_locked()
        if role.pool is self:
            # A job is dispatching into its own full pool. Blocking here could
            # deadlock once every worker does it, so the caller runs the job.
            if timeout == 0:
                raise PoolFull(f"pool {self.priority} is full ({self.capacity})")
            return None
        if timeout == 0:
            raise PoolFull(f"pool {self.priority} is full ({self.capacity})")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._state is not _OPEN and self.refuses():
                raise DispatcherClosed("cannot dispatch after finalize() was called")
            self._blocked_producers += 1
        try:
            while self._state is _OPEN:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    place = self._slots.get(True, remaining)
                except Empty:
                    raise PoolFull(f"pool {self.priority} stayed full ({self.capacity}) for {timeout} s") from None
                if type(place) is not WakeUp:
                    return place
                with self._lock:
                    if self.refuses():
                        self._wake_ups -= 1  # it was meant for a producer like this one
                        raise DispatcherClosed("cannot dispatch after finalize() was called")
                    self._slots.put(place)  # for a blocked producer that is refused: not this one
            # Finalize drains, and this is one of the dispatcher's own jobs: it
            # may still dispatch. It never takes from the queue of places in
            # a blocking call, where it would take the wake-ups meant for the
            # producers that are refused; it looks for a real place now and
            # then instead (a rare wait: its job holds up only the drain).
            return self._poll_for_place(deadline, timeout)
        finally:
            with self._lock:
                self._blocked_producers -= 1

    def give_back(self, place: Place) -> None:
        """Return a place no job used, and wake an async producer waiting for room.

        One C call puts the place back, so Ctrl-C (this runs on producer
        threads) cannot lose it. The waiters are then looked at under the
        lock, never through a flag read without it: `add_room_waiter` checks
        for room and registers its waiter in one hold of that lock, so
        either it sees this place or this call sees its waiter, whatever
        the interleaving, with or without a GIL. A due delayed job waiting
        for room gets it from the timer, which offers free places to such
        jobs every few milliseconds (`serve_due`).
        """
        self._slots.put(place)
        self.pass_room_on()

    def _poll_for_place(self, deadline: float | None, timeout: float | None) -> Place:
        """Wait for a real place by looking now and then, leaving wake-ups where they are."""
        pause = 0.0005
        while True:
            with self._lock:
                if self.refuses():
                    raise DispatcherClosed("cannot dispatch after finalize() was called")
                if self._unissued:
                    return self._issue_place_locked()
                with contextlib.suppress(Empty):
                    return self._free_place_locked()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise PoolFull(f"pool {self.priority} stayed full ({self.capacity}) for {timeout} s")
            time.sleep(pause if deadline is None else min(pause, deadline - now))
            pause = min(2 * pause, 0.005)

    def _free_place_locked(self) -> Place:
        """Take a free place without blocking, leaving wake-ups for the producers they are for.

        Raises:
            Empty: No place is free.
        """
        wake_ups = 0
        try:
            while True:
                place = self._slots.get(False)
                if type(place) is not WakeUp:
                    return place
                wake_ups += 1
        finally:
            for _ in range(wake_ups):
                self._slots.put(WakeUp(NOWHERE))

    def _issue_place_locked(self) -> Place:
        """Make one of the places not made yet."""
        self._unissued -= 1  # first: a place dropped by Ctrl-C as it is made goes into _slots
        return Place(self._slots)

    def _run_inline(
        self,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
    ) -> None:
        with self._lock:
            if self._state is not _OPEN and self.refuses():
                raise DispatcherClosed("cannot dispatch after finalize() was called")
        self._run_here(job, fn, batch, context, None)

    def _run_here(
        self,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        generation: Generation | None,
    ) -> None:
        """Run a job in the calling thread and count it; ``generation``: it was a delayed job."""
        previous: Generation | None = None
        running = role.running
        if generation is not None:  # its follow-ups join its round
            if running is None:
                running = role.running = Running()
            previous, running.generation = running.generation, generation
        started = time.perf_counter()
        error = call_job(fn, context)
        if generation is not None and running is not None:
            running.generation = previous
        cancelled = isinstance(error, CancelledBeforeStart)
        # On the main thread a KeyboardInterrupt or SystemExit may be Ctrl-C
        # or a signal handler, not the job: it is counted, then propagates.
        propagate = error is not None and interrupts_caller(error)
        try:
            if error is not None and not (cancelled or propagate or isinstance(error, ReportedElsewhere)):
                self._report(job, error, batch, time.perf_counter() - started)
            with self._lock:
                if cancelled:
                    self.count_cancelled_locked()
                elif error is None:
                    self._inline_completed += 1
                else:
                    self._failed += 1
                if generation is not None:
                    self._delayed -= 1
                    finish_generation(generation)
        finally:
            if batch is not None:
                batch._job_over(fn, cancelled=cancelled)
        if propagate:
            assert error is not None
            raise error

    def add_delayed(
        self,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        handle: DelayedJob,
        scheduler: Scheduler,
    ) -> None:
        """Count a delayed job as pending and hand it to the timer."""
        running = role.running
        with self._lock:
            if self._state is not _OPEN and self.refuses():
                raise DispatcherClosed("cannot dispatch after finalize() was called")
            generation = self._generation if running is None else self.join_round_locked(running)
            scheduler.push_locked(self, generation, job, fn, batch, context, handle)

    def submit_due(self, item: _Item) -> bool:
        """Enqueue a delayed job whose time has come, without ever blocking.

        If the pool is full, the item waits in ``_due`` and the next worker
        that frees a place hands it over, ahead of blocked producers; the
        timer also offers it again now and then (`serve_due`). Returns
        whether the item waits.
        """
        place: Place | None = None
        try:
            with self._lock:
                try:
                    place = self._free_place_locked()
                except Empty:
                    if not self._unissued:
                        if self._planned:
                            self._due.append(item)  # the next worker to free a place hands it over
                            self._slow_release = True
                            return True
                        raise NoThread from None  # no place, and no thread to free one
                    place = self._issue_place_locked()
                spawn = self._spawning and self._reserve_worker_locked()
                self._hand_over_due_locked(item, place)
        except NoThread:
            # No thread can run it: the timer thread does (even while finalize drains).
            if place is not None:
                self.give_back(place)
            job, fn, generation, batch, context = item
            self._run_here(job, fn, batch, context, generation)
            return False
        if spawn:
            self.start_reserved(spawn)
        return False

    def serve_due(self) -> bool:
        """Hand free places to waiting due jobs and async producers; ``True`` once no due job waits.

        Workers do this as they free places; the timer calls it too, so that
        a place given back some other way (dropped by Ctrl-C, say) cannot
        leave a due job waiting next to it.
        """
        with self._lock:
            while self._due:
                try:
                    place = self._free_place_locked()
                except Empty:
                    if not self._unissued:
                        break
                    place = self._issue_place_locked()
                self._hand_over_due_locked(self._due.popleft(), place)
            self._pass_room_on_locked()
            return not self._due

    def _reserve_worker_locked(self) -> threading.Thread | None:
        """Return a new worker to start if the jobs, with the one about to come, outnumber the threads.

        The first worker is started at once, so that a job never waits in a
        queue with no thread. Later ones are counted here and started by
        the caller, outside the lock: starting a thread takes long enough to
        stall the pool.
        """
        in_pool = self._entered - self._completed - self._left_otherwise + 1
        if in_pool <= self._planned:
            return None
        thread = threading.Thread(
            target=self._worker_main,
            name=f"{self._thread_name}-{len(self._threads) + 1}",
            daemon=True,
        )
        self._planned += 1
        self._spawning = self._planned < self._thread_limit
        try:
            self._threads.append(thread)  # before start(): stop() must know it, even if start() is interrupted
            if self._planned == 1:
                thread.start()
                return None
        except Exception as error:
            # No thread could start (a thread limit, or interpreter shutdown
            # on Python 3.12.0-1): the pool has none, so the caller runs the job.
            self._threads.remove(thread)
            self._planned -= 1
            self._spawning = True
            _warn_no_thread(self.priority, error, "the dispatching thread runs the job itself")
            raise NoThread from error
        except BaseException:
            # Inline, not a call: Ctrl-C strikes at calls.
            self._planned = self._planned - 1 if self._planned > self._live else self._live
            self._spawning = True
            raise
        return thread

    def _worker_main(self) -> None:
        """Run on each of the pool's threads: what runs its jobs (`ThreadPool`, `BackedPool`)."""
        raise NotImplementedError

    def start_reserved(self, thread: threading.Thread) -> None:
        """Start a worker reserved by `_reserve_worker_locked`, outside the lock.

        If the thread cannot start (a thread limit, or interpreter shutdown),
        the job just queued waits for the workers already running.
        """
        try:
            thread.start()
        except Exception as error:
            with self._lock:
                self._threads.remove(thread)  # it never started: nothing to join
            self.forget_reservation(thread)
            _warn_no_thread(self.priority, error, "its queued jobs wait for the running workers")

    def forget_reservation(self, thread: threading.Thread) -> None:
        """Count a reserved worker out after Ctrl-C struck before or inside its start().

        The thread may have started all the same: it then counts itself in
        (see `_threads._work`). A thread that never started stays in ``_threads``;
        `join_thread` lets it go.
        """
        with self._lock:
            if not thread.is_alive():
                self._planned = self._planned - 1 if self._planned > self._live else self._live
                self._spawning = True

    def _hand_over_due_locked(self, item: _Item, place: Place) -> None:
        """Queue a due delayed job with the place it got."""
        self._delayed -= 1
        self._entered += 1
        self._jobs.put((*item, place))  # the last call: Ctrl-C cannot leave it counted and not queued

    def _release_slot_locked(self, place: Place) -> None:
        if self._due:
            self._hand_over_due_locked(self._due.popleft(), place)
        else:
            self._slots.put(place)
        self._pass_room_on_locked()

    def add_room_waiter(self, waiter: asyncio.Future[None]) -> bool:
        """Resolve ``waiter`` when a place frees up; ``False`` if one is free now."""
        with self._lock:
            if self._state is not _OPEN and self.refuses():
                raise DispatcherClosed("cannot dispatch after finalize() was called")
            if self._slots.qsize() > self._wake_ups or self._unissued:
                return False
            self._room_waiters.append(waiter)
            self._slow_release = True
            return True

    def pass_room_on(self) -> None:
        """Wake the next async producer if the pool has room."""
        with self._lock:
            self._pass_room_on_locked()

    def remove_room_waiter(self, waiter: asyncio.Future[None]) -> None:
        """Forget ``waiter``, whose task stopped waiting, and hand on any wake-up it was given.

        The pool may have woken ``waiter`` just before its task was
        cancelled, or may wake a cancelled one still in the queue: whenever
        the pool has room, that wake-up goes to the next waiter, so a
        cancelled waiter never keeps a place from the others.
        """
        with self._lock:
            with contextlib.suppress(ValueError):
                self._room_waiters.remove(waiter)
            self._pass_room_on_locked()

    def _pass_room_on_locked(self) -> None:
        # A waiter whose loop is closed cannot take the place: the next one
        # is woken instead. A cancelled one hands it on (remove_room_waiter).
        while self._room_waiters and (self._slots.qsize() > self._wake_ups or self._unissued):
            if wake_future(self._room_waiters.popleft()):
                break
        self._slow_release = bool(self._due or self._room_waiters)

    def add_generation_waiter(self, generation: Generation, waiter: asyncio.Future[None]) -> bool:
        """Resolve ``waiter`` when ``generation`` has no pending job; ``False`` if it has none now."""
        with self._lock:
            if not generation.pending:
                return False
            if generation.done is None:
                generation.done = threading.Event()
            generation.waiters.append(waiter)
            return True

    def remove_generation_waiter(self, generation: Generation, waiter: asyncio.Future[None]) -> None:
        """Forget ``waiter`` (it timed out, was cancelled, or was woken)."""
        with self._lock, contextlib.suppress(ValueError):
            generation.waiters.remove(waiter)

    def idle_event(self, generation: Generation) -> threading.Event:
        """Return an event that is set while ``generation`` has no pending job.

        Made on first use; set here too when it should be, so an earlier
        call that Ctrl-C cut short between making and setting it is mended.
        """
        with self._lock:
            done = generation.done
            if done is None:
                generation.done = done = threading.Event()
            if not generation.pending and not done.is_set():
                done.set()
            return done

    # -- workers -----------------------------------------------------------

    def _report(self, job: object, error: BaseException, batch: Batch | None, duration: float) -> None:
        """Name the job in a note on its exception; send the exception to its batch, to ``on_error``, or to the log.

        Log records carry the pool's priority, the job's name and its run
        time in seconds as the attributes ``pool``, ``job`` and ``duration``.
        """
        name = job_name(job)
        with contextlib.suppress(Exception):  # an exception may refuse notes (a read-only __notes__)
            error.add_note(f"jobdispatch: raised by job {name} in pool {self.label}")
        if batch is not None:
            batch._record_error(error)
            return
        on_error = self._on_error()
        if on_error is not None:
            try:
                on_error(unwrap(job), error)
            except BaseException as hook_error:
                _log(
                    "on_error raised while handling the failure of job %s in pool %s",
                    name,
                    self,
                    hook_error,
                    duration,
                )
            else:
                return
        _log("job %s failed in pool %s", name, self, error, duration)

    # -- barriers and shutdown ---------------------------------------------

    def begin_generation(self, generation: Generation) -> Generation:
        """Make ``generation`` (of a new round) the current one; return the one it replaces.

        From now on only follow-ups of its round can join the replaced one.
        """
        with self._lock:
            closed = self._generation
            self._generation = generation
            return closed

    def generation_state(self, generation: Generation) -> tuple[int, int]:
        """Return ``(pending, follow_ups)`` of one of the pool's generations, read under the lock."""
        with self._lock:
            return generation.pending, generation.follow_ups

    def refuses(self) -> bool:
        """Whether the pool, in its state, refuses the calling thread's dispatch.

        While `Dispatcher.finalize` drains (without cancelling), jobs of the
        dispatcher may still dispatch follow-up jobs: they are part of the
        work being drained. Everyone else is refused.
        """
        state = self._state
        if state is _OPEN:
            return False
        if state is not _DRAINING:
            return True
        return not runs_jobs_of(self.owner)

    def close(self, *, draining: bool) -> None:
        """Refuse new jobs and wake the producers blocked on a full pool.

        Blocked producers get a `WakeUp` each, not a place: the pool never
        holds more than its capacity, even while the dispatcher's own jobs
        may still dispatch.

        Args:
            draining: Keep accepting follow-up jobs from the dispatcher's own
                jobs (`finalize` without ``cancel_pending``).
        """
        with self._lock:
            self._state = _DRAINING if draining else State.CLOSED
            for _ in range(self._blocked_producers):
                self._wake_ups += 1  # count first: room checks subtract them from the queue of places
                self._slots.put(WakeUp(NOWHERE))
            while self._room_waiters:
                wake_future(self._room_waiters.popleft())
            self._slow_release = bool(self._due)

    def cancel_queued(self, generations: list[Generation]) -> None:
        """Cancel the jobs of ``generations`` that wait in the queue or for room (not yet started).

        The generations are marked, and the workers count each such job
        cancelled instead of running it: the calling thread only sets flags,
        so Ctrl-C cannot leave a job half-cancelled.
        """
        with self._lock:
            if not self._queue_cancelled:
                # What waits is counted cancelled now, once: the workers that
                # drop it later use up this count before adding to it, so the
                # counter never goes down, whatever a snapshot falls between.
                waiting = max(0, self._jobs.qsize() - self._sentinels) + len(self._due)
                self._cancelled += waiting
                self._precounted += waiting
                self._queue_cancelled = True
            self._generation.cancelled = True
            for generation in generations:
                generation.cancelled = True

    def count_cancelled_locked(self) -> None:
        """Count one job cancelled, unless `cancel_queued` counted it already."""
        if self._precounted:
            self._precounted -= 1
        else:
            self._cancelled += 1

    def cancel_due(self) -> None:
        """Drop the delayed jobs that are due but wait for room."""
        cancelled: list[tuple[Batch, object]] = []
        with self._lock:
            dropped = list(self._due)
            self._cancel_due_locked(cancelled)
        for item in dropped:
            tell_cancelled(item[1])
        for batch, call in cancelled:
            batch._job_over(call, cancelled=True)

    def _cancel_due_locked(self, cancelled: list[tuple[Batch, object]]) -> None:
        while self._due:
            self._delayed -= 1
            self._cancel_item_locked(self._due.popleft(), cancelled)
        self._slow_release = bool(self._room_waiters)

    def cancel_delayed(self, item: _Item) -> None:
        """Drop a delayed job whose time has not come."""
        cancelled: list[tuple[Batch, object]] = []
        with self._lock:
            self._delayed -= 1
            self._cancel_item_locked(item, cancelled, waited_for_room=False)
        for batch, call in cancelled:
            batch._job_over(call, cancelled=True)

    def cancel_waiting_due(self, item: _Item) -> bool:
        """Cancel a delayed job if it is due and waits for room; ``False`` if it is not there."""
        cancelled: list[tuple[Batch, object]] = []
        with self._lock:
            for index, waiting in enumerate(self._due):
                if waiting is item:
                    del self._due[index]
                    self._delayed -= 1
                    self._cancel_item_locked(item, cancelled)
                    self._slow_release = bool(self._due or self._room_waiters)
                    break
            else:
                return False
        for batch, call in cancelled:
            batch._job_over(call, cancelled=True)
        return True

    def fail_delayed(self, item: _Item, error: BaseException) -> None:
        """Count as failed a delayed job the timer could not hand over, and report ``error`` for it."""
        job, fn, generation, batch, _ = item
        try:
            self._report(job, error, batch, 0.0)
        finally:
            with self._lock:
                self._delayed -= 1
                self._failed += 1
                finish_generation(generation)
            if batch is not None:
                batch._job_over(fn, cancelled=False)

    def _cancel_item_locked(
        self, item: _Item | _Queued, cancelled: list[tuple[Batch, object]], *, waited_for_room: bool = True
    ) -> None:
        # A job that waited for room may have been counted by cancel_queued;
        # one still in the timer's heap never was.
        if waited_for_room:
            self.count_cancelled_locked()
        else:
            self._cancelled += 1
        finish_generation(item[2])
        if item[3] is not None:
            cancelled.append((item[3], item[1]))

    def stop(self) -> list[threading.Thread]:
        """Tell every worker to exit once the queue ahead of it is done."""
        # One sentinel per worker counted in. A thread still starting counts
        # itself in later and brings its own sentinel (see `_threads._work`); the caller
        # joins every thread with join_thread, which gives a start in flight
        # a moment to happen.
        with self._lock:
            self._stopping = True
            # Top up rather than "once": a stop() that Ctrl-C cut short is
            # finished by the next one. Count first, then the put (a C call,
            # after which Ctrl-C may strike): the count never runs behind.
            while self._sentinels < self._live:
                self._sentinels += 1
                self._jobs.put(None)
            return list(self._threads)

    def forget_after_fork(self) -> None:
        """Make the copy of the pool in a forked child refuse work.

        The child has none of the parent's threads, and the lock may have been
        held by one of them at the fork, so it is replaced.
        """
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._stopping = True
        self._threads = []
        self._live = 0

    def stats(self) -> PoolStats:
        """Return a consistent snapshot of the pool's counters."""
        with self._lock:
            queued = max(0, self._jobs.qsize() - self._sentinels)
            busy = self._entered - self._completed - self._left_otherwise - queued
            delayed, cancelled = self._delayed, self._cancelled
            if self._queue_cancelled:  # counted cancelled already; the workers drop them as they reach them
                delayed -= len(self._due)
                queued = 0
            return PoolStats(
                priority=self.priority,
                workers=self.workers,
                busy=busy,
                idle=self.workers - busy,
                queued=queued,
                delayed=delayed,
                completed=self._completed + self._inline_completed,
                failed=self._failed,
                cancelled=cancelled,
            )

    def describe(self) -> str:
        """Return a short state line for ``Dispatcher.__repr__``."""
        s = self.stats()
        name = self.label if isinstance(self.priority, enum.Enum) else f"p{self.priority}"
        text = f"{name} {s.busy}/{s.workers} busy"
        if s.queued:
            text += f", {s.queued} queued"
        if s.delayed:
            text += f", {s.delayed} delayed"
        return text


def _warn_no_thread(priority: int, error: Exception, outcome: str) -> None:
    logger.warning("pool %d could not start a worker thread (%s): %s", priority, error, outcome)


class _WokenInstead(Exception):
    """Raised by `Pool.check_open_locked` when a dispatch that may go on took a wake-up instead of a place."""


def _log(message: str, name: str, pool: Pool, error: BaseException, duration: float) -> None:
    # A logging handler that raises, whatever it raises, must not kill the
    # worker; the failure is still counted in the pool's stats.
    with contextlib.suppress(BaseException):
        logger.error(
            message,
            name,
            pool.label,
            exc_info=error,
            extra={"pool": pool.priority, "job": name, "duration": duration},
        )


def count_worker_in(pool: Pool) -> bool:
    """Count the calling worker thread in; ``False`` means it is one too many and must exit."""
    with pool._lock:
        # A start that Ctrl-C interrupted may have happened after all, and
        # been replaced since: never more than the limit of threads run.
        if pool._live >= pool._thread_limit:
            return False
        pool._live += 1
        if pool._live > pool._planned:
            pool._planned = pool._live
            pool._spawning = pool._planned < pool._thread_limit
        if pool._stopping:  # stop() has handed out the sentinels already
            pool._jobs.put(None)
            pool._sentinels += 1
    return True


def job_over(
    pool: Pool,
    error: BaseException | type[BaseException] | None,
    place: Place,
    generation: Generation,
    batch: Batch | None,
    fn: Callable[[], object],
) -> None:
    """Count a job of ``pool`` as over, give its place back and tell its barrier and batch.

    ``error`` is ``None`` (it returned), `CancelledBeforeStart` (counted
    cancelled), or anything else (counted failed; reporting it is the
    caller's business). Never blocks for long: it runs on the threads of
    the engines that run jobs. `_threads._work` inlines the same steps, for speed:
    change both together.
    """
    lock = pool._lock
    lock.acquire()  # engine threads never see KeyboardInterrupt
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
        if pool._slow_release:
            pool._release_slot_locked(place)
        else:
            pool._slots.put(place)
        generation.pending -= 1
        if not generation.pending and generation.done is not None:
            generation_done(generation)
    finally:
        lock.release()
    if batch is not None:
        batch._job_over(fn, cancelled=error is CancelledBeforeStart)
