"""Seams of process, async_process and dask maps: what crosses the process boundary.

Exceptions that cannot be pickled or rebuilt, items that must travel by value, hard
timeouts, exact counters and a warm pool that does not leak. Real worker processes only.
"""

from __future__ import annotations

import email.message
import io
import os
import pickle
import threading
import time
import urllib.error

import pytest

from opero import AllFailedError, WorkerLostError, opmap
from opero._errors import RemoteError, portable
from tests.shared.map_seams import ApiError, _api_failure, _check_failures

# -- portable() ---------------------------------------------------------------------------


def test_portable_returns_a_picklable_exception_itself() -> None:
    err = ValueError("plain")
    assert portable(err) is err


class LockedApiError(ApiError):
    """Holds a lock: it cannot pickle even where a library (distributed, via tblib) taught
    pickle to rebuild exceptions like ApiError."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.lock = threading.Lock()


def test_portable_keeps_type_message_traceback_of_an_unrebuildable_exception() -> None:
    try:
        raise LockedApiError(429, "slow down")
    except ApiError as exc:
        caught = exc
    out = portable(caught)
    assert isinstance(out, RemoteError)
    name = f"{__name__}.LockedApiError"
    assert (out.type_name, out.message, out.status) == (name, "429: slow down", 429)
    assert "raise LockedApiError(429" in out.traceback_text
    assert str(out) == f"{name}: 429: slow down"
    back = pickle.loads(pickle.dumps(out))
    assert (back.type_name, back.message, back.traceback_text) == (
        out.type_name,
        out.message,
        out.traceback_text,
    )


def test_portable_keeps_status_and_headers_of_urllib_http_error() -> None:
    headers = email.message.Message()
    headers["Retry-After"] = "7"
    headers["Content-Type"] = "text/plain"
    err = urllib.error.HTTPError("http://127.0.0.1/x", 429, "Too Many Requests", headers, io.BytesIO(b"x"))
    err.lock = threading.Lock()  # type: ignore[attr-defined]  # unpicklable wherever this runs
    out = portable(err)
    assert isinstance(out, RemoteError)
    assert out.type_name == "urllib.error.HTTPError"
    assert out.status == 429
    assert out.headers == {"Retry-After": "7", "Content-Type": "text/plain"}


def test_portable_reads_response_status_and_headers_of_requests_and_httpx_errors() -> None:
    import httpx
    import requests

    resp = requests.Response()
    resp.status_code = 503
    resp.headers["Retry-After"] = "2"
    resp.raw = io.BytesIO(b"")
    r_err = requests.HTTPError("503 Server Error", response=resp)
    r_err.lock = threading.Lock()  # type: ignore[attr-defined]  # now it cannot pickle
    out = portable(r_err)
    assert isinstance(out, RemoteError)
    assert (out.status, out.headers) == (503, {"Retry-After": "2"})

    request = httpx.Request("GET", "http://127.0.0.1/x")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
    h_err = httpx.HTTPStatusError("429", request=request, response=response)
    h_out = portable(h_err)
    h_out = h_out if isinstance(h_out, RemoteError) else RemoteError.from_exception(h_err)
    assert h_out.status == 429
    assert h_out.headers is not None and h_out.headers["retry-after"] == "3"


def test_portable_keeps_all_failed_error_and_makes_its_attempts_portable() -> None:
    err = AllFailedError("f", [ValueError("a"), LockedApiError(500, "b")])
    out = portable(err)
    assert isinstance(out, AllFailedError)
    assert isinstance(out.errors[0], ValueError)
    assert isinstance(out.errors[1], RemoteError) and out.errors[1].message == "500: b"
    pickle.loads(pickle.dumps(out))


# -- maps ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_process_map_unpicklable_exceptions_fail_only_their_items() -> None:
    """An exception that cannot be rebuilt (or pickled) in a worker costs only its item."""
    fn = opmap(mode="process", workers=2, retries=0, progress=False)(_api_failure)
    _check_failures(fn(range(8)))
    assert fn.stats.successes == 6 and fn.stats.failures == 2


@pytest.mark.timeout(60)
def test_process_map_non_retryable_unpicklable_exception_is_the_stand_in() -> None:
    fn = opmap(mode="process", workers=2, retry_on=KeyError, progress=False)(_api_failure)
    out = fn(range(8))
    assert isinstance(out[3], RemoteError) and out[3].message == "503: busy backend"
    assert isinstance(out[5], RemoteError) and out[5].type_name.endswith("HoldsSocket")
    assert out[7] == 14


async def _api_failure_async(x: int) -> int:
    return _api_failure(x)


@pytest.mark.timeout(60)
def test_async_process_map_unpicklable_exceptions_fail_only_their_items() -> None:
    import opero

    fn = opmap(mode="async_process", workers=2, retries=0, progress=False)(_api_failure_async)
    out = opero.run(fn(range(8)))
    for bad in (3, 5):
        assert isinstance(out[bad], AllFailedError)
        assert isinstance(out[bad].errors[0], RemoteError)
        assert "_api_failure" in out[bad].errors[0].traceback_text
    assert out[3].errors[0].message == "503: busy backend"
    assert [out[i] for i in (0, 1, 2, 4, 6, 7)] == [0, 2, 4, 8, 12, 14]


def _rebuild_outside(message: str, parent: int) -> Exception:
    import os

    if os.getpid() == parent:
        raise RuntimeError("this exception cannot be rebuilt in the parent")
    return OnlyInWorker(message, parent)


class OnlyInWorker(Exception):
    """Pickles and unpickles in the worker, but its unpickling fails in the parent."""

    def __init__(self, message: str, parent: int) -> None:
        super().__init__(message)
        self.parent = parent

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_outside, (str(self), self.parent))


def _fails_in_parent(x: int) -> int:
    import os

    if x == 2:
        raise OnlyInWorker("made in the worker", os.getppid())
    return x


@pytest.mark.timeout(60)
def test_process_map_payload_that_cannot_unpickle_in_the_parent_fails_alone() -> None:
    """The parent side: only the item whose payload fails to load gets the stand-in."""
    fn = opmap(mode="process", workers=2, retry_on=KeyError, progress=False)(_fails_in_parent)
    out = fn(range(6))
    assert [out[i] for i in (0, 1, 3, 4, 5)] == [0, 1, 3, 4, 5]
    err = out[2]
    assert isinstance(err, RemoteError)
    assert err.type_name == f"{__name__}.OnlyInWorker"
    assert err.message == "made in the worker"
    assert "_fails_in_parent" in err.traceback_text


def test_local_class_items_and_lambdas_in_a_process_map() -> None:
    class Box:
        def __init__(self, v: int) -> None:
            self.v = v

    @opmap(mode="process", workers=2, progress=False)
    def open_box(item: object) -> int:
        return item(3) if callable(item) else item.v  # type: ignore[attr-defined,operator]

    t0 = time.monotonic()
    out = open_box([Box(1), lambda v: v * 5, Box(4), threading.Lock()])
    assert out[:3] == [1, 15, 4]
    assert isinstance(out[3], TypeError)
    assert not isinstance(out[3], WorkerLostError)
    assert time.monotonic() - t0 < 5.0
    assert open_box.stats.failures == 1 and open_box.stats.successes == 3


def _rebuild_only_here(parent: int, value: int) -> Fragile:
    if os.getpid() != parent:
        raise ImportError("this item's module exists only in the parent")
    return Fragile(parent, value)


class Fragile:
    """Pickles in the parent, but cannot be unpickled in a worker."""

    def __init__(self, parent: int, value: int) -> None:
        self.parent = parent
        self.value = value

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_only_here, (self.parent, self.value))


def _value(item: object) -> object:
    return item if isinstance(item, int) else item.value  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_item_that_cannot_be_unpickled_in_the_worker_fails_alone_at_once() -> None:
    fn = opmap(mode="process", workers=2, chunksize=4, progress=False)(_value)
    t0 = time.monotonic()
    out = fn([0, 1, Fragile(os.getpid(), 2), 3, 4, 5, 6, 7])
    assert time.monotonic() - t0 < 5.0
    assert [out[i] for i in (0, 1, 3, 4, 5, 6, 7)] == [0, 1, 3, 4, 5, 6, 7]
    assert isinstance(out[2], ImportError)
    assert "only in the parent" in str(out[2])
    assert any("cannot be unpickled in the worker" in n for n in out[2].__notes__)
    assert fn.stats.failures == 1 and fn.stats.successes == 7


@pytest.mark.timeout(60)
def test_thread_map_never_waits_for_an_abandoned_attempt() -> None:
    """In thread mode the timed-out attempt keeps running, but the map returns at once."""

    @opmap(mode="thread", workers=4, timeout=0.3, retries=0, progress=False)
    def nap(x: int) -> int:
        if x == 1:
            time.sleep(6)
        return x

    t0 = time.monotonic()
    out = nap(range(4))
    assert time.monotonic() - t0 < 2.0
    assert isinstance(out[1], AllFailedError) and isinstance(out[1].errors[0], TimeoutError)
    assert [out[i] for i in (0, 2, 3)] == [0, 2, 3]


def test_stand_in_keeps_the_original_type_for_except_clauses() -> None:
    """A urllib HTTPError held in a result is still an HTTPError (and a RemoteError), pickled too."""
    import urllib.error

    err = urllib.error.HTTPError("http://x", 404, "Not Found", {"Retry-After": "3"}, io.BytesIO(b""))  # type: ignore[arg-type]
    held = portable(err)
    assert isinstance(held, urllib.error.HTTPError) and isinstance(held, RemoteError)
    assert (held.code, held.status, held.headers) == (404, 404, {"Retry-After": "3"})
    back = pickle.loads(pickle.dumps(held))
    assert isinstance(back, urllib.error.HTTPError) and back.code == 404
    assert "HTTP Error 404: Not Found" in str(back)
    with pytest.raises(urllib.error.HTTPError) as caught:
        raise back
    assert caught.value.status == 404
