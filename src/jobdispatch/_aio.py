"""The asyncio bridge: dispatch, run, wait and finalize from a coroutine.

Nothing here blocks the event loop. A producer that finds its pool full
registers an asyncio future with the pool and awaits it; the thread that
frees a place resolves it through the loop (`wake_future`). Waiting for a
barrier works the same way, and finalizing runs on a thread of its own.

The rules of the blocking API hold here too: a job of the dispatcher that
runs an event loop may not wait for the dispatcher (it would wait for
itself), and when it dispatches into its own full pool the new job runs at
once in the calling thread instead of waiting for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from ._backed import BackedPool
from ._config import WAIT_SLICE, check_timeout
from ._errors import DispatcherClosed, PoolFull
from ._outcome import CancelledBeforeStart, ReportedElsewhere, safe_repr
from ._pool import Pool
from ._rounds import Generation, current_pool

if TYPE_CHECKING:
    from ._batch import Batch, BatchCall
    from ._dispatcher import Dispatcher, JobLike

__all__ = ["leave", "run", "submit", "wait"]

_T = TypeVar("_T")


async def submit(dispatcher: Dispatcher, job: JobLike, priority: int | None, call: BatchCall | None) -> None:
    """Dispatch ``job`` (for a batch: ``call``), awaiting room in its pool."""
    dispatcher._check_open()
    pool, fn, reported = dispatcher._route(job, priority)
    context = contextvars.copy_context() if dispatcher._propagate_context else None
    batch = None
    if call is not None:
        call.fn = fn
        fn, batch = call, call.batch
    try:
        pool.submit(reported, fn, batch, context, 0)
    except PoolFull:
        await _enter_full(pool, reported, fn, batch, context)


async def _enter_full(
    pool: Pool,
    job: object,
    fn: Callable[[], object],
    batch: Batch | None,
    context: contextvars.Context | None,
) -> None:
    """Put a job into ``pool``, which was full: await a place without blocking the loop."""
    if current_pool() is pool:
        # A job of this pool runs the loop. As with Dispatcher.dispatch, it
        # never waits for room in its own pool (once every worker did, the
        # pool would deadlock): submit runs the new job here if it is full.
        pool.submit(job, fn, batch, context, None)
        return
    loop = asyncio.get_running_loop()
    while True:
        waiter: asyncio.Future[None] = loop.create_future()
        try:
            if pool.add_room_waiter(waiter):  # False: a place came free meanwhile
                await waiter
        except BaseException:
            # Cancelled, perhaps just as the pool woke this waiter: it takes
            # no place, so whatever wake-up it got goes to the next waiter.
            pool.remove_room_waiter(waiter)
            raise
        # The pool removed the waiter as it woke it. Another producer may
        # have taken the place first: then wait again.
        try:
            pool.submit(job, fn, batch, context, 0)
        except PoolFull:
            continue
        except BaseException:
            # Ctrl-C as submit was entered, before it could hand the wake-up
            # on itself: the next waiter gets it.
            pool.pass_room_on()
            raise
        return


async def wait(dispatcher: Dispatcher, timeout: float | None) -> bool:
    """Await the jobs dispatched so far and their follow-ups, as `Dispatcher.wait` blocks for them."""
    if dispatcher._forked:
        raise DispatcherClosed(dispatcher._closed_reason)
    dispatcher._refuse_in_own_worker("wait")
    seconds = check_timeout(timeout)
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    for round_ in dispatcher._close_round():
        while True:  # the same passes as Dispatcher._wait_round
            before = dispatcher._follow_ups(round_)
            for pool in dispatcher._pools.values():
                if not await _idle(pool, round_.generations[pool.index], deadline):
                    return False
            if dispatcher._follow_ups(round_) == before:
                break
        dispatcher._forget_round(round_)
    return True


async def _idle(pool: Pool, generation: Generation, deadline: float | None) -> bool:
    """Await a moment when ``generation`` has no pending job; ``False`` if ``deadline`` comes first."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    try:
        if not pool.add_generation_waiter(generation, waiter):
            return True
        while True:
            # In slices, looking at the count after each: a thread that
            # emptied the generation may have been cut short (Ctrl-C) before
            # it resolved the waiter.
            step = WAIT_SLICE if deadline is None else min(WAIT_SLICE, max(0.0, deadline - loop.time()))
            done, _ = await asyncio.wait([waiter], timeout=step)
            if done or not pool.generation_state(generation)[0]:
                return True
            if deadline is not None and loop.time() >= deadline:
                return False
    finally:
        # Timed out or cancelled: the generation must not keep the future
        # until its last job ends (a polling loop would pile them up).
        if not waiter.done():
            pool.remove_generation_waiter(generation, waiter)
            waiter.cancel()


async def run(
    dispatcher: Dispatcher,
    fn: Callable[..., _T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    priority: int | None,
    name: str | None,
) -> _T:
    """Run ``fn(*args, **kwargs)`` on a pool and return its result; see `Dispatcher.run`."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {safe_repr(fn)}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"fn must be a plain function, not the coroutine function {safe_repr(fn)}: await it directly")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    dispatcher._check_open()
    target = dispatcher._only_pool if priority is None else dispatcher._pools.get(priority)
    if isinstance(target, BackedPool):
        raise TypeError(
            f"run() runs a call on a pool of threads, and pool {target.label} runs its jobs on an engine: "
            "use await loop.run_in_executor(dispatcher.executor(priority), fn, *args) there"
        )
    call = _Call(fn, args, kwargs, name)
    pool, _, _ = dispatcher._route(call, priority)
    # Cancelled while waiting for room: the call never entered the pool.
    context = contextvars.copy_context()
    try:
        pool.submit(call, call, None, context, 0)
    except PoolFull:
        await _enter_full(pool, call, call, None, context)
    result: asyncio.Future[_T] = asyncio.wrap_future(call.future)
    try:
        return await result
    except BaseException as error:
        if result.done() and not result.cancelled() and result.exception() is error:
            raise  # the call's own exception
        if call.future.cancel():
            # It had not started: the pool counts it cancelled and never runs it.
            task = asyncio.current_task()
            if call.dropped and (task is None or not task.cancelling()):
                raise DispatcherClosed(
                    f"{call!r} was cancelled before it started: finalize(cancel_pending=True) dropped it"
                ) from None
            raise
        # It runs, or has just ended: nobody awaits it any more, so a failure
        # goes to on_error or the log, as any job's does.
        call.future.add_done_callback(functools.partial(_report_abandoned, pool, call))
        raise


class _Call:
    """A call made by `Dispatcher.run`: runs once and settles its future.

    The future decides, under its own lock, between a cancel from the
    awaiting task and the worker starting the call.
    """

    __slots__ = ("args", "dropped", "duration", "fn", "future", "kwargs", "what")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str | None):
        self.future: Future[Any] = Future()
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.what = name if name is not None else getattr(fn, "__qualname__", type(fn).__qualname__)
        self.dropped = False
        self.duration = 0.0

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            raise CancelledBeforeStart
        started = time.perf_counter()
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as error:
            self.duration = time.perf_counter() - started
            self.future.set_exception(error)
            raise ReportedElsewhere from None  # counted failed; the awaiting task gets the exception
        else:
            self.future.set_result(result)
        finally:
            del self.fn, self.args, self.kwargs  # no reference outlives the call

    def cancel_unstarted(self) -> None:
        """Cancel the call: `Dispatcher.finalize` dropped it before it started."""
        self.dropped = True
        self.future.cancel()

    def __repr__(self) -> str:
        return f"<jobdispatch run of {self.what!r}>"


def _report_abandoned(pool: Pool, call: _Call, future: Future[Any]) -> None:
    if not future.cancelled():
        error = future.exception()
        if error is not None:
            pool._report(call, error, None, call.duration)


async def leave(dispatcher: Dispatcher, error: BaseException | None) -> None:
    """Finalize as leaving a ``with`` block does, on a thread, so that the loop keeps running.

    Leaving on an exception cancels the jobs that have not started. If the
    awaiting task is cancelled while the jobs drain, those that have not
    started are cancelled too; the running ones are still awaited and every
    thread joined, through further cancellations, before the cancellation
    propagates.
    """
    dispatcher._refuse_in_own_worker("finalize")
    cancel = error is not None
    draining = _OnThread(functools.partial(dispatcher.finalize, cancel_pending=cancel), dispatcher)
    try:
        await draining.over()
        draining.result()
    except GeneratorExit:
        raise  # the coroutine is closed: nothing can be awaited any more (the thread finalizes on)
    except BaseException:
        finishing = [draining]
        if not cancel:
            # Drop what has not started, as `with` does when interrupted. The
            # first finalize, still draining, then finds the jobs gone.
            finishing.append(_OnThread(functools.partial(dispatcher.finalize, cancel_pending=True), dispatcher))
        await _through_cancellation(finishing)
        if finishing[-1] is not draining:
            finishing[-1].result()  # an error of the finalize that cancels comes out, chained
        raise


class _OnThread:
    """A call run on a new thread, and an asyncio future that settles once the thread has ended."""

    def __init__(self, fn: Callable[[], None], dispatcher: Dispatcher) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self._outcome: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(fn, loop), name=f"{dispatcher._name}-finalize", daemon=True
        )
        try:
            self._thread.start()
        except Exception as error:
            # A thread limit. Finalizing here instead would block the loop,
            # and deadlock on any job that waits for it.
            raise RuntimeError(
                f"cannot start the thread that finalizes dispatcher {dispatcher._name!r} ({error}): "
                "it was not finalized; call finalize() to finish"
            ) from error

    def _run(self, fn: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            fn()
        except BaseException as error:
            self._outcome.append(error)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits the future
                loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        """Settle the future once the thread has ended (on the loop's thread)."""
        self._thread.join()  # it has made its last call: this returns at once
        if not self.done.done():
            if self._outcome:
                self.done.set_exception(self._outcome[0])
            else:
                self.done.set_result(None)

    async def over(self) -> None:
        """Await the end of the thread; a cancellation of the awaiting task leaves the thread and the future alone.

        The thread's wake-up, a callback on the loop, may be cut short (Ctrl-C
        on the loop's thread as it runs): a thread seen ended settles the
        future here, within `WAIT_SLICE`.
        """
        while not self.done.done():
            await asyncio.wait([self.done], timeout=WAIT_SLICE)
            if not self.done.done() and not self._thread.is_alive():
                self._settle()

    def result(self) -> None:
        """Raise what the call raised, if anything."""
        self.done.result()


async def _through_cancellation(finishing: list[_OnThread]) -> None:
    """Await the end of each of ``finishing`` to the end, whatever cancels the awaiting task meanwhile."""
    for call in finishing:
        while not call.done.done():
            try:
                await call.over()
            except GeneratorExit:
                raise  # the coroutine is closed: nothing can be awaited any more
            except BaseException:
                continue
        call.done.exception()  # retrieved: the caller decides what to raise
