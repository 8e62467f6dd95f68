"""The HTTP plumbing of the demo server: request, response and a quiet threading server."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

JSON = "application/json"
HTML = "text/html; charset=utf-8"


def format_seconds(seconds: float) -> str:
    """Format a wait time for ``Retry-After``: rounded up to 0.01 s, at least 0.01."""
    value = max(0.01, math.ceil(seconds * 100.0) / 100.0)
    return f"{value:g}"


class Response:
    """A response produced by a route: status, body and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: object = None,
        *,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    def encode(self) -> bytes:
        """Serialise the body (JSON unless it is already text)."""
        if self.body is None:
            return b""
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body).encode("utf-8")


def error(status: int, message: str, **extra: object) -> Response:
    """Build a JSON error response ``{"error": message, **extra}``."""
    return Response(status, {"error": message, **extra})


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an HTTP request that routes look at."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str) -> str | None:
        """Return the first value of query parameter ``name``, if any."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str:
        """Return header ``name`` (case-insensitive) or ``""``."""
        return self.headers.get(name.lower(), "")


class HTTPServer(ThreadingHTTPServer):
    """Threading HTTP server that hands every request to ``dispatch`` and stays quiet."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], dispatch: Callable[[Request], Response]) -> None:
        self.dispatch = dispatch
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Swallow per-connection errors (e.g. client disconnects) silently."""


class _Handler(BaseHTTPRequestHandler):
    """Request handler passing every method to its server's ``dispatch``."""

    server_version = "OperoDemo/1.0"
    timeout = 30.0

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it so
        """Do not log requests to stderr."""

    def _serve(self) -> None:
        assert isinstance(self.server, HTTPServer)
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.server.dispatch(request)
        payload = response.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve
    do_HEAD = _serve


def rate_limited(wait: float) -> Response:
    """A 429 answer telling the client to come back in ``wait`` seconds."""
    text = format_seconds(wait)
    return Response(429, {"error": "rate limited", "retry_after": float(text)}, headers={"Retry-After": text})


def number(raw: str | None, default: float) -> float | None:
    """Parse a non-negative finite float (``default`` when absent), ``None`` if invalid."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


class TokenBucket:
    """A token bucket, refilled continuously; tells how long to wait when it is empty."""

    def __init__(self, capacity: float) -> None:
        self._lock = threading.Lock()
        self._tokens = capacity
        self._at = time.monotonic()

    def take(self, rate: float, capacity: float) -> float:
        """Take a token; return 0 if granted, else the seconds until one is there at ``rate``."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(capacity, self._tokens + (now - self._at) * rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / rate


class Outage:
    """A window of time in which every request is answered with one 5xx status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (start, end, status, retry_after) of the window, on time.monotonic()
        self._window: tuple[float, float, int, float | None] | None = None
        #: requests answered during the window
        self.hits = 0

    def schedule(self, seconds: float, start: float, status: int, retry_after: float | None) -> None:
        """Be down for ``seconds`` from ``start`` seconds from now (see ``DemoServer.outage``)."""
        if seconds < 0 or start < 0 or not 500 <= status <= 599:
            raise ValueError("outage needs seconds >= 0, start >= 0 and a 5xx status")
        begin = time.monotonic() + start
        with self._lock:
            self._window = (begin, begin + seconds, status, retry_after)

    @property
    def down(self) -> bool:
        """Whether now is inside the window."""
        window = self._window
        return window is not None and window[0] <= time.monotonic() < window[1]

    def answer(self) -> Response | None:
        """The outage's answer to a request now, counted, or None outside the window."""
        window = self._window
        if window is None or not window[0] <= time.monotonic() < window[1]:
            return None
        with self._lock:
            self.hits += 1
        headers = {"Retry-After": format_seconds(window[3])} if window[3] is not None else {}
        return Response(window[2], {"error": "outage"}, headers=headers)
