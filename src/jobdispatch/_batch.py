"""Batches: a group of jobs that a ``with`` block waits for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias, TypeVarTuple

from ._config import WAIT_SLICE
from ._errors import DispatcherClosed, DispatcherError
from ._outcome import QUEUED_NOTE, CancelledBeforeStart, logger, was_queued
from ._progress import TqdmProgress
from ._rounds import role, wake_future
from ._scheduler import Run

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher, JobLike
    from ._job import Job
    from ._scheduler import DelayedJob

_Ts = TypeVarTuple("_Ts")

__all__ = ["Batch", "BatchCall", "ProgressCallback"]

ProgressCallback: TypeAlias = Callable[[int, int], object]
"""A batch progress report, called as ``progress(done, total)``."""


_WAITING, _STARTED, _CANCELLED, _OVER = range(4)


class BatchCall:
    """What a worker runs for a batch job: the job, unless the batch dropped it.

    Its state changes under the batch's lock, so a job is either started or
    cancelled, never both, and counted once.
    """

    __slots__ = ("batch", "fn", "ran", "state", "withdrawn")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.fn: Callable[[], object] | None = None
        self.state = _WAITING
        self.withdrawn = False  # taken back by a dispatch that raised, before any worker started it
        self.ran = False  # the job has returned or raised

    def __call__(self) -> None:
        if not self.batch._start(self):
            self.cancel_unstarted()  # a delayed job's handle learns that it never runs
            raise CancelledBeforeStart
        assert self.fn is not None
        try:
            self.fn()
        finally:
            self.ran = True

    def cancel_unstarted(self) -> None:
        """Tell a delayed job's handle that its pool dropped the job before it started."""
        if isinstance(self.fn, Run):
            self.fn.cancel_unstarted()

    def __repr__(self) -> str:
        return f"<batch call of {self.fn!r}>"


class Batch:
    """A round of jobs on a dispatcher, ended by a barrier.

    Made by `Dispatcher.batch`. Jobs dispatched through the batch run in
    their pools like any other; leaving the ``with`` block waits for them,
    and only them. Several batches may be open on one dispatcher at once.

    Example:
        ```python
        with dispatcher.batch() as batch:
            for path in paths:
                batch.dispatch(lambda p=path: compress(p), priority=1)
        # every compress() has finished here
        ```

    If any job of the batch raised, leaving the block raises an
    `ExceptionGroup` of their exceptions; those failures are not passed to
    the dispatcher's ``on_error``. If the block itself raises, the batch's
    jobs that have not started are cancelled, the running ones are awaited,
    and the block's exception propagates unchanged.
    """

    def __init__(self, dispatcher: Dispatcher, *, progress: bool | ProgressCallback | None = None) -> None:
        self._dispatcher = dispatcher
        self._progress: ProgressCallback | None = None  # called once per job, in order
        self._bar: TqdmProgress | None = None  # progress=True: no order needed, close() draws the final count
        if progress is True:
            self._bar = TqdmProgress(unit="job")
        elif callable(progress):
            self._progress = progress
        elif progress is not None and progress is not False:
            raise TypeError(f"progress must be a bool, a callable or None, got {progress!r}")
        self._progress_lock = threading.Lock()
        self._async_waiters: list[asyncio.Future[None]] = []
        # `with self._lock`, never `with self._condition`: Condition.__exit__ is
        # Python code, where Ctrl-C can strike and leave the lock held.
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._pending = 0
        self._total = 0
        self._finished = 0
        self._errors: list[BaseException] = []
        self._cancelled = 0
        self._waiting: set[BatchCall] = set()  # dispatched, not started yet
        self._state = "new"

    # -- public ------------------------------------------------------------

    @property
    def total(self) -> int:
        """Jobs dispatched through this batch so far."""
        with self._lock:
            return self._total

    @property
    def done(self) -> int:
        """Jobs of this batch that finished, failed or were cancelled."""
        with self._lock:
            return self._finished

    def dispatch(
        self,
        job: Job | Callable[[*_Ts], object],
        /,
        *args: *_Ts,
        priority: int | None = None,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        """Dispatch ``job`` as part of this batch.

        Takes the same arguments as `Dispatcher.dispatch`, and raises the
        same errors. A job of the batch may dispatch follow-ups through the
        batch too: leaving the block waits for them as well, and their
        failures join the batch's `ExceptionGroup`.
        """
        call = BatchCall(self)
        try:
            self._add(call)
            self._dispatcher._submit(job, priority, timeout, call, args, name)
        except BaseException as error:
            call.withdrawn = True  # a plain store: marked even if Ctrl-C strikes as _withdraw starts
            self._withdraw(call)
            if call.state == _OVER and not call.ran:  # taken back before it started: it will not run
                with contextlib.suppress(Exception, ValueError):
                    error.__notes__.remove(QUEUED_NOTE)
            raise

    def dispatch_many(
        self, jobs: Iterable[JobLike], *, priority: int | None = None, timeout: float | None = None
    ) -> int:
        """Dispatch every job of ``jobs`` as part of this batch, in order; return how many.

        Takes the same arguments as `Dispatcher.dispatch_many` but
        ``chunksize``: each job of a batch is counted, cancelled and reported
        on its own.
        """
        count = 0
        try:
            for job in jobs:
                self.dispatch(job, priority=priority, timeout=timeout)
                count += 1
        except BaseException as error:
            if was_queued(error):
                count += 1
            with contextlib.suppress(Exception):
                error.add_note(f"jobdispatch: dispatch_many dispatched {count} jobs before this error, and no other")
            raise
        return count

    def dispatch_later(
        self,
        delay: float,
        job: Job | Callable[[*_Ts], object],
        /,
        *args: *_Ts,
        priority: int | None = None,
        name: str | None = None,
    ) -> DelayedJob:
        """Dispatch ``job`` as part of this batch, ``delay`` seconds from now.

        Takes the same arguments as `Dispatcher.dispatch_later`, and returns
        its `DelayedJob`: a job cancelled through it counts as cancelled in
        the batch.
        """
        call = BatchCall(self)
        try:
            self._add(call)
            return self._dispatcher._submit_later(delay, job, priority, call, args, name)
        except BaseException:
            call.withdrawn = True  # a plain store: marked even if Ctrl-C strikes as _withdraw starts
            self._withdraw(call)
            raise

    async def dispatch_async(self, job: JobLike, *, priority: int | None = None) -> None:
        """Dispatch ``job`` as part of this batch without blocking the event loop.

        Takes the same arguments as `Dispatcher.dispatch_async`.
        """
        call = BatchCall(self)
        try:
            self._add(call)
            await self._dispatcher._submit_async(job, priority, call)
        except BaseException:
            call.withdrawn = True  # a plain store: marked even if Ctrl-C strikes as _withdraw starts
            self._withdraw(call)
            raise

    def __enter__(self) -> Batch:
        with self._lock:
            if self._state != "new":
                raise DispatcherError("a batch can be entered only once")
            self._state = "open"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._dispatcher._refuse_in_own_worker("leave a batch")
        if exc is not None:
            self._cancel_waiting()
        try:
            with self._lock:
                self._withdraw_marked_locked()
                while self._pending > 0:
                    self._condition.wait(WAIT_SLICE)  # in slices: see WAIT_SLICE
                self._state = "closed"  # in the same hold: no job slips in after the wait
        except BaseException:
            # Interrupted (Ctrl-C): drop what has not started and let it go.
            self._cancel_waiting()
            raise
        self._finish(exc)

    async def __aenter__(self) -> Batch:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._dispatcher._refuse_in_own_worker("leave a batch")
        if exc is not None:
            self._cancel_waiting()
        loop = asyncio.get_running_loop()
        try:
            while True:
                with self._lock:
                    self._withdraw_marked_locked()
                    if self._pending <= 0:
                        self._state = "closed"
                        break
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._async_waiters.append(waiter)
                await waiter
        except BaseException:
            self._cancel_waiting()  # the awaiting task was cancelled
            raise
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        with self._lock:
            errors, total, cancelled = list(self._errors), self._total, self._cancelled
            done = self._finished
        if self._bar is not None:
            try:
                self._bar.close(done, total)  # draws the final counts
            except Exception:  # a broken bar must not hide the batch's outcome
                logger.exception("the progress bar of a batch raised")
        if exc is not None:
            for error in errors:
                logger.error("a job of a batch left by an exception failed", exc_info=error)
            return
        if errors:
            raise BaseExceptionGroup(f"{len(errors)} of {total} jobs in the batch failed", errors)
        if cancelled:
            raise DispatcherClosed(f"{cancelled} of {total} jobs in the batch were cancelled")

    def __repr__(self) -> str:
        with self._lock:
            return f"<jobdispatch.Batch {self._state}, {self._finished}/{self._total} done, {len(self._errors)} failed>"

    # -- called by pools ---------------------------------------------------

    def _add(self, call: BatchCall) -> None:
        """Count ``call`` in; the caller withdraws it if anything raises after this starts."""
        with self._lock:
            if self._state != "open":
                raise DispatcherError("dispatch through a batch only inside its with block")
            self._pending += 1
            self._total += 1
            # The one C call last: Ctrl-C strikes only after calls, so the call
            # is either not counted or counted and waiting, and _withdraw
            # tells the two apart.
            self._waiting.add(call)

    def _withdraw(self, call: BatchCall) -> None:
        """Forget a call whose dispatch raised, unless its job started anyway.

        A dispatch interrupted (Ctrl-C) after its job was queued raises too;
        if a worker has started the job by then, it counts as usual. If not,
        taking the call out of ``_waiting`` makes the worker drop it when it
        comes (the pool counts it cancelled).
        """
        with self._lock:
            self._withdraw_locked(call)

    def _withdraw_locked(self, call: BatchCall) -> None:
        # Count it out first, then take it (atomic: either this or the
        # worker's _start takes it): a Ctrl-C after the removal leaves the
        # counts right, and the worker that finds it withdrawn counts nothing
        # more (_count_over).
        self._pending -= 1
        self._total -= 1
        try:
            self._waiting.remove(call)
        except KeyError:
            # Started, cancelled, or never added (the dispatch raised before
            # _add counted it): counted that way already.
            self._pending += 1
            self._total += 1
            # But a job the dispatching thread ran itself (its pool had no
            # thread) may have had its count cut short by Ctrl-C: finish it.
            if call.ran and self._count_over(call, False):
                self._pending -= 1
                self._notify_if_idle()
            return
        call.state = _OVER
        self._notify_if_idle()

    def _withdraw_marked_locked(self) -> None:
        """Withdraw the calls whose dispatch raised but whose _withdraw a Ctrl-C prevented."""
        # set.copy() copies the set atomically, also without the GIL: workers
        # take calls out of it without the lock (_start), which would break
        # a scan of the set itself (and tuple(set) copies item by item).
        for call in self._waiting.copy():
            if call.withdrawn:
                self._withdraw_locked(call)

    def _start(self, call: BatchCall) -> bool:
        # No lock: set.remove is atomic, so either this or _cancel_waiting
        # takes a call out of the set, never both.
        try:
            self._waiting.remove(call)
        except KeyError:
            return False
        call.state = _STARTED
        return True

    def _cancel_waiting(self) -> None:
        """Count every job that has not started as cancelled, at once."""
        count = 0
        with self._lock:
            while True:
                try:
                    call = self._waiting.pop()
                except KeyError:
                    break
                call.state = _CANCELLED
                count += 1
            self._finished += count
            self._cancelled += count
            self._pending -= count
            self._notify_if_idle()
        if count:
            self._dispatcher._scheduler.cancel_batch(self)

    def _record_error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)

    def _job_over(self, call: object, *, cancelled: bool) -> None:
        """Count a job of the batch as over, unless it already was."""
        assert isinstance(call, BatchCall)
        if self._progress is not None:
            # Report before the job stops counting as pending, so that leaving
            # the batch also waits for the last progress call.
            with self._progress_lock:
                with self._lock:
                    if not self._count_over(call, cancelled):
                        return
                    done, total = self._finished, self._total
                # The timer may need this lock to count a job of the batch
                # that the callback cancels: cancel() must not wait for it.
                reporting, role.reporting = role.reporting, True
                try:
                    self._progress(done, total)
                except BaseException:  # even SystemExit: it must not kill a worker
                    with contextlib.suppress(BaseException):
                        logger.exception("the progress callback of a batch raised")
                finally:
                    role.reporting = reporting
            with self._lock:
                self._pending -= 1
                self._notify_if_idle()
            return
        bar = self._bar
        if bar is not None:
            # No order needed: the bar shows the latest counts, and leaving the
            # batch draws the final ones (_finish).
            with self._lock:
                if not self._count_over(call, cancelled):
                    return
                self._pending -= 1
                self._notify_if_idle()
                done, total = self._finished, self._total
            if monotonic() >= bar.due:  # the bar takes counts a few times a second
                try:
                    bar(done, total)
                except BaseException:  # even SystemExit: it must not kill a worker
                    with contextlib.suppress(BaseException):
                        logger.exception("the progress bar of a batch raised")
            return
        with self._lock:
            if self._count_over(call, cancelled):
                self._pending -= 1
                self._notify_if_idle()

    def _count_over(self, call: BatchCall, cancelled: bool) -> bool:
        if call.state == _CANCELLED or call.state == _OVER:
            return False  # counted already
        if call.withdrawn and call.state == _WAITING:
            return False  # withdrawn before it started: counted out by _withdraw
        if call.state == _WAITING:
            self._waiting.discard(call)  # dropped by the pool before it started
        call.state = _OVER
        self._finished += 1
        if cancelled:
            self._cancelled += 1
        return True

    def _notify_if_idle(self) -> None:
        if self._pending <= 0:
            self._condition.notify_all()
            for waiter in self._async_waiters:
                wake_future(waiter)
            self._async_waiters.clear()
