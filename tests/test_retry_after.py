"""Server hints: 429/503 + Retry-After read from real HTTP client errors, honoured by retries."""

from __future__ import annotations

import asyncio
import email.utils
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from opero._errors import RemoteError
from opero._hints import is_throttle, parse_retry_after, server_wait, status_of
from opero.demo import DemoServer


@pytest.fixture
def api() -> Iterator[DemoServer]:
    with DemoServer(fail_rate=0.0) as server:
        yield server


def _urllib_error(url: str) -> urllib.error.HTTPError:
    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.HTTPError as exc:
        return exc
    raise AssertionError(f"{url} did not fail")


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


def test_urllib_error_seconds(api: DemoServer) -> None:
    """urllib's HTTPError: .code and .headers."""
    exc = _urllib_error(api.url + "/status/429?retry_after=2")
    assert status_of(exc) == 429
    assert is_throttle(exc)
    assert server_wait(exc) == 2.0
    exc.close()


def test_urllib_error_http_date(api: DemoServer) -> None:
    """A Retry-After given as an HTTP date is the seconds until then."""
    exc = _urllib_error(api.url + "/status/503?retry_after=now%2B30")
    wait = server_wait(exc)
    assert wait is not None and 27.0 <= wait <= 31.0
    exc.close()


def test_requests_error(api: DemoServer) -> None:
    """requests: HTTPError.response.status_code/.headers (a 4xx Response is falsy: not an issue)."""
    import requests

    response = requests.get(api.url + "/status/429?retry_after=1.5", timeout=10)
    with pytest.raises(requests.HTTPError) as info:
        response.raise_for_status()
    assert status_of(info.value) == 429
    assert server_wait(info.value) == 1.5


def test_httpx_error(api: DemoServer) -> None:
    """httpx: HTTPStatusError.response."""
    import httpx

    response = httpx.get(api.url + "/status/503?retry_after=4")
    with pytest.raises(httpx.HTTPStatusError) as info:
        response.raise_for_status()
    assert is_throttle(info.value)
    assert server_wait(info.value) == 4.0


def test_aiohttp_error(api: DemoServer) -> None:
    """aiohttp: ClientResponseError.status/.headers."""
    import aiohttp

    async def get() -> BaseException:
        async with aiohttp.ClientSession() as session:
            async with session.get(api.url + "/status/429?retry_after=0.5") as response:
                try:
                    response.raise_for_status()
                except aiohttp.ClientResponseError as exc:
                    return exc
        raise AssertionError("no error")

    exc = asyncio.run(get())
    assert status_of(exc) == 429
    assert server_wait(exc) == 0.5


def test_not_a_throttle(api: DemoServer) -> None:
    """A 500 with Retry-After, a 429 without it, and non-HTTP errors give no server wait."""
    exc = _urllib_error(api.url + "/status/500?retry_after=3")
    assert server_wait(exc) is None and not is_throttle(exc)
    exc.close()
    exc = _urllib_error(api.url + "/status/429")
    assert server_wait(exc) is None and is_throttle(exc)
    exc.close()
    assert server_wait(ValueError("x")) is None
    assert status_of(ConnectionError("x")) is None


def test_wrapped_and_remote_errors(api: DemoServer) -> None:
    """An error raised from an HTTP error, and a RemoteError stand-in, keep the hint."""
    inner = _urllib_error(api.url + "/status/429?retry_after=2")

    class ApiError(Exception):
        pass

    with pytest.raises(ApiError) as info:
        raise ApiError("throttled") from inner
    assert server_wait(info.value) == 2.0
    remote = RemoteError.from_exception(inner)
    assert server_wait(remote) == 2.0
    inner.close()


def test_any_exception_with_a_response() -> None:
    """Duck typing: any exception whose .response has status_code and headers."""

    class Response:
        status_code = 503
        headers: dict[str, Any] = {"retry-after": "1"}

    class Custom(Exception):
        response = Response()

    assert server_wait(Custom()) == 1.0


def test_import_does_not_import_http_libraries() -> None:
    """Reading hints never imports requests, httpx or aiohttp."""
    code = (
        "import sys, opero._hints as h; h.server_wait(ValueError()); "
        "print([m for m in ('requests', 'httpx', 'aiohttp') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
