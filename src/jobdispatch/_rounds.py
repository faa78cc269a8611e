"""Rounds of work, and what each thread is to jobdispatch.

A `Round` is what one barrier waits for: the jobs dispatched between two
barriers, in every pool, with every follow-up they dispatch. The thread that
runs a job knows its `Generation` (`Running`), so whatever the job dispatches
joins the same round. Counters of a generation change under its pool's lock.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = [
    "Generation",
    "Round",
    "Running",
    "WorkerThread",
    "current_pool",
    "finish_generation",
    "generation_done",
    "role",
    "runs_job_of",
    "runs_jobs_of",
    "wake_future",
]


class _ThreadRole(threading.local):
    """What the calling thread is to jobdispatch: a worker of some pool, running some job, or neither."""

    pool: Pool | None = None  # the pool whose worker thread this is
    running: Running | None = None  # set on a thread that runs jobs: whose round they belong to
    reporting = False  # the thread is in a batch's progress callback: it must not wait for the timer


class WorkerThread(threading.Thread):
    """A worker thread of a pool once it runs: a daemon thread, except to the threads its jobs start.

    Workers are daemon threads, so that idle ones never hold the interpreter
    at exit (its exit hook drains the pools instead). A new thread takes its
    daemon flag from the thread that creates it, so a thread that a job
    starts would be a daemon too, and be stopped at exit with its work
    undone. Asked from its own jobs, a worker says it is no daemon: a
    thread a job starts is then waited for at exit, like one started
    anywhere else (and as on the standard library's thread pool).

    A worker starts as a plain `threading.Thread` and takes this class on
    itself once it runs (see `_threads.ThreadPool`): the interpreter has
    seen it start as a daemon, and no code of the library runs inside
    ``Thread.start``, where Ctrl-C would leave a thread half-started.
    """

    @property
    def daemon(self) -> bool:
        if threading.get_ident() == self.ident:
            return False
        return super().daemon

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        vars(threading.Thread)["daemon"].__set__(self, daemonic)  # the property of the base class


class Running:
    """The generation of the job a thread runs now, so that the jobs it dispatches join its round."""

    __slots__ = ("generation",)

    def __init__(self) -> None:
        self.generation: Generation | None = None


role = _ThreadRole()


def current_pool() -> Pool | None:
    """Return the pool whose worker thread is calling, or ``None``."""
    return role.pool


def runs_jobs_of(owner: object) -> bool:
    """Whether the calling thread is a worker of ``owner``'s dispatcher, or runs one of its jobs now.

    The second covers a job run by the timer thread, or by the thread that
    dispatched it, when its pool has no thread. A barrier is refused on such
    a thread: it could wait for a job that only this thread would run.
    """
    pool = role.pool
    if pool is not None and pool.owner is owner:
        return True
    return runs_job_of(owner)


def runs_job_of(owner: object) -> bool:
    """Whether the calling thread runs one of the jobs of ``owner``'s dispatcher right now.

    Only such a thread may dispatch while `Dispatcher.finalize` drains: its
    job is pending until it ends, so what it dispatches joins a round that
    the drain still waits for. A worker between two jobs (in a batch's
    progress callback, or a thread initializer) is not running one: a job
    it dispatched there could come after the drain found nothing pending,
    and stay in the queue behind the workers' stop signals.
    """
    running = role.running
    generation = None if running is None else running.generation
    return generation is not None and generation.round.owner is owner


class Round:
    """The jobs dispatched to a dispatcher between two barriers, with every follow-up they dispatch.

    A round has one `Generation` in each pool. `Dispatcher.wait` closes the
    current round (new jobs from other threads go to the next one) and waits
    until the closed rounds have no pending job. A job dispatched from inside
    a job joins the round of the job that dispatched it, in whatever pool it
    goes to, so a barrier also waits for the work its own round spawns.
    """

    __slots__ = ("generations", "owner")

    def __init__(self, owner: object, pools: int) -> None:
        self.owner = owner
        self.generations = tuple(Generation(self) for _ in range(pools))


class Generation:
    """The jobs of one `Round` in one pool.

    Its counters change under the pool's lock only. ``done`` is made by a
    barrier that waits for a closed generation; it is set whenever
    ``pending`` falls to zero, and cleared again if a follow-up job joins.
    """

    __slots__ = (
        "cancelled",
        "done",
        "follow_ups",
        "follow_ups_at_close",
        "pending",
        "pending_at_close",
        "round",
        "waiters",
    )

    def __init__(self, round_: Round) -> None:
        self.round = round_
        self.pending = 0
        self.follow_ups = 0  # jobs that joined from a running job of the round: they can reopen it
        # Both counts as a barrier closed the round (`Pool.begin_generation`),
        # in the same hold of the lock: a barrier's progress counts from there.
        self.pending_at_close = 0
        self.follow_ups_at_close = 0
        self.cancelled = False  # finalize(cancel_pending=True): workers drop its jobs
        self.done: threading.Event | None = None
        self.waiters: list[asyncio.Future[None]] = []


def finish_generation(generation: Generation) -> None:
    generation.pending -= 1
    if not generation.pending and generation.done is not None:
        generation_done(generation)


def generation_done(generation: Generation) -> None:
    assert generation.done is not None
    generation.done.set()
    for waiter in generation.waiters:
        wake_future(waiter)
    generation.waiters.clear()


def wake_future(future: asyncio.Future[None]) -> bool:
    """Resolve an asyncio future from any thread, unless it is done by then.

    Here only its state is read: a future cancelled already is not woken.
    Its task was cancelled, perhaps by the thread that runs its loop just
    before that thread blocked (`PoolExecutor.shutdown` hands the calls
    waiting in its loop over, blocking), and the wake-up must go to a
    producer that can take it. The future is resolved on its loop's thread
    (asyncio futures are not thread-safe), so a ``True`` does not promise
    that its task takes the wake-up: it may be cancelled before the loop
    resolves the future.

    A loop that is not running (``run_until_complete`` returned with the
    task still waiting) resolves the future only if it runs again: the
    future is resolved then, and its task looks again, but the wake-up must
    go now to a producer that can take it.

    Returns:
        ``False`` if the future is cancelled, or its loop closed or not
        running: nobody will take the wake-up now.
    """
    if future.done():
        return False

    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    loop = future.get_loop()
    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: its coroutine is gone and nobody waits
        return False
    return loop.is_running()  # after the call: a loop that stops meanwhile is seen stopped
