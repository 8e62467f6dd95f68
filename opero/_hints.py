"""What a failed attempt tells us about the server: throttling (429/503) and ``Retry-After``.

Read by duck typing, so no HTTP library is imported: requests and httpx errors carry a
``response`` with ``status_code``/``headers``; aiohttp's ``ClientResponseError`` has
``status``/``headers``; urllib's ``HTTPError`` has ``code``/``headers``; a
:class:`~opero.RemoteError` (an error that crossed a process boundary) keeps ``status`` and
``headers``. Any exception with a ``response`` that has headers works the same way. An
error raised ``from`` such an error (``raise ApiError(...) from http_error``) counts too.

Used by the retry policy (the backoff before the next attempt is at least the server's
wait) and by the limiter (an adaptive budget is cut on throttling, and every caller of a
shared budget waits out a server's ``Retry-After``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "RETRYABLE_CLIENT_STATUSES",
    "THROTTLE_STATUSES",
    "is_client_error",
    "is_throttle",
    "is_throttled",
    "parse_retry_after",
    "server_wait",
    "status_of",
]

#: Statuses that mean "slow down": too many requests, service unavailable.
THROTTLE_STATUSES = frozenset({429, 503})
#: Client errors (4xx) worth another round: request timeout, too early, too many requests.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
#: How far down ``__cause__`` to look for the HTTP error (a wrapper of a wrapper).
_CHAIN = 3


def _chain(exc: BaseException) -> list[BaseException]:
    out = [exc]
    cause = exc.__cause__
    while cause is not None and len(out) < _CHAIN and cause not in out:
        out.append(cause)
        cause = cause.__cause__
    return out


def _int_attr(source: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        try:
            value = getattr(source, name, None)
        except Exception:  # a property that raises (e.g. on a closed response)
            continue
        # only a real HTTP status: an unrelated ``code`` attribute (an errno, an exit code) is not
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if response is not None:  # never `if response`: a requests Response is falsy on 4xx
        status = _int_attr(response, ("status_code", "status"))
        if status is not None:
            return status
    return _int_attr(exc, ("status_code", "status", "code"))


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an error carries (its own or that of the error it was raised from).

    The one reader of an HTTP status in opero: the retry policy, the error details of an
    error that crossed a process boundary, ``fn.failures()`` and the dashboard all use it.
    An :class:`~opero.AllFailedError` carries the status of its last attempt's error (its
    ``__cause__``).

    Args:
        exc: any exception.

    Returns:
        The status code, or None when the error is not an HTTP error.
    """
    for e in _chain(exc):
        status = _status(e)
        if status is not None:
            return status
    return None


def is_throttle(exc: BaseException) -> bool:
    """True when ``exc`` is an HTTP 429 (too many requests) or 503 (service unavailable)."""
    return status_of(exc) in THROTTLE_STATUSES


def is_client_error(exc: BaseException) -> bool:
    """True for an HTTP 4xx that asking again will not fix (not 408, 425 or 429).

    A 404, 401 or 400 answers the same to the same request: the default ``retry_on`` ends
    the rounds on it (the round's other fallback candidates are still tried).
    """
    status = status_of(exc)
    return status is not None and 400 <= status <= 499 and status not in RETRYABLE_CLIENT_STATUSES


def is_throttled(exc: BaseException) -> bool:
    """True when the server paced us: a 429, or a 503 that says when to come back.

    Such an attempt waits as the server asks and does not use up a retry (a 503 without
    ``Retry-After`` is an outage, retried like any failure).
    """
    status = status_of(exc)
    return status == 429 or (status == 503 and server_wait(exc) is not None)


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)  # case-insensitive for requests, httpx, aiohttp, urllib
        if value is None:
            value = headers.get(name.lower())
        if value is None and isinstance(headers, Mapping):  # a plain dict (RemoteError)
            wanted = name.lower()
            value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    except Exception:
        return None
    return None if value is None else str(value)


def _retry_after_header(exc: BaseException) -> str | None:
    for source in (getattr(exc, "response", None), exc):
        headers = getattr(source, "headers", None) if source is not None else None
        if headers is not None:
            value = _header(headers, "Retry-After")
            if value is not None:
                return value
    return None


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date.

    Fractional seconds (``"0.2"``, sent by some APIs and by the demo server) are accepted.
    A date in the past means 0. Anything else (empty, negative, garbage) is None.

    Args:
        value: the header's value.
        now: the current ``time.time()`` (for tests); default: now.
    """
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    import email.utils  # only for a date: it costs ~10 ms at import

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def server_wait(exc: BaseException) -> float | None:
    """The seconds a throttled server asked us to wait, or None.

    Only for a 429 or 503 that carries a valid ``Retry-After`` header (seconds or an HTTP
    date), looked up on the error and on the errors it was raised from.

    Args:
        exc: the exception of a failed attempt.
    """
    for e in _chain(exc):
        if _status(e) in THROTTLE_STATUSES:
            raw = _retry_after_header(e)
            if raw is not None:
                return parse_retry_after(raw)
    return None
