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
from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "RETRYABLE_CLIENT_STATUSES",
    "THROTTLE_STATUSES",
    "header_pairs",
    "headers_on_chain",
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


def _chain(source: object) -> list[object]:
    """``source`` and the errors it was raised from (``__cause__``), at most 3, no loops."""
    out: list[object] = []
    current: object = source
    while current is not None and len(out) < _CHAIN and current not in out:
        out.append(current)
        current = current.__cause__ if isinstance(current, BaseException) else None
    return out


def _attr(source: object, name: str) -> object:
    """``source.name`` or None, also when reading it raises (a property on a closed response)."""
    try:
        return getattr(source, name, None)
    except Exception:
        return None


def headers_on_chain(source: object) -> Iterator[tuple[object, object]]:
    """``(error, headers)`` for every headers object on an error and the errors it was raised from.

    The one walk over "the headers of this error": the error first, then its ``__cause__``
    (up to 3 deep, stopping at a loop); on each, its ``response.headers`` before its own
    ``headers``. A non-exception source (a response) is looked at alone. The headers are
    yielded as found (a mapping, a ``Message``, a case-insensitive dict), unread; the readers
    decide which to take: :func:`server_wait` a ``Retry-After`` on an error that is itself a
    429/503, :func:`opero._headers.headers_of` the first non-empty set.

    Args:
        source: an exception, or a response object.
    """
    for error in _chain(source):
        response = _attr(error, "response")
        for holder in (error,) if response is None else (response, error):
            headers = _attr(holder, "headers")
            if headers is not None:
                yield error, headers


def header_pairs(headers: object) -> list[tuple[str, str]] | None:
    """The ``(name, value)`` pairs of a headers object as found (names keep their case).

    Works for a mapping, a case-insensitive dict, a multidict, urllib's ``Message``: anything
    with ``items()``. None when they cannot be read.
    """
    items = _attr(headers, "items")
    try:
        pairs = items() if callable(items) else None
        if not isinstance(pairs, Iterable):
            return None
        return [(str(k), str(v)) for k, v in pairs]
    except Exception:
        return None


def _int_attr(source: object, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = _attr(source, name)
        # only a real HTTP status: an unrelated ``code`` attribute (an errno, an exit code) is not
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _status(exc: object) -> int | None:
    response = _attr(exc, "response")
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


def _header(headers: object, name: str) -> str | None:
    get = _attr(headers, "get")
    if not callable(get):
        return None
    try:
        value = get(name)  # case-insensitive for requests, httpx, aiohttp, urllib
        if value is None:
            value = get(name.lower())
        if value is None and isinstance(headers, Mapping):  # a plain dict (RemoteError)
            wanted = name.lower()
            value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    except Exception:
        return None
    return None if value is None else str(value)


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
    for error, headers in headers_on_chain(exc):
        # the wait counts only on an error that is itself a 429/503 (see headers_on_chain)
        raw = _header(headers, "Retry-After") if _status(error) in THROTTLE_STATUSES else None
        if raw is not None:
            return parse_retry_after(raw)
    return None
