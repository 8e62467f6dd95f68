"""Plain helpers shared by several test modules (fixtures for services live in tests/_fixtures_*.py)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests._redis import RedisServer


@pytest.fixture(name="redis_server")
def wiped_redis_server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, wiped after each test (other tests count its keys).

    A module opts in with ``from tests._helpers import wiped_redis_server``: pytest finds the
    imported fixture in the module and, by its name, it overrides ``redis_server`` there only.
    """
    import redis

    yield redis_server
    redis.Redis.from_url(redis_server.url).flushdb()


def get(url: str) -> Any:
    """GET a JSON document; HTTP errors raise urllib.error.HTTPError (status and headers)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def run_threads(count: int, target: Callable[[], object]) -> None:
    """Start ``count`` threads on ``target`` and wait for all of them."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def remove_scope_files(scope: str) -> None:
    """Delete this host's limiter and breaker files whose names hold ``scope`` (a test's own)."""
    from opero.stores.host import folder

    for name in os.listdir(folder()):
        if scope in name:
            try:
                os.unlink(os.path.join(folder(), name))
            except OSError:
                pass


@contextlib.contextmanager
def serve_loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) in a daemon thread; yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
