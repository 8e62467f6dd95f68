"""A loopback API that counts its requests, for the enrichment tests (single-flight, batches, resume).

- ``GET /lookup?q=X``: ``{"q": X, "n": len(X)}`` after ``delay`` seconds; ``q`` in ``fail``
  answers 500.
- ``POST /embed`` with a JSON list of texts: one vector ``[len(text), 1.0]`` per text, in
  order; a text longer than ``max_len`` makes the whole request answer 400 (the "poison row").

The functions below are module-level so process and dask workers import them by name.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CountingServer", "embed_texts", "lookup"]


class CountingServer:
    """A threaded HTTP server on 127.0.0.1 counting requests per path and per query."""

    def __init__(self, delay: float = 0.005, max_len: int = 50, fail: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.max_len = max_len
        self.fail = set(fail)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self.batch_sizes: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parsed = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(parsed.query).get("q", [""])[0]
                with server.lock:
                    server.hits[parsed.path] += 1
                    server.queries[q] += 1
                    failing = q in server.fail
                time.sleep(server.delay)
                if failing:
                    self._answer(500, {"error": f"cannot look up {q}"})
                else:
                    self._answer(200, {"q": q, "n": len(q)})

            def do_POST(self) -> None:
                texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.hits[self.path] += 1
                    server.batch_sizes.append(len(texts))
                time.sleep(server.delay)
                if any(len(t) > server.max_len for t in texts):
                    self._answer(400, {"error": "text too long"})
                else:
                    self._answer(200, [[float(len(t)), 1.0] for t in texts])

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, path: str) -> int:
        """Requests that reached ``path`` so far."""
        with self.lock:
            return self.hits[path]


def lookup(q: str, url: str) -> dict[str, Any]:
    """One GET /lookup (the per-item API of the single-flight tests)."""
    with urllib.request.urlopen(f"{url}/lookup?q={urllib.parse.quote(q)}", timeout=30) as response:
        result: dict[str, Any] = json.load(response)
        return result


async def alookup(q: str, url: str) -> dict[str, Any]:
    """The same lookup from an ``async def`` function (urllib in a thread)."""
    import asyncio

    return await asyncio.to_thread(lookup, q, url)


def embed_texts(texts: list[str], url: str) -> list[list[float]]:
    """One POST /embed of a whole batch (the batch API of the batch tests)."""
    request = urllib.request.Request(
        f"{url}/embed", data=json.dumps(texts).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        vectors: list[list[float]] = json.load(response)
        return vectors
