"""Client errors end the rounds; throttling (429, 503 + Retry-After) is pacing, not failure.

Against real loopback HTTP servers: the demo API for fixed statuses, and a small server
here that answers 429 a set number of times before it serves.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import opero
from opero import AllFailedError
from opero import opero as opero_deco
from opero.demo import DemoServer


@pytest.fixture
def api() -> Iterator[DemoServer]:
    """The demo API, without flaky items."""
    with DemoServer(fail_rate=0.0) as server:
        yield server


class Throttling:
    """A loopback server answering ``status`` (with ``Retry-After``) to its first ``times`` requests."""

    def __init__(self, times: int, status: int = 429, retry_after: str | None = "0.01") -> None:
        self.times = times
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer.lock:
                    outer.requests += 1
                    throttled = outer.requests <= outer.times
                if throttled:
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def throttling() -> Iterator[type[Throttling]]:
    """Make throttling servers; each is closed after the test."""
    made: list[Throttling] = []

    class Made(Throttling):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Made
    for server in made:
        server.close()


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def _get_requests(url: str) -> int:
    import requests

    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.status_code


# -- client errors end the rounds --------------------------------------------------------------


@pytest.mark.parametrize("get", [_get, _get_requests], ids=["urllib", "requests"])
def test_permanent_404_costs_one_request(api: DemoServer, get: Any) -> None:
    """A 404 without fallback: one request, then AllFailedError (no backoff, no round)."""

    @opero_deco(retries=3, min_delay=5.0)
    def fetch() -> int:
        return int(get(api.url + "/status/404"))

    with pytest.raises(AllFailedError) as info:
        fetch()
    assert api.stats["status"] == {404: 1}
    assert len(info.value.errors) == 1
    assert fetch.stats.retries == 0
    assert any("client error" in note for note in info.value.__notes__)


def test_permanent_404_async_costs_one_request(api: DemoServer) -> None:
    """The async driver: a 404 (aiohttp) costs one request too."""
    import aiohttp

    @opero_deco(retries=3, min_delay=5.0)
    async def fetch() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(api.url + "/status/404") as response:
                response.raise_for_status()
                return response.status

    with pytest.raises(AllFailedError) as info:
        asyncio.run(fetch())
    assert api.stats["status"] == {404: 1}
    assert len(info.value.errors) == 1


@pytest.mark.parametrize("status", [401, 403, 400, 422])
def test_other_client_errors_end_the_rounds(api: DemoServer, status: int) -> None:
    """400, 401, 403, 422: one request each."""

    @opero_deco(retries=2, min_delay=0.001)
    def fetch() -> int:
        return _get(api.url + f"/status/{status}")

    with pytest.raises(AllFailedError):
        fetch()
    assert api.stats["status"] == {status: 1}


@pytest.mark.parametrize("status", [408, 425, 500])
def test_retryable_statuses_still_retry(api: DemoServer, status: int) -> None:
    """408, 425 and 5xx are retried as before: 1 + retries requests."""

    @opero_deco(retries=2, min_delay=0.001, jitter=0)
    def fetch() -> int:
        return _get(api.url + f"/status/{status}")

    with pytest.raises(AllFailedError) as info:
        fetch()
    assert api.stats["status"] == {status: 3}
    assert len(info.value.errors) == 3


def test_remaining_candidates_of_the_round_are_tried(api: DemoServer) -> None:
    """A 404 on the first candidate moves on: the second one serves the call."""
    seen: list[str] = []

    @opero_deco(retries=3, min_delay=0.001, arg_fallback="paths", fallback_sticky=False)
    def fetch(paths: list[str]) -> int:
        seen.append(paths[0])
        return _get(api.url + paths[0])

    assert fetch(["/status/404", "/health"]) == 200
    assert seen == ["/status/404", "/health"]


def test_every_candidate_a_client_error_fails_after_one_round(api: DemoServer) -> None:
    """Two candidates, both 404: two requests, one round, AllFailedError with both errors."""

    @opero_deco(retries=3, min_delay=0.001, arg_fallback="paths", fallback_sticky=False)
    def fetch(paths: list[str]) -> int:
        return _get(api.url + paths[0])

    with pytest.raises(AllFailedError) as info:
        fetch(["/status/404", "/status/410"])
    assert api.stats["status"] == {404: 1, 410: 1}
    assert [e.code for e in info.value.errors] == [404, 410]  # type: ignore[attr-defined]


def test_explicit_retry_on_is_obeyed(api: DemoServer) -> None:
    """retry_on=Exception given explicitly retries a 404 like any error."""

    @opero_deco(retries=2, min_delay=0.001, retry_on=Exception)
    def fetch() -> int:
        return _get(api.url + "/status/404")

    with pytest.raises(AllFailedError):
        fetch()
    assert api.stats["status"] == {404: 3}


def test_explicit_retry_on_predicate_is_obeyed(api: DemoServer) -> None:
    """A retry_on predicate accepting HTTP errors retries a 404 too."""

    @opero_deco(retries=1, min_delay=0.001, retry_on=lambda exc: isinstance(exc, urllib.error.HTTPError))
    def fetch() -> int:
        return _get(api.url + "/status/404")

    with pytest.raises(AllFailedError):
        fetch()
    assert api.stats["status"] == {404: 2}


def test_reraise_raises_the_404_itself(api: DemoServer) -> None:
    """reraise=True: the 404 error itself, after one request."""

    @opero_deco(retries=3, reraise=True)
    def fetch() -> int:
        return _get(api.url + "/status/404")

    with pytest.raises(urllib.error.HTTPError) as info:
        fetch()
    assert info.value.code == 404
    assert api.stats["status"] == {404: 1}


# -- throttling is pacing, not failure ---------------------------------------------------------


def test_eight_429s_then_success_with_one_retry(throttling: type[Throttling]) -> None:
    """429 eight times then 200: retries=1 succeeds (the throttled attempts use up no retry)."""
    server = throttling(8)

    @opero_deco(retries=1, min_delay=0.001, max_delay=0.005)
    def fetch() -> int:
        return _get(server.url)

    assert fetch() == 200
    assert server.requests == 9
    assert fetch.stats.attempts == 9


def test_eight_429s_then_success_under_testing(throttling: type[Throttling]) -> None:
    """The same under opero.testing() with a long Retry-After: no wait, still succeeds."""
    server = throttling(8, retry_after="30")

    @opero_deco(retries=1)
    def fetch() -> int:
        return _get_requests(server.url)

    with opero.testing():
        assert fetch() == 200
    assert server.requests == 9


def test_eight_429s_then_success_async(throttling: type[Throttling]) -> None:
    """The async driver paces throttled attempts the same way."""
    server = throttling(8)

    @opero_deco(retries=0, min_delay=0.001, max_delay=0.005)
    async def fetch() -> int:
        return await asyncio.to_thread(_get, server.url)

    assert asyncio.run(fetch()) == 200
    assert server.requests == 9


def test_503_with_retry_after_is_pacing(throttling: type[Throttling]) -> None:
    """503 + Retry-After five times then 200: retries=0 succeeds."""
    server = throttling(5, status=503)

    @opero_deco(retries=0, min_delay=0.001, max_delay=0.005)
    def fetch() -> int:
        return _get(server.url)

    assert fetch() == 200
    assert server.requests == 6


def test_503_without_retry_after_uses_a_retry(throttling: type[Throttling]) -> None:
    """A 503 without Retry-After is an outage: retries=1 gives up after two requests."""
    server = throttling(5, status=503, retry_after=None)

    @opero_deco(retries=1, min_delay=0.001, max_delay=0.005)
    def fetch() -> int:
        return _get(server.url)

    with pytest.raises(AllFailedError):
        fetch()
    assert server.requests == 2


def test_throttle_allowance_runs_out(throttling: type[Throttling]) -> None:
    """Always 429, 120 s waits (skipped under testing): fails after 10 throttled attempts."""
    server = throttling(10_000)

    @opero_deco(retries=0, min_delay=120.0, max_delay=120.0, jitter=0)
    def fetch() -> int:
        return _get(server.url)

    with opero.testing(), pytest.raises(AllFailedError) as info:
        fetch()
    assert server.requests == 10
    assert len(info.value.errors) == 10
    assert any("throttle allowance" in note for note in info.value.__notes__)


def test_deadline_bounds_throttled_attempts(throttling: type[Throttling]) -> None:
    """Always 429 with Retry-After 0.05 and deadline=0.3: the call stops within the deadline."""
    import time

    server = throttling(10_000, retry_after="0.05")

    @opero_deco(retries=0, min_delay=0.001, max_delay=0.001, deadline=0.3)
    def fetch() -> int:
        return _get(server.url)

    t0 = time.perf_counter()
    with pytest.raises(AllFailedError) as info:
        fetch()
    took = time.perf_counter() - t0
    assert took < 1.0
    assert 2 <= server.requests <= 7
    assert any("deadline" in note for note in info.value.__notes__)


def test_throttle_allowance_lasts_ten_minutes(throttling: type[Throttling]) -> None:
    """Always 429, 30 s waits (skipped under testing): 20 waits reach 10 minutes, 21 attempts."""
    server = throttling(10_000)

    @opero_deco(retries=0, min_delay=30.0, max_delay=30.0, jitter=0)
    def fetch() -> int:
        return _get(server.url)

    with opero.testing(), pytest.raises(AllFailedError):
        fetch()
    assert server.requests == 21
