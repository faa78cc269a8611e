"""A crawler: page jobs dispatch link jobs, one wait() covers the whole crawl, failures name their pages.

The script serves a small site on 127.0.0.1 (port chosen by the system):
each page links to others, and two links are broken. Each page is one job,
named after its URL; a page job dispatches a job for every link it has not
seen yet. Those follow-ups belong to the round of the page that found them,
so ``wait()`` returns only once the whole site is crawled, however deep.
Broken links fail their jobs, and ``on_error`` gets the exception with a note
that names the page. Run it with ``python examples/link_crawler.py``.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jobdispatch import Dispatcher

SITE = {
    "/": ["/docs", "/blog"],
    "/docs": ["/docs/install", "/docs/api", "/missing"],
    "/docs/install": ["/"],
    "/docs/api": ["/docs/api/pools", "/docs/api/batches"],
    "/docs/api/pools": [],
    "/docs/api/batches": ["/gone"],
    "/blog": ["/blog/1", "/blog/2"],
    "/blog/1": ["/docs"],
    "/blog/2": [],
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        links = SITE.get(self.path)
        if links is None:
            self.send_error(404)
            return
        body = "".join(f'<a href="{link}">{link}</a>\n' for link in links).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on this machine
seen: set[str] = set()
crawled: list[str] = []
lock = threading.Lock()


def visit(dispatcher: Dispatcher, base: str, path: str) -> None:
    with opener.open(base + path, timeout=10) as response:  # a broken link raises HTTPError here
        html = response.read().decode()
    with lock:
        crawled.append(path)
        new = [link for link in re.findall(r'href="([^"]+)"', html) if link not in seen]
        seen.update(new)
    for link in new:
        dispatcher.dispatch(visit, dispatcher, base, link, name=f"visit {link}")  # a follow-up


def failed(job: object, error: BaseException) -> None:
    print("failed:", error, "|", *getattr(error, "__notes__", ()))


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
server_thread = threading.Thread(target=server.serve_forever, name="http-server")
server_thread.start()
try:
    with Dispatcher(3, name="crawler", on_error=failed) as dispatcher:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        seen.add("/")
        dispatcher.dispatch(visit, dispatcher, base, "/", name="visit /")
        dispatcher.wait()  # the round: the first page and every page found from it
        print(f"crawled {len(crawled)} pages: {sorted(crawled)}")
        print(dispatcher.stats(0))
finally:
    server.shutdown()
    server.server_close()
    server_thread.join()
