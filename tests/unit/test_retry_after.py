"""Server hints: 429/503 + Retry-After read from real HTTP client errors, honoured by retries."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from opero._hints import parse_retry_after, server_wait


def test_parse_retry_after_seconds_and_dates() -> None:
    """Delay-seconds (integer or fractional) and HTTP dates; garbage and negatives are None."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.25 ") == 0.25
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(7.0, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    for bad in ("", "soon", "-1", "nan", "inf"):
        assert parse_retry_after(bad) is None


def test_any_exception_with_a_response() -> None:
    """Duck typing: any exception whose .response has status_code and headers."""

    class Response:
        status_code = 503
        headers: dict[str, Any] = {"retry-after": "1"}

    class Custom(Exception):
        response = Response()

    assert server_wait(Custom()) == 1.0
