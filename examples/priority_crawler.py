"""A crawler whose page fetches never wait behind bulk downloads.

The script starts a small HTTP server on 127.0.0.1 (port chosen by the
system) with two kinds of endpoints: ``/bulk/N`` is slow, like a large
download, and ``/page/N`` answers at once. It runs the same crawl twice:

1. on one shared pool of 4 threads: the pages queue behind the downloads;
2. on two bulkheads, 2 threads for bulk and 2 for pages: a page is fetched
   as soon as it is dispatched, however many downloads are waiting.

It prints the latency of each kind of fetch (dispatch to response) and
shuts the server down. Run it with ``python examples/priority_crawler.py``.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jobdispatch import Dispatcher, PoolConfig

BULK, PAGE = 0, 1
BULK_SECONDS = 0.15  # how long a bulk download takes on the server
BULK_DOWNLOADS, PAGES = 12, 8

bulk_started = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/bulk/"):
            bulk_started.set()
            time.sleep(BULK_SECONDS)  # a slow transfer
            body = b"x" * 65536
        else:
            body = b"<html>a page</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the output to what the example shows


# No proxy: the server is on this machine, whatever the environment says.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Fetch:
    """A job: fetch one URL and record how long it took from dispatch."""

    def __init__(self, url: str, pool: int, latencies: list[float]) -> None:
        self.url = url
        self.pool = pool
        self.latencies = latencies
        self.dispatched_at = time.perf_counter()

    def do(self) -> None:
        with opener.open(self.url, timeout=10) as response:
            response.read()
        self.latencies.append(time.perf_counter() - self.dispatched_at)  # list.append is thread-safe

    def priority(self) -> int:
        return self.pool


def crawl(dispatcher: Dispatcher, base: str, page_pool: int) -> tuple[list[float], list[float]]:
    """Dispatch the bulk downloads from a producer thread and the pages from this one."""
    bulk: list[float] = []
    pages: list[float] = []
    bulk_started.clear()

    def produce_bulk() -> None:
        for n in range(BULK_DOWNLOADS):
            dispatcher.dispatch(Fetch(f"{base}/bulk/{n}", BULK, bulk))  # blocks while the bulk pool is full

    producer = threading.Thread(target=produce_bulk)
    producer.start()
    bulk_started.wait(10)  # the downloads are under way
    for n in range(PAGES):
        dispatcher.dispatch(Fetch(f"{base}/page/{n}", page_pool, pages))
        time.sleep(0.02)  # pages are requested one after another, as users click
    producer.join()
    dispatcher.wait()
    return bulk, pages


def report(title: str, bulk: list[float], pages: list[float]) -> None:
    print(title)
    for kind, latencies in (("bulk", bulk), ("page", pages)):
        print(
            f"  {kind}: {len(latencies):2d} fetched, latency median {statistics.median(latencies) * 1000:6.0f} ms,"
            f" max {max(latencies) * 1000:6.0f} ms"
        )


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
server_thread = threading.Thread(target=server.serve_forever, name="http-server")
server_thread.start()
base = f"http://127.0.0.1:{server.server_address[1]}"
try:
    with Dispatcher({BULK: 4}, name="shared") as shared:  # pages go to the bulk pool too
        report("one shared pool, 4 threads:", *crawl(shared, base, page_pool=BULK))

    bulkheads = [PoolConfig(BULK, workers=2, queue_size=4), PoolConfig(PAGE, workers=2)]
    with Dispatcher(bulkheads, name="bulkheads") as dispatcher:
        bulk, pages = crawl(dispatcher, base, page_pool=PAGE)
        report("bulkheads, 2 threads for bulk and 2 for pages:", bulk, pages)
        print(" ", dispatcher.stats(BULK))
        print(" ", dispatcher.stats(PAGE))
    print(f"pages slower than one bulk download ({BULK_SECONDS * 1000:.0f} ms):", sum(t > BULK_SECONDS for t in pages))
finally:
    server.shutdown()
    server.server_close()
    server_thread.join()
print("server shut down")
