"""Server hints: 429/503 + Retry-After read from real HTTP client errors, honoured by retries."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from opero import opero
from opero._errors import RemoteError
from opero._hints import is_throttle, server_wait, status_of
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


def test_import_does_not_import_http_libraries() -> None:
    """Reading hints never imports requests, httpx or aiohttp."""
    code = (
        "import sys, opero._hints as h; h.server_wait(ValueError()); "
        "print([m for m in ('requests', 'httpx', 'aiohttp') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# -- the policy honours them ------------------------------------------------------------------


def _throttled_then_ok(url_first: str, url_then: str, use_requests: bool = False):
    """A function whose first attempt gets ``url_first`` (a 429/503), the next ``url_then``."""
    starts: list[float] = []

    def fetch() -> int:
        starts.append(time.perf_counter())
        url = url_first if len(starts) == 1 else url_then
        if use_requests:
            import requests

            response = requests.get(url, timeout=10)
            response.raise_for_status()
            return response.status_code
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)

    return fetch, starts


def test_retry_after_seconds_is_honoured_urllib(api: DemoServer) -> None:
    """429 + Retry-After: 0.6 with min_delay=1 ms: the next attempt starts >= 0.6 s later."""
    fetch, starts = _throttled_then_ok(api.url + "/status/429?retry_after=0.6", api.url + "/health")
    wrapped = opero(retries=2, min_delay=0.001, max_delay=0.001)(fetch)
    assert wrapped() == 200
    assert len(starts) == 2
    assert 0.6 <= starts[1] - starts[0] < 2.5
    assert api.stats["status"] == {429: 1, 200: 1}


def test_retry_after_http_date_is_honoured_requests(api: DemoServer) -> None:
    """503 + Retry-After as an HTTP date 2 s ahead (1 s resolution): the wait is >= 1 s."""
    fetch, starts = _throttled_then_ok(
        api.url + "/status/503?retry_after=now%2B2", api.url + "/health", use_requests=True
    )
    wrapped = opero(retries=2, min_delay=0.001, max_delay=0.001)(fetch)
    assert wrapped() == 200
    assert 1.0 <= starts[1] - starts[0] < 4.0


def test_retry_after_async_is_honoured(api: DemoServer) -> None:
    """The async driver sleeps the server's wait too (asyncio.sleep)."""
    starts: list[float] = []

    @opero(retries=2, min_delay=0.001, max_delay=0.001)
    async def fetch() -> int:
        starts.append(time.perf_counter())
        url = api.url + ("/status/429?retry_after=0.5" if len(starts) == 1 else "/health")
        return await asyncio.to_thread(lambda: int(urllib.request.urlopen(url, timeout=10).status))

    assert asyncio.run(fetch()) == 200
    assert 0.5 <= starts[1] - starts[0] < 2.5


def test_backoff_longer_than_the_hint_wins(api: DemoServer) -> None:
    """The sleep is max(backoff, hint): a 0.4 s backoff beats Retry-After: 0.01."""
    fetch, starts = _throttled_then_ok(api.url + "/status/429?retry_after=0.01", api.url + "/health")
    wrapped = opero(retries=2, min_delay=0.4, max_delay=0.4, jitter=0)(fetch)
    assert wrapped() == 200
    assert 0.4 <= starts[1] - starts[0] < 2.0


def test_retry_after_skipped_under_testing(api: DemoServer) -> None:
    """opero.testing() skips server waits as it skips every wait."""
    import opero as opero_pkg

    fetch, starts = _throttled_then_ok(api.url + "/status/429?retry_after=5", api.url + "/health")
    wrapped = opero(retries=2)(fetch)
    with opero_pkg.testing():
        assert wrapped() == 200
    assert starts[1] - starts[0] < 1.5


def test_limited_endpoint_rides_retry_after(api: DemoServer) -> None:
    """/limited at 5/s answers 429 + Retry-After above it: sequential calls with retries all
    succeed, and no retry comes back before the server's wait (few 429s)."""
    api.rate_limit = 5.0
    api.reset()

    @opero(retries=5, min_delay=0.001, max_delay=0.001)
    def get(i: int) -> int:
        with urllib.request.urlopen(f"{api.url}/limited/{i}", timeout=10) as response:
            return int(response.status)

    assert [get(i) for i in range(15)] == [200] * 15
    # each 429 is followed by a wait the server chose, so at most about one 429 per call
    assert api.stats["rate_limited"] <= 15


def test_predicate_returning_seconds(api: DemoServer) -> None:
    """stamina's convention: retry_on returning a number means retry after that many seconds."""
    starts: list[float] = []

    def on(exc: BaseException) -> bool | float:
        return 0.3 if isinstance(exc, ConnectionError) else False

    @opero(retries=2, min_delay=0.001, max_delay=0.001, retry_on=on)
    def f() -> int:
        starts.append(time.perf_counter())
        if len(starts) == 1:
            raise ConnectionError("later")
        if len(starts) == 2:
            raise ValueError("not retried")
        return 1

    with pytest.raises(ValueError, match="not retried"):
        f()
    assert len(starts) == 2
    assert 0.3 <= starts[1] - starts[0] < 1.5
