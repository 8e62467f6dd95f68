"""Rate strings and the server's rate-limit headers (opero._rates, opero._headers, observe)."""

from __future__ import annotations

import email.message
import time
from typing import Any

import pytest

import opero
from opero._headers import parse_duration, read_headers
from opero._options import resolve_options
from opero._rates import parse_rate

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("500/min", 500 / 60), ("10/s", 10.0), ("3600/h", 1.0), ("86400/day", 1.0), ("90000/2min", 750.0)],
)
def test_rate_strings_become_units_per_second(text: str, per_second: float) -> None:
    """Each rate string form gives the rate per second, for rate_limit and token_limit."""
    assert parse_rate(text) == pytest.approx(per_second)
    o = resolve_options({"rate_limit": text, "token_limit": text, "tokens": len})
    assert o.rate_limit == pytest.approx(per_second)
    assert o.token_limit == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["5/fortnight", "fast", "0/s", "-3/min", "/s", "10/"])
def test_bad_rate_string_names_value_and_forms(bad: str) -> None:
    """A bad rate string is a ConfigurationError naming the value and the allowed forms."""
    with pytest.raises(opero.ConfigurationError) as info:
        opero.opero(rate_limit=bad)(lambda: 1)
    assert repr(bad) in str(info.value)
    assert "'500/min'" in str(info.value)


def test_token_options_are_validated() -> None:
    """token_limit needs tokens; bad budgets and concurrency are ConfigurationErrors."""
    with pytest.raises(opero.ConfigurationError, match="needs tokens="):
        opero.opero(token_limit="100/s")(lambda: 1)
    with pytest.raises(opero.ConfigurationError, match="token_budget=-5"):
        opero.opero(token_budget=-5)(lambda: 1)
    with pytest.raises(opero.ConfigurationError, match="max_concurrency=0"):
        opero.opero(max_concurrency=0)(lambda: 1)
    with pytest.raises(opero.ConfigurationError, match="tokens= needs"):
        opero.opero(tokens=len)(lambda: 1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("-1", None),
        ("soon", None),
    ],
)
def test_openai_durations(text: str, seconds: float | None) -> None:
    """Go-style durations parse to seconds; junk is None."""
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_openai_headers() -> None:
    """OpenAI x-ratelimit-* give per-minute request and token limits with duration resets."""
    r = read_headers(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6ms",
        },
        now=NOW,
    )
    assert r.requests is not None and r.tokens is not None
    assert (r.requests.limit, r.requests.remaining, r.requests.reset) == (60, 0, 360)
    assert r.requests.rate == pytest.approx(1.0)
    assert (r.tokens.limit, r.tokens.remaining, r.tokens.reset) == (150000, 149984, pytest.approx(0.006))


def test_anthropic_headers_rfc3339_and_tightest_tokens() -> None:
    """Anthropic resets are RFC 3339 times; input/output token limits merge, tightest wins."""
    r = read_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:01Z",
            "anthropic-ratelimit-input-tokens-remaining": "100",
            "anthropic-ratelimit-input-tokens-reset": "2027-01-15T08:00:30Z",
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": "2027-01-15T08:00:12Z",
        },
        now=1_800_000_000.0 - 1_800_000_000.0 + _epoch("2027-01-15T08:00:00Z"),
    )
    assert r.requests is not None and r.tokens is not None
    assert (r.requests.limit, r.requests.remaining, r.requests.reset) == (50, 49, pytest.approx(1.0))
    assert (r.tokens.remaining, r.tokens.reset) == (0, pytest.approx(12.0))


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_ietf_structured_fields_and_older_draft() -> None:
    """IETF RateLimit/RateLimit-Policy (structured and older key=value forms) are read."""
    r = read_headers({"RateLimit": '"default";r=0;t=7', "RateLimit-Policy": '"default";q=100;w=60'}, now=NOW)
    assert r.requests is not None
    assert (r.requests.limit, r.requests.remaining, r.requests.reset, r.requests.window) == (100, 0, 7, 60)
    old = read_headers({"RateLimit": "limit=10, remaining=3, reset=5"}, now=NOW)
    assert old.requests is not None
    assert (old.requests.limit, old.requests.remaining, old.requests.reset) == (10, 3, 5)


def test_ratelimit_dashed_and_x_ratelimit_reset_by_magnitude() -> None:
    """RateLimit-Reset is a delay; X-RateLimit-Reset is a delay or epoch s/ms by magnitude."""
    r = read_headers({"RateLimit-Limit": "20", "RateLimit-Remaining": "4", "RateLimit-Reset": "3"}, now=NOW)
    assert r.requests is not None and (r.requests.limit, r.requests.remaining, r.requests.reset) == (20, 4, 3)
    for reset in ("9", str(NOW + 9), str((NOW + 9) * 1000)):
        headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        x = read_headers(headers, now=NOW)
        assert x.requests is not None and x.requests.reset == pytest.approx(9.0), reset


def test_junk_values_are_ignored() -> None:
    """-1, negative, unparseable values and a reset a year away are dropped, never trusted."""
    r = read_headers(
        {
            "x-ratelimit-limit-requests": "-1",
            "x-ratelimit-remaining-requests": "-1",
            "x-ratelimit-reset-requests": "banana",
            "X-RateLimit-Reset": str(NOW + 365 * 86400),
            "Retry-After": "-3",
        },
        now=NOW,
    )
    assert r.retry_after is None
    assert r.requests is not None
    assert (r.requests.limit, r.requests.remaining, r.requests.reset) == (None, None, None)


def test_headers_from_requests_httpx_urllib_and_exceptions() -> None:
    """Headers are found on requests/httpx responses, urllib messages and errors carrying them."""
    import httpx
    import requests

    resp = requests.Response()
    resp.headers["X-RateLimit-Remaining"] = "0"
    resp.headers["X-RateLimit-Reset"] = "2"
    hx = httpx.Response(429, headers={"Retry-After": "1.5", "x-ratelimit-remaining-tokens": "0"})
    msg = email.message.Message()
    msg["RateLimit-Remaining"] = "0"
    msg["RateLimit-Reset"] = "4"

    class ApiError(Exception):
        pass

    try:
        try:
            raise requests.HTTPError(response=resp)
        except requests.HTTPError as inner:
            raise ApiError("wrapped") from inner
    except ApiError as outer:
        wrapped = outer
    assert read_headers(resp).requests is not None
    assert read_headers(hx).retry_after == 1.5
    assert read_headers(hx).tokens is not None
    one = read_headers(type("R", (), {"headers": msg})())
    assert one.requests is not None and one.requests.reset == 4
    deep = read_headers(wrapped).requests
    assert deep is not None and deep.reset == 2


def test_observe_remaining_zero_holds_the_request_budget() -> None:
    """observe() of remaining 0 holds the shared request budget until the reset."""
    starts: list[float] = []

    @opero.opero(rate_limit=1000)
    def call(i: int) -> int:
        starts.append(time.monotonic())
        if i == 0:
            opero.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"})
        return i

    call(0)
    call(1)
    assert starts[1] - starts[0] >= 0.29


def test_observe_junk_reset_is_capped_at_max_delay() -> None:
    """A reset past max_delay never holds the budget for longer than max_delay."""
    starts: list[float] = []

    @opero.opero(rate_limit=1000, max_delay=0.2, min_delay=0.01)
    def call(i: int) -> int:
        starts.append(time.monotonic())
        if i == 0:
            opero.observe({"RateLimit-Remaining": "0", "RateLimit-Reset": "50000"})
        return i

    call(0)
    call(1)
    assert 0.15 <= starts[1] - starts[0] < 0.6 * 3


def test_auto_takes_published_limit_as_start_and_ceiling() -> None:
    """With rate_limit='auto', a published limit (IETF policy) becomes the rate and ceiling."""
    seen: list[Any] = []

    @opero.opero(rate_limit="auto")
    def call() -> None:
        seen.append(opero.observe({"RateLimit-Policy": "q=50;w=1", "RateLimit": "r=40;t=1"}))

    call()
    call()
    limiter = call.__wrapped__ and _plan_of(call).limiter
    assert limiter.current_rate() == pytest.approx(50.0)
    assert limiter.adaptive.ceiling == pytest.approx(50.0)


def test_error_response_headers_hold_the_budget() -> None:
    """A failed attempt's response with remaining 0 holds the next attempt until its reset."""
    import requests

    starts: list[float] = []

    @opero.opero(rate_limit=1000, retries=1, min_delay=0.0, max_delay=5)
    def call() -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            resp = requests.Response()
            resp.status_code = 500
            resp.headers.update({"RateLimit-Remaining": "0", "RateLimit-Reset": "0.3"})
            raise requests.HTTPError(response=resp)
        return "ok"

    assert call() == "ok"
    assert starts[1] - starts[0] >= 0.29


def _plan_of(fn: Any) -> Any:
    import gc

    from opero._policy import Plan

    return next(p for p in gc.get_objects() if isinstance(p, Plan) and p.func is fn.__wrapped__)
