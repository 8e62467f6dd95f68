"""The demo server's deterministic values and the routes that keep no state.

Routes take the parsed request and the path segments after the route's name, and return
a :class:`~opero.demo._http.Response`.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import json
import threading
import time
from collections.abc import Callable, Collection

from opero.demo._http import HTML, Request, Response, error, number

_MAX_SLEEP = 10.0
_BLOCKED_AGENT = "operobot"

#: ``fails(namespace, key) -> (failed, attempt)``: counts an attempt, tells whether it fails.
Fails = Callable[[str, str], tuple[bool, int]]


def unit(*parts: object) -> float:
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
    attempt for a key fails iff ``unit(seed, namespace, key) < fail_rate``, where
    ``unit`` is the first 8 hex digits of
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
    return unit(seed, namespace, key) < fail_rate


def item_value(item_id: str) -> int:
    """Return the deterministic ``value`` that ``/item/<id>`` reports for ``item_id``.

    Args:
        item_id: The id as it appears in the URL path.

    Returns:
        An integer in ``[0, 1000)``, independent of the server's seed.
    """
    return int(unit("value", item_id) * 1000)


def geocode(address: str) -> tuple[float, float]:
    """Return the fake ``(lat, lon)`` that ``/geocode`` reports for ``address``.

    Args:
        address: The address exactly as sent in the query string (after decoding).

    Returns:
        Latitude in ``[-90, 90)`` and longitude in ``[-180, 180)``, rounded to 6 places.
    """
    lat = round(unit("lat", address) * 180.0 - 90.0, 6)
    lon = round(unit("lon", address) * 360.0 - 180.0, 6)
    return lat, lon


class FirstAttempts:
    """Counts the attempts per key and applies the first-attempt flakiness rule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def fails(self, namespace: str, key: str, seed: int, fail_rate: float) -> tuple[bool, int]:
        """Count one attempt for ``key``; return ``(failed, attempt)``, 1-based."""
        with self._lock:
            attempt = self._counts.get((namespace, key), 0) + 1
            self._counts[(namespace, key)] = attempt
        failed = attempt == 1 and first_attempt_fails(
            key, seed=seed, fail_rate=fail_rate, namespace=namespace
        )
        return failed, attempt


def item(request: Request, rest: list[str], fails: Fails) -> Response:
    """``GET /item/<id>``: the item, after a 500 on the first attempt for some ids."""
    if len(rest) != 1:
        return error(404, "not found", path=request.path)
    item_id = rest[0]
    failed, attempt = fails("item", item_id)
    if failed:
        return error(500, "transient failure", id=item_id, attempt=attempt)
    return Response(
        200,
        {
            "id": item_id,
            "value": item_value(item_id),
            "name": f"item-{item_id}",
            "attempt": attempt,
        },
    )


def find(request: Request, rest: list[str], fails: Fails) -> Response:
    """``GET /geocode?address=...``: fake coordinates, flaky like ``/item``."""
    address = request.arg("address")
    if rest or address is None or not address.strip():
        return error(400, "address query parameter is required")
    if "nowhere" in address.lower():
        return error(404, "address not found", address=address)
    failed, attempt = fails("geocode", address)
    if failed:
        return error(500, "transient failure", address=address, attempt=attempt)
    lat, lon = geocode(address)
    return Response(200, {"address": address, "lat": lat, "lon": lon})


def health(request: Request, rest: list[str]) -> Response:
    """``GET /health``."""
    if rest:
        return error(404, "not found", path=request.path)
    return Response(200, {"status": "ok"})


def slow(request: Request, rest: list[str]) -> Response:
    """``GET /slow?delay=0.2``: sleep ``delay`` seconds (capped at 10)."""
    delay = number(request.arg("delay"), 0.2)
    if delay is None:
        return error(400, "delay must be a non-negative number")
    delay = min(delay, _MAX_SLEEP)
    time.sleep(delay)
    return Response(200, {"slept": delay})


def status(request: Request, rest: list[str]) -> Response:
    """``GET /status/<code>``: answer that status, with ``Retry-After`` when asked."""
    try:
        code = int(rest[0]) if len(rest) == 1 else -1
    except ValueError:
        code = -1
    if not 200 <= code <= 599:
        return error(400, "status code must be an integer in 200..599")
    # ?retry_after=<seconds or HTTP date> is sent back as a Retry-After header, as is
    # ("now+<s>" becomes the HTTP date s seconds from now): server hints in tests.
    headers: dict[str, str] = {}
    retry_after = request.arg("retry_after")
    if retry_after is not None:
        if retry_after.startswith("now+"):
            offset = number(retry_after[4:], 0.0) or 0.0
            retry_after = email.utils.formatdate(time.time() + offset, usegmt=True)
        headers["Retry-After"] = retry_after
    if code in (204, 304):
        return Response(code, headers=headers)
    return Response(code, {"status": code}, headers=headers)


def secure(request: Request, rest: list[str], valid: Collection[str], revoked: Collection[str]) -> Response:
    """``GET /secure/<id>``: needs ``Authorization: Bearer <key>`` with a valid, unrevoked key."""
    if len(rest) != 1:
        return error(404, "not found", path=request.path)
    challenge = {"WWW-Authenticate": 'Bearer realm="opero-demo"'}
    auth = request.header("Authorization").strip()
    scheme, _, key = auth.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return Response(401, {"error": "missing key"}, headers=challenge)
    if key in revoked or key not in valid:
        return Response(401, {"error": "invalid key"}, headers=challenge)
    return Response(200, {"id": rest[0], "key": key})


def user_agent(request: Request, rest: list[str]) -> Response:
    """``GET /user-agent``."""
    return Response(200, {"user-agent": request.header("User-Agent")})


def page(request: Request, rest: list[str]) -> Response:
    """``GET /html/<id>``: a small HTML page, refused to the blocked user agent."""
    if len(rest) != 1:
        return error(404, "not found", path=request.path)
    if _BLOCKED_AGENT in request.header("User-Agent").lower():
        return error(403, "forbidden user agent")
    title = html.escape(rest[0])
    value = item_value(rest[0])
    body = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>Page {title}</title></head>\n<body><h1>Page {title}</h1>\n"
        f"<p class='value'>{value}</p>\n</body></html>\n"
    )
    return Response(200, body, content_type=HTML)


def delay(request: Request, rest: list[str], scale: float) -> Response:
    """``GET /delay/<n>``: sleep ``min(n, 10) * scale`` seconds."""
    n = number(rest[0] if len(rest) == 1 else "", 0.0)
    if n is None:
        return error(400, "delay must be a non-negative number")
    time.sleep(min(n, _MAX_SLEEP) * scale)
    return Response(200, {"delay": int(n) if n.is_integer() else n})


def users(request: Request, rest: list[str]) -> Response:
    """``GET /users/<id>`` and ``GET /users/<id>/preferences``."""
    if len(rest) == 1:
        user_id = rest[0]
        return Response(
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
        return Response(
            200,
            {
                "user_id": user_id,
                "theme": "dark" if unit("theme", user_id) < 0.5 else "light",
                "language": ("en", "de", "fr", "pl")[int(unit("lang", user_id) * 4)],
                "notifications": unit("notify", user_id) < 0.5,
            },
        )
    return error(404, "not found", path=request.path)


def echo(request: Request, rest: list[str]) -> Response:
    """``POST /<anything>``: echo the path, the parsed JSON body and the raw body."""
    text = request.body.decode("utf-8", errors="replace")
    parsed: object
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return Response(200, {"path": request.path, "json": parsed, "data": text})
