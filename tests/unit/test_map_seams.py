"""Seams of process, async_process and dask maps: what crosses the process boundary.

Exceptions that cannot be pickled or rebuilt, items that must travel by value, hard
timeouts, exact counters and a warm pool that does not leak. Real worker processes only.
"""

from __future__ import annotations

import email.message
import io
import pickle
import threading
import time
import urllib.error

import pytest

from opero import AllFailedError, opmap
from opero._errors import RemoteError, portable
from tests.shared.map_seams import ApiError

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


def test_portable_keeps_all_failed_error_and_makes_its_attempts_portable() -> None:
    err = AllFailedError("f", [ValueError("a"), LockedApiError(500, "b")])
    out = portable(err)
    assert isinstance(out, AllFailedError)
    assert isinstance(out.errors[0], ValueError)
    assert isinstance(out.errors[1], RemoteError) and out.errors[1].message == "500: b"
    pickle.loads(pickle.dumps(out))


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
