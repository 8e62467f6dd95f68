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

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Self, TypedDict

from opero.demo import _endpoints as endpoints
from opero.demo._chat import ChatLimits, chat
from opero.demo._endpoints import item_value
from opero.demo._http import (
    HTTPServer,
    Outage,
    Request,
    Response,
    TokenBucket,
    error,
    number,
    rate_limited,
)

#: API keys accepted by ``/secure/<id>`` unless ``valid_keys`` is given.
DEFAULT_VALID_KEYS: tuple[str, ...] = ("key-good", "key-backup")
#: API keys always refused by ``/secure/<id>``, even if listed in ``valid_keys``.
DEFAULT_REVOKED_KEYS: tuple[str, ...] = ("key-revoked",)

_LOOPBACK = "127.0.0.1"


def _check_arguments(
    host: str,
    port: int,
    fail_rate: float,
    rate_limit: float | None,
    latency: float,
    delay_scale: float,
    burst: float | None,
) -> None:
    """Raise ValueError naming the first argument of :class:`DemoServer` out of range."""
    if host not in (_LOOPBACK, "localhost"):
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


_Route = Callable[[Request, list[str]], Response]


class ServerStats(TypedDict):
    """The request counters of a :class:`DemoServer` (see :attr:`DemoServer.stats`)."""

    requests: int
    endpoints: dict[str, int]
    status: dict[int, int]
    rate_limited: int
    unauthorized: int
    server_errors: int
    outage: int


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
        _check_arguments(host, port, fail_rate, rate_limit, latency, delay_scale, burst)
        self.host = _LOOPBACK  # "localhost" names it too
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
        self._outage = Outage()

        self._lock = threading.Lock()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = _route_table(self)
        self.chat = ChatLimits(llm_requests, llm_tokens, llm_window)
        self._init_state()

    # ------------------------------------------------------------------ lifecycle

    def _init_state(self) -> None:
        """(Re)initialise counters, attempt counts, RNG and rate-limit bucket."""
        self._requests = 0
        self._endpoints: dict[str, int] = {}
        self._statuses: dict[int, int] = {}
        self._attempts = endpoints.FirstAttempts()
        self._rng = random.Random(self.seed)
        self._bucket = TokenBucket(self._capacity())
        self._outage.hits = 0
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
        self._outage.schedule(seconds, start, status, retry_after)

    @property
    def down(self) -> bool:
        """Whether the server is inside an :meth:`outage` window now."""
        return self._outage.down

    def start(self) -> Self:
        """Bind the socket and serve from a daemon thread (no-op if running).

        Returns:
            The server itself, so ``server = DemoServer().start()`` works.

        Raises:
            OSError: If the port cannot be bound.
        """
        if self._httpd is not None:
            return self
        httpd = HTTPServer((self.host, self.port), self._dispatch)
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
    def stats(self) -> ServerStats:
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
                "outage": self._outage.hits,
            }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"DemoServer({state}, seed={self.seed}, fail_rate={self.fail_rate})"

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: Request) -> Response:
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
            route = endpoints.echo
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
                response = error(404, "not found", path=request.path)
            else:
                response = route(request, segments[1:])
        except Exception as exc:  # pragma: no cover - defensive
            response = error(500, "internal error", detail=repr(exc))
        with self._lock:
            self._requests += 1
            self._endpoints[name] = self._endpoints.get(name, 0) + 1
            self._statuses[response.status] = self._statuses.get(response.status, 0) + 1
        return response

    def _pushback(self) -> Response | None:
        """The outage's or the global rate limit's answer, or None to serve the request."""
        answer = self._outage.answer()
        if answer is not None:
            return answer
        if self.limit_all:
            wait = self._take_token()
            if wait > 0:
                return rate_limited(wait)
        return None

    def _fails(self, namespace: str, key: str) -> tuple[bool, int]:
        return self._attempts.fails(namespace, key, self.seed, self.fail_rate)

    def _flaky(self, request: Request, rest: list[str]) -> Response:
        p = number(request.arg("p"), 0.5)
        if p is None or p > 1:
            return error(400, "p must be a number in [0, 1]")
        with self._lock:
            draw = self._rng.random()
        if draw < p:
            return error(500, "flaky failure", p=p)
        return Response(200, {"ok": True, "p": p})

    def _take_token(self) -> float:
        """Take a rate-limit token; return 0 if granted, else seconds to wait."""
        if self.rate_limit is None:
            return 0.0
        return self._bucket.take(self.rate_limit, self._capacity())

    def _limited(self, request: Request, rest: list[str]) -> Response:
        if len(rest) != 1:
            return error(404, "not found", path=request.path)
        wait = 0.0 if self.limit_all else self._take_token()  # limit_all took it already
        if wait > 0:
            return rate_limited(wait)
        return Response(200, {"id": rest[0], "value": item_value(rest[0])})

    def _chat(self, request: Request, rest: list[str]) -> Response:
        return chat(request, self.chat)


def _route_table(server: DemoServer) -> dict[tuple[str, str], _Route]:
    """The GET routes of ``server``, by ``(method, first path segment)``."""

    def secure(request: Request, rest: list[str]) -> Response:
        return endpoints.secure(request, rest, server.valid_keys, server.revoked_keys)

    def delay(request: Request, rest: list[str]) -> Response:
        return endpoints.delay(request, rest, server.delay_scale)

    return {
        ("GET", "health"): endpoints.health,
        ("GET", "item"): lambda request, rest: endpoints.item(request, rest, server._fails),
        ("GET", "slow"): endpoints.slow,
        ("GET", "flaky"): server._flaky,
        ("GET", "status"): endpoints.status,
        ("GET", "limited"): server._limited,
        ("GET", "secure"): secure,
        ("GET", "geocode"): lambda request, rest: endpoints.find(request, rest, server._fails),
        ("GET", "user-agent"): endpoints.user_agent,
        ("GET", "html"): endpoints.page,
        ("GET", "delay"): delay,
        ("GET", "users"): endpoints.users,
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
