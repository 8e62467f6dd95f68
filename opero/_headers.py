"""What a server says about its rate limits, read from response headers.

Read by duck typing, so no HTTP library is imported: a requests/httpx/aiohttp/urllib
response (anything with ``.headers``), an exception carrying one (``exc.response.headers``,
``exc.headers``, or the error it was raised from), or a plain mapping of headers.

Formats, each turned into a :class:`Limits` per kind (``"requests"``, ``"tokens"``):

- ``Retry-After`` (seconds or an HTTP date);
- IETF ``RateLimit`` / ``RateLimit-Policy`` structured fields (``"default";r=50;t=30`` and
  ``"default";q=100;w=60``; the older ``limit=100, remaining=50, reset=30`` too);
- ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (reset: seconds from now);
- ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (reset: seconds from now, or a Unix
  time in seconds or milliseconds, told apart by magnitude);
- OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (resets as durations:
  ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``);
- Anthropic ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
  remaining,reset}`` (resets as RFC 3339 times); input and output tokens count as tokens,
  the tightest of them wins.

Junk is dropped field by field, never trusted: a negative or ``-1`` value, a limit of 0,
text that does not parse, a reset more than :data:`MAX_RESET` away. Callers still cap any
wait they derive at ``max_delay``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ._hints import header_pairs, headers_on_chain, parse_retry_after

__all__ = ["MAX_RESET", "Limits", "Reading", "headers_of", "parse_duration", "read_headers"]

#: A reset further away than this (seconds) is junk (a provider has sent a year).
MAX_RESET = 86400.0
#: A Unix time in seconds is above this; a smaller number is a delay (seconds from now).
_EPOCH = 1e9
#: The window of OpenAI's and Anthropic's published limits (they are per minute).
PROVIDER_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """One limit the server published; a field is None when absent or junk.

    Attributes:
        limit: units allowed per window.
        remaining: units left in the current window.
        reset: seconds from now until the window (or the spent budget) resets.
        window: the window's length in seconds, when the server says it.
    """

    limit: float | None
    remaining: float | None
    reset: float | None
    window: float | None

    @property
    def rate(self) -> float | None:
        """Units per second the published limit allows (``limit / window``), when both are known."""
        if self.limit is None or not self.window:
            return None
        return self.limit / self.window

    def merged(self, other: Limits) -> Limits:
        """This reading with ``other``'s fields filling the gaps (a tighter remaining wins)."""
        remaining, reset = self.remaining, self.reset
        if other.remaining is not None and (remaining is None or other.remaining < remaining):
            remaining, reset = other.remaining, other.reset if other.reset is not None else reset
        elif reset is None:
            reset = other.reset
        return Limits(
            self.limit if self.limit is not None else other.limit,
            remaining,
            reset,
            self.window if self.window is not None else other.window,
        )


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything a response's headers said.

    Attributes:
        retry_after: seconds the server asked to wait (``Retry-After``), or None.
        requests: the request limit, or None.
        tokens: the token limit, or None.
    """

    retry_after: float | None = None
    requests: Limits | None = None
    tokens: Limits | None = None

    def __bool__(self) -> bool:
        return self.retry_after is not None or self.requests is not None or self.tokens is not None


# -- getting at the headers ------------------------------------------------------------------


def _lower(raw: object) -> dict[str, str] | None:
    pairs = header_pairs(raw)
    return None if pairs is None else {k.lower(): v for k, v in pairs}


def headers_of(source: object) -> dict[str, str] | None:
    """The headers of a response, an exception carrying one, or a mapping; keys lower-cased.

    Args:
        source: a response object (``.headers``), an exception (its ``response``, its own
            ``headers``, or those of the error it was raised from), or a mapping.

    Returns:
        A plain dict with lower-case names, or None when there are no headers.
    """
    if isinstance(source, Mapping):
        return _lower(source)
    for _, raw in headers_on_chain(source):  # the first set that says anything
        found = _lower(raw)
        if found:
            return found
    return None


# -- values ------------------------------------------------------------------------------------


def _count(text: str | None) -> float | None:
    """A non-negative finite count, or None (junk: "-1", "abc", "inf")."""
    if text is None:
        return None
    try:
        value = float(text.strip().split(",")[0].split(";")[0])
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _limit(text: str | None) -> float | None:
    value = _count(text)
    return value if value is not None and value > 0 else None


def _delay(seconds: float | None) -> float | None:
    if seconds is None or not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RESET:
        return None
    return seconds


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """Seconds from a Go-style duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``) or a
    bare number of seconds; None when it does not parse or is junk."""
    if text is None:
        return None
    text = text.strip().lower()
    plain = _count(text) if re.fullmatch(r"[0-9.eE+-]+", text) else None
    if plain is not None:
        return _delay(plain)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return _delay(sum(float(n) * _UNITS[u] for n, u in parts))


def _reset_number(text: str | None, now: float) -> float | None:
    """An ``X-RateLimit-Reset``: seconds from now, or a Unix time (s or ms) by magnitude."""
    value = _count(text)
    if value is None:
        return None
    if value > _EPOCH * 1000:  # milliseconds since the epoch
        value = value / 1000.0
    if value > _EPOCH:
        return _delay(max(0.0, value - now))
    return _delay(value)


def _rfc3339(text: str | None, now: float) -> float | None:
    if text is None:
        return None
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return _delay(max(0.0, when.timestamp() - now))


def _retry_after(text: str | None, now: float) -> float | None:
    if text is None:
        return None
    return _delay(parse_retry_after(text, now))


# -- formats -----------------------------------------------------------------------------------


def _params(text: str) -> dict[str, str]:
    """``key=value`` pairs of a structured field (``"p";r=5;t=3`` or ``limit=5, reset=3``)."""
    out: dict[str, str] = {}
    for part in re.split(r"[;,]", text):
        key, sep, value = part.partition("=")
        if sep:
            out.setdefault(key.strip().lower(), value.strip().strip('"'))
    return out


def _ietf(h: Mapping[str, str]) -> Limits | None:
    field, policy = h.get("ratelimit"), h.get("ratelimit-policy")
    if field is None and policy is None:
        return None
    p = _params(field or "")
    q = _params(policy or "")
    limit = _limit(q.get("q") or p.get("limit") or q.get("limit"))
    if limit is None and policy is not None:  # the older "100;w=60" policy form
        limit = _limit(policy)
    window = _limit(q.get("w") or q.get("window") or p.get("w"))
    return Limits(
        limit, _count(p.get("r") or p.get("remaining")), _delay(_count(p.get("t") or p.get("reset"))), window
    )


def _dashed(h: Mapping[str, str], prefix: str, now: float) -> Limits | None:
    limit, remaining, reset = (h.get(f"{prefix}-{x}") for x in ("limit", "remaining", "reset"))
    if limit is None and remaining is None and reset is None:
        return None
    window = _limit(h.get(f"{prefix}-window")) if f"{prefix}-window" in h else None
    policy = _params(h.get("ratelimit-policy", "")) if prefix == "ratelimit" else {}
    if window is None and "w" in policy:
        window = _limit(policy["w"])
    when = _reset_number(reset, now) if prefix.startswith("x-") else _delay(_count(reset))
    return Limits(_limit(limit), _count(remaining), when, window)


def _openai(h: Mapping[str, str], kind: str) -> Limits | None:
    limit, remaining, reset = (h.get(f"x-ratelimit-{x}-{kind}") for x in ("limit", "remaining", "reset"))
    if limit is None and remaining is None and reset is None:
        return None
    return Limits(_limit(limit), _count(remaining), parse_duration(reset), PROVIDER_WINDOW)


def _anthropic(h: Mapping[str, str], kind: str, now: float) -> Limits | None:
    prefix = f"anthropic-ratelimit-{kind}"
    limit, remaining, reset = (h.get(f"{prefix}-{x}") for x in ("limit", "remaining", "reset"))
    if limit is None and remaining is None and reset is None:
        return None
    return Limits(_limit(limit), _count(remaining), _rfc3339(reset, now), PROVIDER_WINDOW)


def _first(*found: Limits | None) -> Limits | None:
    out: Limits | None = None
    for limits in found:
        if limits is not None:
            out = limits if out is None else out.merged(limits)
    return out


def read_headers(source: object, now: float | None = None) -> Reading:
    """Read every rate-limit header that ``source`` carries.

    Args:
        source: a response, an exception carrying one, or a mapping of headers.
        now: the current ``time.time()`` (for tests); default: now.

    Returns:
        A :class:`Reading`; falsy when nothing useful was found.
    """
    h = headers_of(source)
    if not h:
        return Reading()
    now = time.time() if now is None else now
    requests = _first(
        _openai(h, "requests"),
        _anthropic(h, "requests", now),
        _ietf(h),
        _dashed(h, "ratelimit", now),
        _dashed(h, "x-ratelimit", now),
    )
    tokens = _first(
        _openai(h, "tokens"),
        _anthropic(h, "tokens", now),
        _anthropic(h, "input-tokens", now),
        _anthropic(h, "output-tokens", now),
    )
    return Reading(_retry_after(h.get("retry-after"), now), requests, tokens)
