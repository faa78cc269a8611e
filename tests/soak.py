"""Soak test: minutes of mixed load on four pools with random faults; memory and threads must stay flat.

Not collected by pytest (no test functions); run it by hand:

    python tests/soak.py --minutes 10

Producers on three threads dispatch (blocking, ``timeout=0`` and with a
timeout), dispatch_later, run batches and call wait(), into four pools of
different shapes; jobs sometimes raise (Exception, a BaseException subclass,
SystemExit, KeyboardInterrupt) or dispatch into their own pool; short-lived
dispatchers are created and finalized, or dropped without finalize, all along.
Every report interval the script prints the Python heap (tracemalloc), the
resident set size and the number of threads. At the end it checks that no job
was lost (completed + failed + cancelled == accepted, per pool), that every
thread is gone, and that memory and threads stayed flat after warm-up. Exit
status 0 means all held.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import resource
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable

from jobdispatch import Dispatcher, PoolConfig, PoolFull

POOLS = [PoolConfig(0, 4, 64), PoolConfig(1, 2, 8), PoolConfig(2, 1, 0), PoolConfig(3, 8, 1024)]


class InjectedBaseError(BaseException):
    """A fault that is neither an Exception nor SystemExit nor KeyboardInterrupt."""


FAULTS: list[type[BaseException]] = [RuntimeError, InjectedBaseError, SystemExit, KeyboardInterrupt]


class Books:
    """What the producers did and what the jobs saw, per pool, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: Counter[int] = Counter()
        self.ran: Counter[int] = Counter()
        self.faults = 0
        self.pool_full = 0
        self.hook_calls = 0
        self.batches = 0
        self.batch_groups = 0

    def add(self, field: str, key: int | None = None, n: int = 1) -> None:
        with self.lock:
            if key is None:
                setattr(self, field, getattr(self, field) + n)
            else:
                getattr(self, field)[key] += n


def rss_kib() -> int:
    """Current resident set size in KiB (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def make_job(books: Books, d: Dispatcher, priority: int, rng: random.Random) -> Callable[[], None]:
    """A job for ``priority``: mostly tiny work, sometimes a fault or a dispatch into its own pool."""
    roll = rng.random()
    fault = FAULTS[rng.randrange(len(FAULTS))] if roll < 0.05 else None
    nested = roll > 0.99

    def job() -> None:
        books.add("ran", priority)
        sum(range(100))
        if fault is not None:
            books.add("faults")
            raise fault("injected by the soak test")
        if nested:
            # Into its own pool: runs inline if the pool is full; counted as accepted here.
            try:
                d.dispatch(lambda: books.add("ran", priority), priority=priority, timeout=0)
            except PoolFull:
                return
            books.add("accepted", priority)

    return job


def produce(books: Books, d: Dispatcher, seed: int, stop: threading.Event) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        priority = rng.randrange(len(POOLS))
        action = rng.random()
        try:
            if action < 0.55:
                d.dispatch(make_job(books, d, priority, rng), priority=priority, timeout=5)
                books.add("accepted", priority)
            elif action < 0.70:
                try:
                    d.dispatch(make_job(books, d, priority, rng), priority=priority, timeout=0)
                    books.add("accepted", priority)
                except PoolFull:
                    books.add("pool_full")
            elif action < 0.85:
                d.dispatch_later(rng.random() / 200, make_job(books, d, priority, rng), priority=priority)
                books.add("accepted", priority)
            elif action < 0.97:
                batch_round(books, d, rng)
            else:
                assert d.wait(30), "wait() did not return within 30 s"
        except PoolFull:
            books.add("pool_full")


def batch_round(books: Books, d: Dispatcher, rng: random.Random) -> None:
    books.add("batches")
    try:
        with d.batch() as batch:
            for _ in range(rng.randrange(1, 12)):
                priority = rng.randrange(len(POOLS))
                job = make_job(books, d, priority, rng)
                if rng.random() < 0.2:
                    batch.dispatch_later(rng.random() / 500, job, priority=priority)
                else:
                    batch.dispatch(job, priority=priority, timeout=5)
                books.add("accepted", priority)
    except BaseExceptionGroup:
        books.add("batch_groups")


def churn(stop: threading.Event, counts: Counter[str]) -> None:
    """Short-lived dispatchers: finalized, finalized with cancel, or dropped without finalize."""
    n = 0
    while not stop.is_set():
        n += 1
        extra = Dispatcher({0: 2, 1: 1}, name=f"soak-extra-{n % 7}")
        for i in range(20):
            extra.dispatch(lambda: None, priority=i % 2)
        extra.dispatch_later(0.001, lambda: None, priority=1)
        mode = n % 3
        if mode == 0:
            extra.finalize(timeout=30)
        elif mode == 1:
            extra.finalize(cancel_pending=True, timeout=30)
        else:
            del extra
            gc.collect()
        counts[("finalized", "cancelled", "dropped")[mode]] += 1
        stop.wait(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--producers", type=int, default=3)
    args = parser.parse_args()

    log_counts: Counter[str] = Counter()

    class CountingHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_counts[record.levelname] += 1

    logger = logging.getLogger("jobdispatch")
    logger.addHandler(CountingHandler())
    logger.propagate = False
    tracemalloc.start()
    threads_at_start = threading.active_count()
    books = Books()
    hook_lock = threading.Lock()

    def on_error(job: object, error: BaseException) -> None:
        with hook_lock:
            books.hook_calls += 1

    d = Dispatcher(POOLS, name="soak", on_error=on_error)
    stop = threading.Event()
    churned: Counter[str] = Counter()
    workers = [
        threading.Thread(target=produce, args=(books, d, args.seed * 100 + i, stop), name=f"soak-producer-{i}")
        for i in range(args.producers)
    ]
    workers.append(threading.Thread(target=churn, args=(stop, churned), name="soak-churn"))
    for thread in workers:
        thread.start()

    started = time.monotonic()
    end = started + args.minutes * 60
    samples: list[tuple[float, int, int, int, int]] = []
    print(f"{'t(s)':>7} {'jobs ran':>10} {'jobs/s':>8} {'heap KiB':>9} {'peak KiB':>9} {'RSS KiB':>8} {'threads':>7}")
    last_ran, last_t = 0, started
    while time.monotonic() < end:
        stop.wait(min(args.every, max(0.0, end - time.monotonic())))
        gc.collect()
        now = time.monotonic()
        heap, peak = tracemalloc.get_traced_memory()
        with books.lock:
            ran = sum(books.ran.values())
        rate = (ran - last_ran) / max(now - last_t, 1e-9)
        last_ran, last_t = ran, now
        sample = (now - started, heap // 1024, peak // 1024, rss_kib(), threading.active_count())
        samples.append(sample)
        print(f"{sample[0]:7.0f} {ran:10d} {rate:8.0f} {sample[1]:9d} {sample[2]:9d} {sample[3]:8d} {sample[4]:7d}")
        sys.stdout.flush()

    stop.set()
    for thread in workers:
        thread.join(60)
    d.finalize(timeout=60)
    gc.collect()
    for thread in threading.enumerate():
        if thread.name.startswith("soak"):
            thread.join(30)
    problems: list[str] = []
    left = [t.name for t in threading.enumerate() if t.name.startswith("soak")]
    if left or threading.active_count() != threads_at_start:
        problems.append(f"threads left after finalize: {left} ({threading.active_count()} vs {threads_at_start})")

    stats = d.stats()
    for config in POOLS:
        s = stats[config.priority]
        total = s.completed + s.failed + s.cancelled
        if (s.busy, s.queued, s.delayed) != (0, 0, 0):
            problems.append(f"pool {config.priority} not drained: {s}")
        if total != books.accepted[config.priority]:
            problems.append(f"pool {config.priority}: {total} accounted, {books.accepted[config.priority]} accepted")
        if s.cancelled:
            problems.append(f"pool {config.priority}: {s.cancelled} cancelled without cancel_pending")
    completed = sum(s.completed for s in stats.values())
    failed = sum(s.failed for s in stats.values())
    if sum(books.ran.values()) != completed + failed:
        problems.append(f"jobs ran {sum(books.ran.values())} != completed + failed {completed + failed}")
    if failed != books.faults:
        problems.append(f"{books.faults} faults injected but {failed} jobs counted failed")

    # Flat: after a warm-up (the first quarter), heap, RSS and threads may not keep rising.
    warm = [s for s in samples if s[0] >= 0.25 * args.minutes * 60] or samples[-1:]
    if len(warm) >= 2:
        first, tail = warm[0], warm[len(warm) // 2 :]
        heap_growth = max(s[1] for s in tail) - first[1]
        rss_growth = max(s[3] for s in tail) - first[3]
        if heap_growth > max(2048, first[1] // 5):
            problems.append(f"heap grew by {heap_growth} KiB after warm-up")
        if rss_growth > max(8192, first[3] // 5):
            problems.append(f"RSS grew by {rss_growth} KiB after warm-up")
    max_threads = threads_at_start + sum(c.workers for c in POOLS) + 1 + args.producers + 1 + 2 * (3 + 1)
    if max(s[4] for s in samples) > max_threads:
        problems.append(f"thread count reached {max(s[4] for s in samples)} > {max_threads}")

    print(
        f"accepted {sum(books.accepted.values())}, completed {completed}, failed {failed} "
        f"(faults injected {books.faults}), cancelled 0, PoolFull on timeout=0 {books.pool_full}, "
        f"batches {books.batches} ({books.batch_groups} raised a group), on_error calls {books.hook_calls}, "
        f"dispatchers churned {dict(churned)}, log records {dict(log_counts)}"
    )
    print("jobs lost: 0, hangs: 0" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
