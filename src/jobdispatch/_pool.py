"""One bulkhead: a bounded queue of jobs, its room, its counters, and the threads it starts.

A pool has ``workers + queue_size`` places. A job takes one as it is
queued and frees it when it is over, so a producer blocks exactly while
the pool is full. The places are a counter, ``_room``, changed under the
pool's own lock in the same hold that queues the job or counts it over:
no place is ever held by a value that Ctrl-C could drop, and nothing
depends on when an object is freed. Producers that find the pool full
wait in ``_room_waiters`` (a lock each, or an asyncio future), and a job
that ends wakes the first of them. Jobs travel to the workers through a
`queue.SimpleQueue`. No other pool ever takes the lock: pools share
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, TypeAlias

from ._config import WAIT_SLICE, PoolConfig
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
    mark_ran,
    tell_cancelled,
)
from ._rounds import (
    Generation,
    Round,
    Running,
    finish_generation,
    generation_done,
    role,
    runs_job_of,
    wake_future,
)
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
    "take_contended",
]


ErrorHandler: TypeAlias = Callable[[Any, BaseException], object]


# A delayed job: (job, callable to run, generation, batch or None, context or None).
_Item: TypeAlias = "tuple[object, Callable[[], object], Generation, Batch | None, contextvars.Context | None]"


# A queued job: the same tuple, which takes one place in the pool.
_Queued: TypeAlias = _Item

_LockType = type(threading.Lock())


_OPEN = State.OPEN

# With the GIL, a thread can lose the GIL just after it took a pool's lock,
# and keep the lock until it gets the GIL back. A thread that then blocks on
# the lock sleeps until it is woken, and must wait for the GIL in turn: with
# many producers and workers on one pool the lock passes from one sleeping
# thread to the next (a convoy), and throughput falls tenfold. So a thread
# that finds the lock taken first gives the GIL away a few times, which
# lets the holder run and let go, and only then blocks. Without the GIL the
# holder runs meanwhile, and the lock's own brief spinning does the same.
_GIL_YIELDS = 20 if getattr(sys, "_is_gil_enabled", lambda: True)() else 0


def take_contended(lock: threading.RLock) -> None:
    """Take a pool's ``lock``, which ``lock.acquire(False)`` just found taken.

    The caller makes that first try itself (it is the common case, and a
    call costs more), in the try block whose except block gives the lock
    back if it owns it.
    """
    for _ in range(_GIL_YIELDS):
        time.sleep(0)  # the GIL goes to another thread: maybe the holder
        if lock.acquire(False):
            return
    lock.acquire()


_DRAINING = State.DRAINING


class Pool:
    """The queue, the threads and the counters of one priority."""

    # Slots: a pool has more attributes than CPython keeps in an instance's
    # inline values, and the hot paths read and write them on every job.
    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_completed",
        "_delayed",
        "_due",
        "_failed",
        "_generation",
        "_inline_completed",
        "_jobs",
        "_left_otherwise",
        "_live",
        "_lock",
        "_on_error",
        "_places",
        "_planned",
        "_precounted",
        "_put_job",
        "_queue_cancelled",
        "_room",
        "_room_waiters",
        "_sentinels",
        "_spawning",
        "_state",
        "_stopping",
        "_thread_limit",
        "_thread_name",
        "_threads",
        "_wanted",
        "index",
        "initializer",
        "owner",
        "priority",
        "queue_size",
        "workers",
    )

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
        # An RLock, for its owner check: the hot paths take it with a plain
        # acquire() inside their try block (a `with` costs twice as much),
        # and a Ctrl-C that strikes just after acquire() returned finds it
        # owned in the except block, which releases it.
        self._lock = threading.RLock()
        self._jobs: SimpleQueue[_Queued | None] = SimpleQueue()
        self._put_job = self._jobs.put
        self._places = config.workers + config.queue_size
        self._room = self._places  # free places
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
        # Producers waiting for room, first come first woken: a blocked
        # thread's lock, or an async producer's future.
        self._room_waiters: deque[threading.Lock | asyncio.Future[None]] = deque()
        self._state = _OPEN  # OPEN, DRAINING (own jobs may still dispatch) or CLOSED
        self._stopping = False
        self._sentinels = 0
        # Counters, all changed under _lock. Items that went through _jobs and
        # completed are counted in _completed alone (the hot path); every
        # other way out of _jobs is counted in _left_otherwise as well. An
        # item holds one place from the moment it is queued to the moment
        # it is counted over, so the items in the pool (queued or running)
        # are the places taken: capacity - _room.
        self._completed = 0  # items from _jobs that returned normally
        self._left_otherwise = 0  # items from _jobs that failed or were cancelled
        self._inline_completed = 0  # jobs run by the dispatching worker itself
        self._delayed = 0
        self._failed = 0
        self._cancelled = 0
        self._wanted = False  # _due or _room_waiters is not empty: a freed place goes to them
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
        running = role.running
        lock = self._lock
        deadline: float | None = None
        waiter: threading.Lock | None = None  # what this producer sleeps on while the pool is full
        queued = False
        spawn = None
        try:
            while True:
                if not lock.acquire(False):
                    take_contended(lock)
                if self._state is not _OPEN and self.refuses():
                    # Refusals give the lock back before they raise: in the
                    # except block, Ctrl-C could strike as the owner check
                    # returns, and keep it.
                    lock.release()
                    raise DispatcherClosed("cannot dispatch after finalize() was called")
                if self._room:
                    # Every call first, then the counters, then the hand-off
                    # (a C call) last: Ctrl-C strikes only at a call, so it
                    # cannot leave a counted job out of the queue.
                    try:
                        spawn = self._spawning and self._reserve_worker_locked()
                    except NoThread:
                        lock.release()  # before the raise, as refusals do
                        raise
                    generation = self._generation if running is None else self.join_round_locked(running)
                    queued = True
                    self._room -= 1
                    generation.pending += 1
                    self._put_job((job, fn, generation, batch, context))
                    lock.release()
                    break
                if timeout == 0:
                    lock.release()
                    raise PoolFull(f"pool {self.priority} is full ({self.capacity})")
                if role.pool is self:
                    # A job of this pool, which is full: it runs the new job
                    # itself. Blocking here could deadlock the pool once every
                    # worker did it.
                    lock.release()
                    break
                if waiter is None:
                    waiter = threading.Lock()
                    waiter.acquire()
                self._room_waiters.append(waiter)  # the caller knows it first: Ctrl-C cannot leave it unknown
                self._wanted = True
                lock.release()
                if deadline is None and timeout is not None:
                    deadline = time.monotonic() + timeout
                self.sleep_until_woken(waiter, deadline, timeout)
            if spawn:
                self.start_reserved(spawn)
        except BaseException as error:
            if lock._is_owned():  # type: ignore[attr-defined]
                lock.release()
            if queued:
                mark_queued(error)
            elif waiter is not None:
                self._forget_waiter(waiter)  # it may be registered still: Ctrl-C struck before it slept
            self.enqueue_failed(error, spawn, job, fn, batch, context)
            return
        if not queued:
            self._run_here(job, fn, batch, context, None)

    def join_round_locked(self, running: Running) -> Generation:
        """Return the generation for a job dispatched from a thread that runs jobs.

        A job of this dispatcher dispatching a follow-up: the follow-up joins
        its round. Anyone else: the current generation.
        """
        parent = running.generation
        if parent is None or parent.round.owner is not self.owner:
            return self._generation
        return self.follow_up_locked(parent)

    def enqueue_failed(
        self,
        error: BaseException,
        spawn: threading.Thread | bool | None,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
    ) -> None:
        """Clean up after an enqueue (`submit`, `Dispatcher.dispatch`) that raised; re-raise but for `NoThread`.

        A job is counted and takes its place only in the same hold of the
        lock that queues it, so nothing needs giving back. `NoThread`: the
        pool has no thread and cannot start one, so the caller runs the job.
        Anything else (DispatcherClosed, PoolFull, Ctrl-C): a reserved worker
        that did not start is counted out.
        """
        # A producer woken for room may fail before it takes it (Ctrl-C just
        # after the wake-up): the next waiter gets the wake-up instead.
        self.pass_room_on()
        if isinstance(error, NoThread):
            self._run_here(job, fn, batch, context, None)
            return
        if isinstance(spawn, threading.Thread):
            self.forget_reservation(spawn)
        raise error

    def sleep_until_woken(self, waiter: threading.Lock, deadline: float | None, timeout: float | None) -> None:
        """Sleep until the pool wakes ``waiter`` (room came, or the pool closed); then look again.

        A wake-up promises nothing: another producer may take the room
        first. One that this producer cannot use (it timed out or was
        interrupted just as it was woken) goes to the next waiter, so room
        never sits unused next to a sleeping producer. The waiter is not
        used again once this raises.

        Raises:
            PoolFull: ``deadline`` passed first.
        """
        woken = False
        try:
            # In slices (see WAIT_SLICE), the waiter kept in line: a slice
            # that ends is not a wait that runs out. A wake-up that comes
            # between two slices leaves the waiter unlocked, and the next
            # slice takes it at once.
            while True:
                step = WAIT_SLICE if deadline is None else min(WAIT_SLICE, max(0.0, deadline - time.monotonic()))
                woken = waiter.acquire(True, step)
                if woken or (deadline is not None and time.monotonic() >= deadline):
                    break
        finally:
            if not woken:
                # The pool may have woken it all the same, as the wait ran out
                # or as Ctrl-C struck: the wake-up goes on to the next waiter.
                self._forget_waiter(waiter)
        if not woken:
            raise PoolFull(f"pool {self.priority} stayed full ({self.capacity}) for {timeout} s")

    def _forget_waiter(self, waiter: threading.Lock | asyncio.Future[None]) -> None:
        with self._lock:
            try:
                self._room_waiters.remove(waiter)
            except ValueError:  # woken already: the wake-up goes to the next waiter
                self._pass_room_on_locked()
            else:
                self._wanted = bool(self._due or self._room_waiters)

    def _run_here(
        self,
        job: object,
        fn: Callable[[], object],
        batch: Batch | None,
        context: contextvars.Context | None,
        generation: Generation | None,
    ) -> None:
        """Run a job in the calling thread and count it; ``generation``: it was a delayed job.

        A job dispatched now (no ``generation``) joins a round for as long as
        it runs, as a queued job does: `Dispatcher.wait` and `Dispatcher.finalize`
        wait for it, and the jobs it dispatches join its round. It is refused
        if the pool closed since it was accepted (before it joined, finalize
        could not wait for it), and, as any job, dropped and counted
        cancelled if ``finalize(cancel_pending=True)`` came before it started.

        Raises:
            DispatcherClosed: The pool refuses the calling thread's dispatch now.
        """
        delayed = generation is not None
        running = role.running
        if running is None:
            running = role.running = Running()
        previous = running.generation
        joined: Generation | None = None
        try:
            if generation is None:
                with self._lock:
                    if self._state is not _OPEN and self.refuses():
                        raise DispatcherClosed("cannot dispatch after finalize() was called") from None
                    joined = self.join_round_locked(running)
                    joined.pending += 1  # no call between the two: Ctrl-C finds it counted and known
                generation = joined
            running.generation = generation  # its follow-ups join its round
            started = time.perf_counter()
            if generation.cancelled:  # finalize(cancel_pending=True) came first: as a worker would, drop it
                error: BaseException | None = CancelledBeforeStart()
                tell_cancelled(fn)  # the last call: Ctrl-C at its entry finds nothing told, nothing counted
            else:
                error = call_job(fn, context)
        except BaseException:
            # Ctrl-C before the job ran: it is neither run nor counted.
            running.generation = previous
            if joined is not None:
                with self._lock:  # inline, not a call: Ctrl-C strikes at calls
                    joined.pending -= 1
                    if not joined.pending and joined.done is not None:
                        generation_done(joined)
            raise
        # The job has run: whatever strikes from here on (Ctrl-C at a call),
        # it is counted, and the exception says so to the dispatch that ran it.
        cancelled = propagate = False
        try:
            try:
                cancelled = isinstance(error, CancelledBeforeStart)
                # On the main thread a KeyboardInterrupt or SystemExit may be Ctrl-C
                # or a signal handler, not the job: it is counted, then propagates.
                propagate = error is not None and interrupts_caller(error)
                if error is not None and not (cancelled or propagate or isinstance(error, ReportedElsewhere)):
                    self._report(job, error, batch, time.perf_counter() - started)
            finally:
                running.generation = previous  # first, no call before it: Ctrl-C cannot skip it
                try:
                    with self._lock:
                        if cancelled:
                            self.count_cancelled_locked()
                        elif error is None:
                            self._inline_completed += 1
                        else:
                            self._failed += 1
                        if delayed:
                            self._delayed -= 1
                        # Inline, not a call: Ctrl-C strikes at calls. A barrier
                        # mends an event that Ctrl-C kept from being set.
                        generation.pending -= 1
                        if not generation.pending and generation.done is not None:
                            generation_done(generation)
                finally:
                    if batch is not None:
                        batch._job_over(fn, cancelled=cancelled)
            if propagate:
                assert error is not None
                if not delayed:  # a chunk struck before it took its jobs: they never start
                    tell_cancelled(fn)
                mark_ran(error)  # in the try: Ctrl-C as it runs gets the note instead
        except BaseException as struck:
            mark_ran(struck)
            raise
        if propagate:
            raise error  # type: ignore[misc]  # not None: checked above

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

    def submit_due(self, item: _Item) -> None:
        """Enqueue a delayed job whose time has come, without ever blocking.

        If the pool is full, the item waits in ``_due``, and the next job of
        the pool to end hands its place over to it, ahead of blocked
        producers. If the pool stops (its dispatcher was dropped without
        finalize, as the timer took the job), the job is cancelled: queued
        behind the workers' sentinels, it would never run.
        """
        try:
            with self._lock:
                if self._stopping:
                    cancelled: list[tuple[Batch, object]] = []
                    self._delayed -= 1
                    self._cancel_item_locked(item, cancelled, waited_for_room=False)
                    stopped = True
                else:
                    stopped = False
                    if not self._room:
                        if self._planned:
                            self._due.append(item)
                            self._wanted = True
                            return
                        raise NoThread  # no room, and no thread to free any
                    spawn = self._spawning and self._reserve_worker_locked()
                    self._room -= 1
                    self._hand_over_due_locked(item)
        except NoThread:
            # No thread can run it: the timer thread does (even while finalize drains).
            job, fn, generation, batch, context = item
            self._run_here(job, fn, batch, context, generation)
            return
        if stopped:
            tell_cancelled(item[1])
            for batch, call in cancelled:
                batch._job_over(call, cancelled=True)
        elif spawn:
            self.start_reserved(spawn)

    def _reserve_worker_locked(self) -> threading.Thread | None:
        """Return a new worker to start if the jobs, with the one about to come, outnumber the threads.

        The first worker is started at once, so that a job never waits in a
        queue with no thread. Later ones are counted here and started by
        the caller, outside the lock: starting a thread takes long enough to
        stall the pool.
        """
        in_pool = self._places - self._room + 1
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
            # on Python 3.12.0-1): the pool has none, so the caller runs the
            # job. Counted out before any call: Ctrl-C strikes at calls.
            self._planned -= 1
            self._spawning = True
            self._threads.remove(thread)
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

    def _hand_over_due_locked(self, item: _Item) -> None:
        """Queue a due delayed job with the place it got."""
        self._delayed -= 1
        self._jobs.put(item)  # the last call: Ctrl-C cannot leave it counted and not queued

    def free_place_locked(self) -> None:
        """Free the place of a job that is over: for a due delayed job, or for the next producer that waits.

        A pool that stops hands nothing over: behind the workers' sentinels,
        a job would never run (`cancel_due` counts it cancelled).
        """
        if self._due and not self._stopping:
            self._hand_over_due_locked(self._due.popleft())  # the place goes with it
        else:
            self._room += 1
            self._pass_room_on_locked()
        self._wanted = bool(self._due or self._room_waiters)

    def add_room_waiter(self, waiter: asyncio.Future[None]) -> bool:
        """Resolve ``waiter`` when a place frees up; ``False`` if one is free now."""
        with self._lock:
            if self._state is not _OPEN and self.refuses():
                raise DispatcherClosed("cannot dispatch after finalize() was called")
            if self._room:
                return False
            self._room_waiters.append(waiter)
            self._wanted = True
            return True

    def pass_room_on(self) -> None:
        """Wake the next waiting producer if the pool has room."""
        with self._lock:
            self._pass_room_on_locked()

    def remove_room_waiter(self, waiter: asyncio.Future[None]) -> None:
        """Forget ``waiter``, whose task stopped waiting, and hand on any wake-up it was given.

        The pool may have woken ``waiter`` just before its task was
        cancelled: whenever the pool has room, that wake-up goes to the next
        waiter, so a cancelled waiter never keeps a place from the others.
        """
        self._forget_waiter(waiter)

    def _pass_room_on_locked(self) -> None:
        # Wake the first waiter, a blocked thread or an async producer. One
        # that cannot take the wake-up now (its loop is closed, or not
        # running) passes it on at once; a woken one that does not take the
        # room passes it on too.
        waiters = self._room_waiters
        while self._room and waiters:
            waiter = waiters.popleft()
            if type(waiter) is _LockType:
                waiter.release()
                break
            if wake_future(waiter):  # type: ignore[arg-type]
                break
        self._wanted = bool(self._due or waiters)

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
            closed.pending_at_close = closed.pending
            closed.follow_ups_at_close = closed.follow_ups
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
        return not runs_job_of(self.owner)

    def close(self, *, draining: bool) -> None:
        """Refuse new jobs and wake the producers waiting for room.

        A woken producer looks again: it is refused, unless it is one of the
        dispatcher's own jobs while finalize drains, which goes on waiting.

        Args:
            draining: Keep accepting follow-up jobs from the dispatcher's own
                jobs (`finalize` without ``cancel_pending``).
        """
        with self._lock:
            # Never back from CLOSED: a draining finalize overtaken by a
            # cancelling one (or one that finished) must not reopen the pool
            # to follow-ups.
            if self._state is not State.CLOSED:
                self._state = _DRAINING if draining else State.CLOSED
            waiters = self._room_waiters
            while waiters:
                waiter = waiters.popleft()
                if type(waiter) is _LockType:
                    waiter.release()
                else:
                    wake_future(waiter)  # type: ignore[arg-type]
            self._wanted = bool(self._due)

    def cancel_queued(self, generations: list[Generation]) -> None:
        """Cancel the jobs of ``generations`` that wait in the queue or for room (not yet started).

        The generations are marked, and the workers count each such job
        cancelled instead of running it: the calling thread only sets flags,
        so Ctrl-C cannot leave a job half-cancelled.
        """
        with self._lock:
            # The flags first: workers take jobs from the queue without the
            # lock, and read the flag only after. A job still in the queue
            # when it is counted below is then sure to be dropped, never run.
            self._generation.cancelled = True
            for generation in generations:
                generation.cancelled = True
            if not self._queue_cancelled:
                # What waits is counted cancelled now, once: the workers that
                # drop it later use up this count before adding to it, so the
                # counter never goes down, whatever a snapshot falls between.
                waiting = max(0, self._jobs.qsize() - self._sentinels) + len(self._due)
                self._cancelled += waiting
                self._precounted += waiting
                self._queue_cancelled = True

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
        self._wanted = bool(self._room_waiters)

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
                    self._wanted = bool(self._due or self._room_waiters)
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
        self._lock = threading.RLock()
        self._state = State.CLOSED
        self._stopping = True
        self._threads = []
        self._live = 0

    def stats(self) -> PoolStats:
        """Return a consistent snapshot of the pool's counters."""
        with self._lock:
            queued = max(0, self._jobs.qsize() - self._sentinels)
            busy = self._places - self._room - queued
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
    if not lock.acquire(False):  # engine threads never see KeyboardInterrupt
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
        lock.release()
    if batch is not None:
        batch._job_over(fn, cancelled=error is CancelledBeforeStart)
