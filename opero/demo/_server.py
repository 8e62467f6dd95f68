"""A small, deterministic HTTP API served on the loopback interface.

The server exists so that notebooks, tests, docs examples and ``python -m opero.demo``
can exercise retries, fallbacks and rate limits without touching the internet. It uses
only the standard library (:class:`http.server.ThreadingHTTPServer`) and runs in a
daemon thread inside the calling process.

Every response body is JSON (``Content-Type: application/json``) except the HTML
pages served under ``/html/<id>``.

Determinism:
    All "random" behaviour derives from the ``seed`` given to :class:`DemoServer`.
    ``/item/<id>`` and ``/geocode`` fail only on the *first* attempt for a key, and
    only for the keys selected by :func:`first_attempt_fails`; a client that retries
    at least once therefore always succeeds. ``/flaky`` draws from a
    :class:`random.Random` seeded with ``seed`` (reset by :meth:`DemoServer.reset`).
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_VALID_KEYS",
    "DemoServer",
    "first_attempt_fails",
    "geocode",
    "item_value",
    "start_demo_server",
]

#: API keys accepted by ``/secure/<id>`` unless ``valid_keys`` is given.
DEFAULT_VALID_KEYS: tuple[str, ...] = ("key-good", "key-backup")
#: API keys always refused by ``/secure/<id>``, even if listed in ``valid_keys``.
DEFAULT_REVOKED_KEYS: tuple[str, ...] = ("key-revoked",)

_LOOPBACK = "127.0.0.1"
_MAX_SLEEP = 10.0
_BLOCKED_AGENT = "operobot"

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"


def _unit(*parts: object) -> float:
    """Map ``parts`` to a deterministic float in ``[0, 1)`` via SHA-256.

    Args:
        *parts: Values joined with ``":"`` (after ``str()``) before hashing.

    Returns:
        The first 8 hex digits of the SHA-256 digest divided by ``2**32``.
    """
    text = ":".join(str(part) for part in parts)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2**32


def first_attempt_fails(key: str, *, seed: int = 0, fail_rate: float = 0.2, namespace: str = "item") -> bool:
    """Tell whether the first request for ``key`` is answered with HTTP 500.

    This is the exact flakiness rule of ``/item/<id>`` (``namespace="item"``) and
    ``/geocode?address=...`` (``namespace="geocode"``, key = the address): the first
    attempt for a key fails iff ``_unit(seed, namespace, key) < fail_rate``, where
    ``_unit`` is the first 8 hex digits of
    ``sha256(f"{seed}:{namespace}:{key}")`` divided by ``2**32``. Every later attempt
    for the same key succeeds (until :meth:`DemoServer.reset`).

    Args:
        key: The item id (as it appears in the URL path) or the geocoded address.
        seed: The server's seed.
        fail_rate: The server's ``fail_rate`` (fraction of keys whose first attempt
            fails).
        namespace: ``"item"`` or ``"geocode"``.

    Returns:
        ``True`` if the first attempt for ``key`` returns HTTP 500.
    """
    return _unit(seed, namespace, key) < fail_rate


def item_value(item_id: str) -> int:
    """Return the deterministic ``value`` that ``/item/<id>`` reports for ``item_id``.

    Args:
        item_id: The id as it appears in the URL path.

    Returns:
        An integer in ``[0, 1000)``, independent of the server's seed.
    """
    return int(_unit("value", item_id) * 1000)


def geocode(address: str) -> tuple[float, float]:
    """Return the fake ``(lat, lon)`` that ``/geocode`` reports for ``address``.

    Args:
        address: The address exactly as sent in the query string (after decoding).

    Returns:
        Latitude in ``[-90, 90)`` and longitude in ``[-180, 180)``, rounded to 6 places.
    """
    lat = round(_unit("lat", address) * 180.0 - 90.0, 6)
    lon = round(_unit("lon", address) * 360.0 - 180.0, 6)
    return lat, lon


def _format_seconds(seconds: float) -> str:
    """Format a wait time for ``Retry-After``: rounded up to 0.01 s, at least 0.01."""
    value = max(0.01, math.ceil(seconds * 100.0) / 100.0)
    return f"{value:g}"


class _Response:
    """A response produced by a route: status, body and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: Any = None,
        *,
        content_type: str = _JSON,
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


def _error(status: int, message: str, **extra: Any) -> _Response:
    """Build a JSON error response ``{"error": message, **extra}``."""
    return _Response(status, {"error": message, **extra})


class _Request:
    """The parts of an HTTP request that routes look at."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def arg(self, name: str) -> str | None:
        """Return the first value of query parameter ``name``, if any."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str:
        """Return header ``name`` (case-insensitive) or ``""``."""
        return self.headers.get(name.lower(), "")


class _HTTPServer(ThreadingHTTPServer):
    """Threading HTTP server that knows its :class:`DemoServer` and stays quiet."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], demo: DemoServer) -> None:
        self.demo = demo
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow per-connection errors (e.g. client disconnects) silently."""


class _Handler(BaseHTTPRequestHandler):
    """Request handler dispatching every method to :meth:`DemoServer._dispatch`."""

    server_version = "OperoDemo/1.0"
    timeout = 30.0

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        """Do not log requests to stderr."""

    def _serve(self) -> None:
        assert isinstance(self.server, _HTTPServer)
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = _Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.server.demo._dispatch(request)
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


_Route = Callable[[_Request, list[str]], _Response]


class DemoServer:
    """A deterministic loopback HTTP API for demos and tests.

    Start it with :meth:`start` (or use it as a context manager, or call
    :func:`start_demo_server`); it serves from a daemon thread until :meth:`stop`.

    Endpoints (``<id>`` is any path segment, returned as a string):

    - ``GET /health`` → ``{"status": "ok"}``.
    - ``GET /item/<id>`` → ``{"id", "value", "name", "attempt"}``. The first attempt
      for an id fails with 500 ``{"error": "transient failure", ...}`` iff
      :func:`first_attempt_fails` (``namespace="item"``) is true for it; later
      attempts succeed. ``value`` is :func:`item_value`.
    - ``GET /slow?delay=0.2`` → sleeps ``delay`` seconds (capped at 10) and returns
      ``{"slept": delay}``.
    - ``GET /flaky?p=0.5`` → 500 with probability ``p`` (seeded RNG), else
      ``{"ok": true, "p": p}``.
    - ``GET /status/<code>`` → that status (200-599) with ``{"status": code}``;
      ``?retry_after=V`` adds a ``Retry-After: V`` header (``V = "now+<s>"``: the HTTP
      date ``s`` seconds from now).
    - ``GET /limited/<id>`` → token bucket of ``rate_limit`` requests/s (burst
      ``max(1, rate_limit)``); over the limit answers 429 with a fractional
      ``Retry-After`` header (e.g. ``"0.2"``) and ``{"error": "rate limited",
      "retry_after": seconds}``; otherwise ``{"id", "value"}``. Unlimited when
      ``rate_limit`` is ``None``.
    - ``GET /secure/<id>`` → needs ``Authorization: Bearer <key>``: a key in
      ``valid_keys`` (and not revoked) gives ``{"id", "key"}``; a missing header gives
      401 ``{"error": "missing key"}``; revoked (``"key-revoked"``) or unknown keys give
      401 ``{"error": "invalid key"}``.
    - ``GET /geocode?address=...`` → ``{"address", "lat", "lon"}`` (see
      :func:`geocode`); an address containing ``"nowhere"`` (any case) → 404; missing
      address → 400; flaky like ``/item`` with ``namespace="geocode"``.
    - ``GET /user-agent`` → ``{"user-agent": <User-Agent header>}``.
    - ``GET /html/<id>`` → a small HTML page titled ``Page <id>``; a User-Agent
      containing ``"OperoBot"`` (any case) gets 403 ``{"error": "forbidden user
      agent"}``.
    - ``GET /delay/<n>`` → sleeps ``min(n, 10) * delay_scale`` seconds and returns
      ``{"delay": n}`` (like httpbin's ``/delay``).
    - ``GET /users/<id>`` → ``{"id", "name", "email", "score"}``;
      ``GET /users/<id>/preferences`` → ``{"user_id", "theme", "language",
      "notifications"}``.
    - ``POST /v1/chat/completions`` → a chat-completion-shaped answer (see
      :class:`ChatLimits`): ``{"id", "object", "model", "choices", "usage": {"prompt_tokens",
      "completion_tokens", "total_tokens"}}``, limited to ``llm_requests`` requests and
      ``llm_tokens`` tokens per ``llm_window`` seconds (continuously refilling buckets, as
      the providers describe theirs), with OpenAI-style ``x-ratelimit-*`` headers; over a
      limit, 429 with ``Retry-After``.
    - ``POST /data`` and ``POST /<anything>`` → echo ``{"path", "json", "data"}``
      (``json`` is the parsed body or ``None``, ``data`` the raw body as text).
    - Anything else → 404 ``{"error": "not found", "path": ...}``.

    Every request first sleeps ``latency`` seconds.

    Pushback modes (for the adaptive rate and the circuit breaker):

    - ``limit_all=True`` puts *every* endpoint (but ``/health``) behind the ``rate_limit``
      token bucket: above it the answer is 429 with ``Retry-After``, as on ``/limited``.
      ``burst`` sets the bucket's size (default ``max(1, rate_limit)``).
    - :meth:`outage` makes the server "down" for a while: every request (but ``/health``)
      is answered 503 (with ``Retry-After`` when asked), counted in ``stats["outage"]``.

    Args:
        host: Interface to bind; only ``"127.0.0.1"`` (or ``"localhost"``) is allowed.
        port: TCP port; ``0`` picks a free one (see :attr:`url`).
        seed: Seed for every deterministic or pseudo-random behaviour.
        fail_rate: Fraction (0-1) of ``/item`` ids and ``/geocode`` addresses whose
            first attempt fails with 500.
        rate_limit: Requests per second allowed on ``/limited/<id>`` before 429;
            ``None`` disables the limit.
        valid_keys: Keys accepted by ``/secure/<id>``.
        latency: Extra seconds slept before answering any request.
        delay_scale: Seconds slept per unit of ``n`` by ``/delay/<n>``.
        revoked_keys: Keys always refused by ``/secure/<id>``.
        limit_all: Apply ``rate_limit`` (429 + ``Retry-After``) to every endpoint.
        burst: Token-bucket size of the rate limit (default ``max(1, rate_limit)``).
        llm_requests: requests per ``llm_window`` on ``/v1/chat/completions``.
        llm_tokens: tokens per ``llm_window`` on ``/v1/chat/completions``.
        llm_window: the window of the chat limits, in seconds (a provider's minute, scaled).

    Raises:
        ValueError: If ``host`` is not the loopback address or an argument is out of
            range.

    Example:
        >>> import json, urllib.request
        >>> with DemoServer() as server:
        ...     with urllib.request.urlopen(server.url + "/health") as resp:
        ...         json.load(resp)
        {'status': 'ok'}
    """

    def __init__(
        self,
        host: str = _LOOPBACK,
        port: int = 0,
        *,
        seed: int = 0,
        fail_rate: float = 0.2,
        rate_limit: float | None = None,
        valid_keys: Iterable[str] = DEFAULT_VALID_KEYS,
        latency: float = 0.0,
        delay_scale: float = 0.01,
        revoked_keys: Iterable[str] = DEFAULT_REVOKED_KEYS,
        limit_all: bool = False,
        burst: float | None = None,
        llm_requests: float = 50,
        llm_tokens: float = 20000,
        llm_window: float = 1.0,
    ) -> None:
        if host == "localhost":
            host = _LOOPBACK
        if host != _LOOPBACK:
            raise ValueError(f"DemoServer only binds to {_LOOPBACK}, not {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be in [0, 1], got {fail_rate}")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0 or None, got {rate_limit}")
        if latency < 0 or delay_scale < 0:
            raise ValueError("latency and delay_scale must be >= 0")
        if burst is not None and not burst >= 1:
            raise ValueError(f"burst must be >= 1 or None, got {burst}")
        self.host = host
        self.port = port
        self.seed = seed
        self.fail_rate = fail_rate
        self.rate_limit = rate_limit
        self.valid_keys = frozenset(valid_keys)
        self.revoked_keys = frozenset(revoked_keys)
        self.latency = latency
        self.delay_scale = delay_scale
        self.limit_all = limit_all
        self.burst = burst
        # (start, end, status, retry_after) of the outage window, on time.monotonic()
        self._outage: tuple[float, float, int, float | None] | None = None

        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], _Route] = {
            ("GET", "health"): self._health,
            ("GET", "item"): self._item,
            ("GET", "slow"): self._slow,
            ("GET", "flaky"): self._flaky,
            ("GET", "status"): self._status,
            ("GET", "limited"): self._limited,
            ("GET", "secure"): self._secure,
            ("GET", "geocode"): self._geocode,
            ("GET", "user-agent"): self._user_agent,
            ("GET", "html"): self._html,
            ("GET", "delay"): self._delay,
            ("GET", "users"): self._users,
        }
        self.chat = ChatLimits(llm_requests, llm_tokens, llm_window)
        self._init_state()

    # ------------------------------------------------------------------ lifecycle

    def _init_state(self) -> None:
        """(Re)initialise counters, attempt counts, RNG and rate-limit bucket."""
        self._requests = 0
        self._endpoints: dict[str, int] = {}
        self._statuses: dict[int, int] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._rng = random.Random(self.seed)
        self._tokens = self._capacity()
        self._bucket_time = time.monotonic()
        self._outage_hits = 0
        if hasattr(self, "chat"):
            self.chat.reset()

    def _capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.rate_limit or 1.0)

    def outage(
        self, seconds: float, *, start: float = 0.0, status: int = 503, retry_after: float | None = None
    ) -> None:
        """Be down for ``seconds``, beginning ``start`` seconds from now.

        Meanwhile every request but ``/health`` is answered ``status`` (503 by default) with
        ``{"error": "outage"}``, plus a ``Retry-After`` header when ``retry_after`` is given.
        Requests answered so are counted in ``stats["outage"]``.

        Args:
            seconds: how long the outage lasts.
            start: seconds from now until it begins.
            status: the HTTP status answered meanwhile (500-599).
            retry_after: seconds to send in ``Retry-After``, or None for no header.
        """
        if seconds < 0 or start < 0 or not 500 <= status <= 599:
            raise ValueError("outage needs seconds >= 0, start >= 0 and a 5xx status")
        begin = time.monotonic() + start
        with self._lock:
            self._outage = (begin, begin + seconds, status, retry_after)

    @property
    def down(self) -> bool:
        """Whether the server is inside an :meth:`outage` window now."""
        window = self._outage
        return window is not None and window[0] <= time.monotonic() < window[1]

    def start(self) -> Self:
        """Bind the socket and serve from a daemon thread (no-op if running).

        Returns:
            The server itself, so ``server = DemoServer().start()`` works.

        Raises:
            OSError: If the port cannot be bound.
        """
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(httpd.server_address[1])
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"opero-demo-{self.port}",
            daemon=True,
        )
        thread.start()
        self._httpd = httpd
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (no-op if not running)."""
        httpd, thread = self._httpd, self._thread
        self._httpd = None
        self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def reset(self) -> None:
        """Zero the statistics and forget per-key attempts, RNG state and rate limit."""
        with self._lock:
            self._init_state()

    @property
    def running(self) -> bool:
        """Whether the server is currently serving."""
        return self._httpd is not None

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``"http://127.0.0.1:8765"``.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._httpd is None:
            raise RuntimeError("DemoServer is not started; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (safe to read while serving).

        Returns:
            ``{"requests": int, "endpoints": {name: int}, "status": {code: int},
            "rate_limited": int, "unauthorized": int, "server_errors": int}`` where
            endpoint names are the first path segment (``"item"``, ``"limited"``,
            ...; ``"echo"`` for POSTs, ``"unknown"`` for 404 routes) and the last
            three count 429, 401 and 500 responses; ``"outage"`` counts the requests
            answered during an :meth:`outage`.
        """
        with self._lock:
            return {
                "requests": self._requests,
                "endpoints": dict(self._endpoints),
                "status": dict(self._statuses),
                "rate_limited": self._statuses.get(429, 0),
                "unauthorized": self._statuses.get(401, 0),
                "server_errors": self._statuses.get(500, 0),
                "outage": self._outage_hits,
            }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"DemoServer({state}, seed={self.seed}, fail_rate={self.fail_rate})"

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: _Request) -> _Response:
        """Route ``request``, count it and return the response."""
        if self.latency:
            time.sleep(self.latency)
        segments = [s for s in request.path.split("/") if s]
        head = segments[0] if segments else ""
        name = head
        if request.method == "POST" and segments[:3] == ["v1", "chat", "completions"]:
            name = "chat"
            route: _Route | None = self._chat
        elif request.method in ("POST", "PUT", "PATCH"):
            name = "echo"
            route = self._echo
        else:
            method = "GET" if request.method == "HEAD" else request.method
            route = self._routes.get((method, head))
            if route is None:
                name = "unknown"
        try:
            pushed = None if head == "health" else self._pushback()
            if pushed is not None:
                response = pushed
            elif route is None:
                response = _error(404, "not found", path=request.path)
            else:
                response = route(request, segments[1:])
        except Exception as exc:  # pragma: no cover - defensive
            response = _error(500, "internal error", detail=repr(exc))
        with self._lock:
            self._requests += 1
            self._endpoints[name] = self._endpoints.get(name, 0) + 1
            self._statuses[response.status] = self._statuses.get(response.status, 0) + 1
        return response

    def _pushback(self) -> _Response | None:
        """The outage's or the global rate limit's answer, or None to serve the request."""
        window = self._outage
        if window is not None and window[0] <= time.monotonic() < window[1]:
            with self._lock:
                self._outage_hits += 1
            headers = {"Retry-After": _format_seconds(window[3])} if window[3] is not None else {}
            return _Response(window[2], {"error": "outage"}, headers=headers)
        if self.limit_all:
            wait = self._take_token()
            if wait > 0:
                text = _format_seconds(wait)
                return _Response(
                    429, {"error": "rate limited", "retry_after": float(text)}, headers={"Retry-After": text}
                )
        return None

    def _next_attempt(self, namespace: str, key: str) -> int:
        """Increment and return the 1-based attempt number for ``key``."""
        with self._lock:
            attempt = self._attempts.get((namespace, key), 0) + 1
            self._attempts[(namespace, key)] = attempt
        return attempt

    def _fails(self, namespace: str, key: str) -> tuple[bool, int]:
        """Apply the first-attempt flakiness rule; return ``(failed, attempt)``."""
        attempt = self._next_attempt(namespace, key)
        failed = attempt == 1 and first_attempt_fails(
            key, seed=self.seed, fail_rate=self.fail_rate, namespace=namespace
        )
        return failed, attempt

    @staticmethod
    def _number(raw: str | None, default: float) -> float | None:
        """Parse a non-negative finite float, ``None`` if invalid."""
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            return None
        if not math.isfinite(value) or value < 0:
            return None
        return value

    # ------------------------------------------------------------------ routes

    def _health(self, request: _Request, rest: list[str]) -> _Response:
        if rest:
            return _error(404, "not found", path=request.path)
        return _Response(200, {"status": "ok"})

    def _item(self, request: _Request, rest: list[str]) -> _Response:
        if len(rest) != 1:
            return _error(404, "not found", path=request.path)
        item_id = rest[0]
        failed, attempt = self._fails("item", item_id)
        if failed:
            return _error(500, "transient failure", id=item_id, attempt=attempt)
        return _Response(
            200,
            {
                "id": item_id,
                "value": item_value(item_id),
                "name": f"item-{item_id}",
                "attempt": attempt,
            },
        )

    def _slow(self, request: _Request, rest: list[str]) -> _Response:
        delay = self._number(request.arg("delay"), 0.2)
        if delay is None:
            return _error(400, "delay must be a non-negative number")
        delay = min(delay, _MAX_SLEEP)
        time.sleep(delay)
        return _Response(200, {"slept": delay})

    def _flaky(self, request: _Request, rest: list[str]) -> _Response:
        p = self._number(request.arg("p"), 0.5)
        if p is None or p > 1:
            return _error(400, "p must be a number in [0, 1]")
        with self._lock:
            draw = self._rng.random()
        if draw < p:
            return _error(500, "flaky failure", p=p)
        return _Response(200, {"ok": True, "p": p})

    def _status(self, request: _Request, rest: list[str]) -> _Response:
        try:
            code = int(rest[0]) if len(rest) == 1 else -1
        except ValueError:
            code = -1
        if not 200 <= code <= 599:
            return _error(400, "status code must be an integer in 200..599")
        # ?retry_after=<seconds or HTTP date> is sent back as a Retry-After header, as is
        # ("now+<s>" becomes the HTTP date s seconds from now): server hints in tests.
        headers: dict[str, str] = {}
        retry_after = request.arg("retry_after")
        if retry_after is not None:
            if retry_after.startswith("now+"):
                offset = self._number(retry_after[4:], 0.0) or 0.0
                retry_after = email.utils.formatdate(time.time() + offset, usegmt=True)
            headers["Retry-After"] = retry_after
        if code in (204, 304):
            return _Response(code, headers=headers)
        return _Response(code, {"status": code}, headers=headers)

    def _take_token(self) -> float:
        """Take a rate-limit token; return 0 if granted, else seconds to wait."""
        if self.rate_limit is None:
            return 0.0
        rate = self.rate_limit
        capacity = self._capacity()
        with self._lock:
            now = time.monotonic()
            elapsed = now - self._bucket_time
            self._tokens = min(capacity, self._tokens + elapsed * rate)
            self._bucket_time = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / rate

    def _limited(self, request: _Request, rest: list[str]) -> _Response:
        if len(rest) != 1:
            return _error(404, "not found", path=request.path)
        wait = 0.0 if self.limit_all else self._take_token()  # limit_all took it already
        if wait > 0:
            text = _format_seconds(wait)
            return _Response(
                429,
                {"error": "rate limited", "retry_after": float(text)},
                headers={"Retry-After": text},
            )
        return _Response(200, {"id": rest[0], "value": item_value(rest[0])})

    def _secure(self, request: _Request, rest: list[str]) -> _Response:
        if len(rest) != 1:
            return _error(404, "not found", path=request.path)
        challenge = {"WWW-Authenticate": 'Bearer realm="opero-demo"'}
        auth = request.header("Authorization").strip()
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _Response(401, {"error": "missing key"}, headers=challenge)
        if key in self.revoked_keys or key not in self.valid_keys:
            return _Response(401, {"error": "invalid key"}, headers=challenge)
        return _Response(200, {"id": rest[0], "key": key})

    def _geocode(self, request: _Request, rest: list[str]) -> _Response:
        address = request.arg("address")
        if rest or address is None or not address.strip():
            return _error(400, "address query parameter is required")
        if "nowhere" in address.lower():
            return _error(404, "address not found", address=address)
        failed, attempt = self._fails("geocode", address)
        if failed:
            return _error(500, "transient failure", address=address, attempt=attempt)
        lat, lon = geocode(address)
        return _Response(200, {"address": address, "lat": lat, "lon": lon})

    def _user_agent(self, request: _Request, rest: list[str]) -> _Response:
        return _Response(200, {"user-agent": request.header("User-Agent")})

    def _html(self, request: _Request, rest: list[str]) -> _Response:
        if len(rest) != 1:
            return _error(404, "not found", path=request.path)
        if _BLOCKED_AGENT in request.header("User-Agent").lower():
            return _error(403, "forbidden user agent")
        page = html.escape(rest[0])
        value = item_value(rest[0])
        body = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>Page {page}</title></head>\n<body><h1>Page {page}</h1>\n"
            f"<p class='value'>{value}</p>\n</body></html>\n"
        )
        return _Response(200, body, content_type=_HTML)

    def _delay(self, request: _Request, rest: list[str]) -> _Response:
        n = self._number(rest[0] if len(rest) == 1 else "", 0.0)
        if n is None:
            return _error(400, "delay must be a non-negative number")
        time.sleep(min(n, _MAX_SLEEP) * self.delay_scale)
        return _Response(200, {"delay": int(n) if n.is_integer() else n})

    def _users(self, request: _Request, rest: list[str]) -> _Response:
        if len(rest) == 1:
            user_id = rest[0]
            return _Response(
                200,
                {
                    "id": user_id,
                    "name": f"User {user_id}",
                    "email": f"user{user_id}@example.com",
                    "score": item_value(f"user:{user_id}"),
                },
            )
        if len(rest) == 2 and rest[1] == "preferences":
            user_id = rest[0]
            return _Response(
                200,
                {
                    "user_id": user_id,
                    "theme": "dark" if _unit("theme", user_id) < 0.5 else "light",
                    "language": ("en", "de", "fr", "pl")[int(_unit("lang", user_id) * 4)],
                    "notifications": _unit("notify", user_id) < 0.5,
                },
            )
        return _error(404, "not found", path=request.path)

    def _chat(self, request: _Request, rest: list[str]) -> _Response:
        try:
            payload = json.loads(request.body.decode("utf-8") or "{}")
            messages = payload.get("messages") or []
            text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
            max_tokens = int(payload.get("max_tokens", 256))
        except (ValueError, AttributeError, TypeError):
            return _error(400, "invalid request: JSON with messages and max_tokens expected")
        if max_tokens < 1:
            return _error(400, "max_tokens must be >= 1")
        prompt = chat_prompt_tokens(text)
        completion = 1 + int(_unit("completion", text) * max_tokens)
        granted, headers = self.chat.take(prompt + completion)
        if not granted:
            return _Response(429, {"error": {"type": "rate_limit_exceeded"}}, headers=headers)
        reply = {
            "id": "chatcmpl-" + hashlib.sha256(text.encode()).hexdigest()[:12],
            "object": "chat.completion",
            "model": str(payload.get("model", "demo")),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok " * min(completion, 20)}}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        return _Response(200, reply, headers=headers)

    def _echo(self, request: _Request, rest: list[str]) -> _Response:
        text = request.body.decode("utf-8", errors="replace")
        parsed: Any
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return _Response(200, {"path": request.path, "json": parsed, "data": text})


def chat_prompt_tokens(text: str) -> int:
    """The prompt tokens ``/v1/chat/completions`` counts for ``text``: one per 4 characters."""
    return max(1, math.ceil(len(text) / 4))


def _go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


class ChatLimits:
    """The chat endpoint's two limits: requests and tokens per window, continuously refilled.

    Each bucket holds one window's worth and refills at ``limit / window`` per second (a
    provider's per-minute limit, scaled to ``window`` seconds). A request needs one request
    and its total tokens; when either bucket cannot cover it, it is refused (429) with a
    ``Retry-After`` of the time until both can. Every answer carries ``x-ratelimit-limit-*``,
    ``-remaining-*`` and ``-reset-*`` (time until the bucket is full again) for requests and
    tokens.

    Attributes:
        accepted / tokens / throttled: requests served, tokens they used, requests refused.
        first / last: ``time.monotonic()`` of the first and last served request.
    """

    def __init__(self, requests: float, tokens: float, window: float) -> None:
        if requests <= 0 or tokens <= 0 or window <= 0:
            raise ValueError("llm_requests, llm_tokens and llm_window must be > 0")
        self.limits = {"requests": float(requests), "tokens": float(tokens)}
        self.window = float(window)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Full buckets, zero counters."""
        self._level = dict(self.limits)
        self._at = time.monotonic()
        self.accepted = self.tokens = self.throttled = 0
        self.first = self.last = 0.0

    def take(self, cost: int) -> tuple[bool, dict[str, str]]:
        """Serve a request of ``cost`` tokens if both buckets allow it; ``(granted, headers)``."""
        with self._lock:
            now = time.monotonic()
            for kind, limit in self.limits.items():
                self._level[kind] = min(limit, self._level[kind] + (now - self._at) * limit / self.window)
            self._at = now
            need = {"requests": 1.0, "tokens": float(cost)}
            short = {k: need[k] - self._level[k] for k in need if self._level[k] < need[k]}
            granted = not short
            if granted:
                for kind in need:
                    self._level[kind] -= need[kind]
                self.accepted += 1
                self.tokens += cost
                self.first = self.first or now
                self.last = now
            else:
                self.throttled += 1
            headers = self._headers()
        if short:
            wait = max(v * self.window / self.limits[k] for k, v in short.items())
            headers["Retry-After"] = _format_seconds(wait)
        return granted, headers

    def _headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind, limit in self.limits.items():
            level = self._level[kind]
            out[f"x-ratelimit-limit-{kind}"] = f"{limit:g}"
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            out[f"x-ratelimit-reset-{kind}"] = _go_duration((limit - level) * self.window / limit)
        return out

    def usage(self) -> dict[str, float]:
        """Served tokens as a share of what the token limit allowed over the busy span."""
        span = self.last - self.first
        allowed = self.limits["tokens"] * (span / self.window) if span > 0 else 0.0
        return {
            "accepted": self.accepted,
            "tokens": self.tokens,
            "throttled": self.throttled,
            "seconds": span,
            "token_use": self.tokens / allowed if allowed else 0.0,
        }


def start_demo_server(**kwargs: Any) -> DemoServer:
    """Create a :class:`DemoServer`, start it and return it.

    Args:
        **kwargs: Passed to :class:`DemoServer` (``port``, ``seed``, ``fail_rate``,
            ``rate_limit``, ``valid_keys``, ``latency``, ``delay_scale``, ...).

    Returns:
        The running server; call :meth:`DemoServer.stop` when done.
    """
    return DemoServer(**kwargs).start()
