"""Quick start: two isolated pools, backpressure, a barrier, and stats.

Run it with ``python examples/quickstart.py``.
"""

import threading
import time

from jobdispatch import Dispatcher, PoolConfig

INTERACTIVE, BULK = 1, 0
done = {INTERACTIVE: 0, BULK: 0}
lock = threading.Lock()


class Download:
    """A job in the Go style: an object with do() and priority()."""

    def __init__(self, n: int) -> None:
        self.n = n

    def do(self) -> None:
        time.sleep(0.01)  # stands for a slow network transfer
        with lock:
            done[BULK] += 1

    def priority(self) -> int:
        return BULK


def answer_user() -> None:
    with lock:
        done[INTERACTIVE] += 1


config = [PoolConfig(BULK, workers=4, queue_size=8), PoolConfig(INTERACTIVE, workers=2)]
with Dispatcher(config, name="quickstart") as dispatcher:
    for round_number in range(1, 4):
        started = time.perf_counter()
        for n in range(40):
            dispatcher.dispatch(Download(n))  # blocks while the bulk pool is full
            dispatcher.dispatch(answer_user, priority=INTERACTIVE)  # never waits behind bulk work
        dispatcher.wait()  # the barrier: every job of this round has finished
        elapsed = time.perf_counter() - started
        print(f"round {round_number}: {done} in {elapsed:.2f} s")
    print(dispatcher)
    for stats in dispatcher.stats().values():
        print(stats)
# leaving the block finalized the dispatcher: every thread is joined
print("threads left:", [t.name for t in threading.enumerate() if t.name.startswith("quickstart")])
