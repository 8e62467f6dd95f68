"""One walk over the headers of an error: Retry-After and rate-limit headers agree on a chain."""

from __future__ import annotations

import itertools
import pickle

from opero._errors import RemoteError
from opero._headers import Limits, headers_of, read_headers
from opero._hints import header_pairs, headers_on_chain, server_wait

HEADERS = {
    "Retry-After": "7",
    "X-RateLimit-Limit": "100",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "30",
}


class _Response:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class _HttpError(Exception):
    """A requests/httpx-like error: the response carries the status and the headers."""

    def __init__(self, response: _Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class _ApiError(Exception):
    """An SDK's own error: a status of its own, no headers."""

    status_code = 429


def _wrapped(inner_status: int = 429) -> _ApiError:
    try:
        try:
            raise _HttpError(_Response(inner_status, dict(HEADERS)))
        except _HttpError as http:
            raise _ApiError("slow down") from http
    except _ApiError as err:
        return err


def test_429_raised_from_a_response_error_reads_the_same_through_both_consumers() -> None:
    """server_wait (retry policy) and read_headers (pace) both find Retry-After 7 on the cause."""
    err = _wrapped()
    reading = read_headers(err, now=1_700_000_000.0)
    assert server_wait(err) == 7.0
    assert reading.retry_after == 7.0
    assert reading.requests == Limits(limit=100.0, remaining=0.0, reset=30.0, window=None)
    assert headers_of(err) == {k.lower(): v for k, v in HEADERS.items()}


def test_the_walk_yields_response_headers_before_own_and_the_error_before_its_cause() -> None:
    """Order: the error's response.headers, its own headers, then the same on __cause__."""

    class Own(Exception):
        headers = {"A": "own"}
        response = _Response(500, {"A": "response"})

    inner = _HttpError(_Response(503, {"A": "cause"}))
    outer = Own()
    outer.__cause__ = inner
    got = [(type(e).__name__, h) for e, h in headers_on_chain(outer)]
    assert got == [("Own", {"A": "response"}), ("Own", {"A": "own"}), ("_HttpError", {"A": "cause"})]


def test_the_walk_stops_at_three_errors_and_at_a_loop() -> None:
    """A chain of five errors gives the first three; a cause loop is walked once."""
    errors = [_HttpError(_Response(500, {"n": str(i)})) for i in range(5)]
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    assert [h for _, h in headers_on_chain(errors[0])] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]
    a, b = _HttpError(_Response(500, {"n": "a"})), _HttpError(_Response(500, {"n": "b"}))
    a.__cause__, b.__cause__ = b, a
    assert [h for _, h in headers_on_chain(a)] == [{"n": "a"}, {"n": "b"}]


def test_retry_after_counts_only_on_an_error_that_is_itself_throttled() -> None:
    """A 429 raised from a 500 carrying Retry-After: the pace reads it, the retry policy does not."""
    err = _wrapped(inner_status=500)
    assert read_headers(err, now=1_700_000_000.0).retry_after == 7.0
    assert server_wait(err) is None


def test_a_response_property_that_raises_is_no_headers() -> None:
    """An error whose .response raises on access (a closed response) yields nothing, never fails."""

    class Closed(Exception):
        @property
        def response(self) -> _Response:
            raise RuntimeError("closed")

    assert list(headers_on_chain(Closed())) == []
    assert server_wait(Closed()) is None
    assert headers_of(Closed()) is None


def test_header_pairs_reads_anything_with_items_and_keeps_the_case() -> None:
    """A dict keeps its names' case; an object without items() is None."""
    assert header_pairs({"Retry-After": 3}) == [("Retry-After", "3")]
    assert header_pairs(object()) is None


def test_stand_in_of_a_wrapped_429_keeps_the_cause_headers_across_pickling() -> None:
    """RemoteError of the 429 raised from a response error: status and headers survive a trip."""
    remote = pickle.loads(pickle.dumps(RemoteError.from_exception(_wrapped())))
    assert remote.status == 429
    assert remote.headers == HEADERS
    assert server_wait(remote) == 7.0
    assert read_headers(remote).retry_after == 7.0
