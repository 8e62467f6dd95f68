"""Seams, round 3 (issue 22 points 2-5, issue 21's error presentation): real clients, real
servers. ``AllFailedError`` keeps its cause across processes and caches, a demoted fallback
candidate is tried last (never skipped), a wrong redis password says so, a ``None`` default
of an ``arg_fallback`` parameter is noted once, and a failure leads with type and status."""

from __future__ import annotations

import logging
import pickle
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import opero
from opero import AllFailedError, opmap
from opero import opero as opero_decorator
from opero._errors import RemoteError, portable, stand_in
from opero.demo import DemoServer
from tests._fixtures_redis import run_python


@pytest.fixture
def api() -> Iterator[DemoServer]:
    with DemoServer(fail_rate=0.0) as server:
        yield server


# -- workers (module level: they travel to process workers by reference) ---------------------


def _requests_status(item: int, base: str) -> int:
    import requests

    response = requests.get(f"{base}/status/{item}", timeout=10)
    response.raise_for_status()
    return response.status_code


def _httpx_status(item: int, base: str) -> int:
    import httpx

    response = httpx.get(f"{base}/status/{item}", timeout=10)
    response.raise_for_status()
    return response.status_code


async def _httpx_status_async(item: int, base: str) -> int:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}/status/{item}")
    response.raise_for_status()
    return response.status_code


async def _aiohttp_status_async(item: int, base: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/status/{item}") as response:
            response.raise_for_status()
            return response.status


ERROR_TYPES = {
    "requests": "HTTPError",
    "httpx": "HTTPStatusError",
    "aiohttp": "ClientResponseError",
}


def _check_failed(out: list[Any], client: str) -> None:
    """Items 200 succeed; items 500 fail with the cause, status and message kept."""
    assert out[0] == 200 and out[2] == 200
    err = out[1]
    assert isinstance(err, AllFailedError)
    assert len(err.errors) == 2  # retries=1: two attempts
    assert err.__cause__ is not None, "the cause was lost on the way home"
    assert err.__cause__ is err.errors[-1]
    assert type(err.__cause__).__name__ == ERROR_TYPES[client]
    assert err.status == 500
    assert str(err).startswith(f"{ERROR_TYPES[client]} 500 ×2: ")
    assert "2 attempts failed" in str(err)


# -- 1. AllFailedError.__cause__ survives pickling --------------------------------------------


def _failed_call(base: str, code: int, retries: int = 0) -> AllFailedError:
    @opero_decorator(retries=retries, min_delay=0.001)
    def fetch(item: int) -> int:
        return _requests_status(item, base)

    with pytest.raises(AllFailedError) as info:
        fetch(code)
    return info.value


def test_pickle_keeps_cause_errors_message_name_and_notes(api: DemoServer) -> None:
    """A plain pickle round trip keeps __cause__ (a real requests HTTPError), errors, message,
    function name and notes."""
    import requests

    err = _failed_call(api.url, 404)
    err.add_note("opero: stopped: a note that must travel")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is AllFailedError
    assert isinstance(again.__cause__, requests.HTTPError)
    assert again.__cause__ is again.errors[-1]
    assert again.__cause__.response.status_code == 404
    assert again.func_name == err.func_name and again.func_name.endswith("fetch")
    assert str(again) == str(err) and again.args == err.args
    assert len(again.errors) == len(err.errors) == 1
    assert again.__notes__ == err.__notes__
    assert again.__notes__[-1] == "opero: stopped: a note that must travel"
    assert again.status == 404
    assert again.__suppress_context__ is True  # `raise ... from`: as the original


def test_portable_and_stand_in_keep_cause_and_notes(api: DemoServer) -> None:
    """The forms sent home from workers keep the cause (a stand-in when needed) and notes."""
    err = _failed_call(api.url, 500, retries=1)
    err.add_note("opero: a note")
    for form in (portable(err), stand_in(err)):
        again = pickle.loads(pickle.dumps(form))
        assert isinstance(again, AllFailedError)
        assert again.__cause__ is again.errors[-1]
        assert type(again.__cause__).__name__ == "HTTPError"
        assert again.status == 500
        assert again.__notes__ == ["opero: a note"]
        assert str(again) == str(err)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "client"),
    [("process", "requests"), ("process", "httpx"), ("async_process", "httpx"), ("async_process", "aiohttp")],
)
def test_cause_survives_process_maps(api: DemoServer, mode: str, client: str) -> None:
    """process and async_process maps return AllFailedError with its cause (real client errors)."""
    func: Any = {
        ("process", "requests"): _requests_status,
        ("process", "httpx"): _httpx_status,
        ("async_process", "httpx"): _httpx_status_async,
        ("async_process", "aiohttp"): _aiohttp_status_async,
    }[(mode, client)]
    fn = opmap(mode=mode, workers=2, retries=1, min_delay=0.001, progress=False)(func)  # type: ignore[call-overload]
    out = fn([200, 500, 200], api.url)
    if mode == "async_process":
        out = opero.run(out)
    _check_failed(out, client)


@pytest.mark.dask
@pytest.mark.timeout(180)
def test_cause_survives_a_dask_map(api: DemoServer) -> None:
    """A dask map (LocalCluster of processes) returns AllFailedError with its cause."""
    from distributed import Client, LocalCluster

    fn = opmap(mode="dask", retries=1, min_delay=0.001, progress=False)(_requests_status)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with Client(cluster):
            out = fn([200, 500, 200], api.url)
    _check_failed(out, "requests")


DISK_SCRIPT = """
import os, sys
from opero import opero, opmap

base = os.environ["BASE"]

@opmap(retries=1, min_delay=0.001, progress=False)
def fetch(code):
    import requests
    response = requests.get(f"{base}/status/{code}", timeout=10)
    response.raise_for_status()
    return code

@opero(cache=True, cache_backend="disk")
def collect(codes):
    with open(os.environ["CALLS"], "a") as f:
        f.write("run\\n")
    return fetch(codes)

out = collect((200, 500))
err = out[1]
cause = err.__cause__
print(type(err).__name__, type(cause).__name__, cause is err.errors[-1], getattr(err, "status", None))
print(str(err).split(":")[0])
"""


@pytest.mark.timeout(120)
def test_cause_survives_the_disk_cache(api: DemoServer, tmp_path: Path) -> None:
    """A cached list holding an AllFailedError comes back from the disk cache, in a new
    process, with its cause, errors and status."""
    calls = tmp_path / "calls"
    env = {"BASE": api.url, "CALLS": str(calls), "OPERO_CACHE_DIR": str(tmp_path / "cache")}
    first = run_python(DISK_SCRIPT, env=env)
    second = run_python(DISK_SCRIPT, env=env)
    assert calls.read_text().split() == ["run"]  # the second run was a disk-cache hit
    assert first == second == "AllFailedError HTTPError True 500\nHTTPError 500 ×2\n"


def test_cause_survives_the_cache_entry_format_of_a_frame(api: DemoServer) -> None:
    """A DataFrame holding errors, through the disk/redis entry format: the cause stays."""
    import pandas as pd

    from opero.stores._signed import decode, encode

    err = _failed_call(api.url, 503)
    frame = pd.DataFrame({"item": [1, 2], "error": [None, err]})
    value, _ = decode(encode(frame, None), 0.0, "entry")
    back = value["error"].iloc[1]
    assert isinstance(back, AllFailedError)
    assert back.__cause__ is back.errors[-1]
    assert back.__cause__.response.status_code == 503
    assert back.status == 503


# -- 2. sticky order: a demoted candidate is tried last, not skipped -------------------------


def test_demoted_candidate_is_tried_last_when_the_healthy_ones_fail(api: DemoServer) -> None:
    """Key A fails once with 401; the next call's key B fails too: A is still tried, last."""
    base = api.url
    codes = {"A": 401, "B": 200}
    seen: list[list[str]] = []

    def unauthorized(exc: BaseException) -> bool:
        return isinstance(exc, urllib.error.HTTPError) and exc.code == 401

    @opero_decorator(retries=0, arg_fallback="key", fallback_on=unauthorized)
    def call(key: list[str]) -> str:
        seen.append(list(key))
        try:
            with urllib.request.urlopen(f"{base}/status/{codes[key[0]]}", timeout=10):
                return key[0]
        except urllib.error.HTTPError as exc:
            exc.close()
            raise

    assert call(["A", "B"]) == "B"  # A demoted
    assert opero.parts(call).sticky.demoted(["A", "B"]) == [True, False]
    codes.update(A=200, B=401)
    assert call(["A", "B"]) == "A"  # B failed: A, demoted, is the last resort
    assert seen == [["A", "B"], ["B"], ["B", "A"], ["A"]]
    assert call.stats.successes == 2 and call.stats.failures == 0


# -- 3. a wrong redis password is an authentication failure ----------------------------------


@pytest.fixture
def locked_redis() -> Iterator[tuple[str, str]]:
    """A redis-server started with --requirepass; yields (its port's URL, the password)."""
    from tests._redis import RedisServer, find_redis_server
    from tests.conftest import require

    binary = find_redis_server(install=True)
    require(binary is not None, "redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    password = f"right-{uuid.uuid4().hex[:8]}"
    server = RedisServer(binary, ("--requirepass", password)).start()
    try:
        yield f"127.0.0.1:{server.port}", password
    finally:
        server.close()


def test_wrong_redis_password_is_reported_as_authentication_failure(
    locked_redis: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Cache, limiter and shared records on a redis with a wrong password: every warning
    says "authentication failed", none says "server down", none holds the password."""
    where, right = locked_redis
    wrong = f"wrong-{uuid.uuid4().hex[:8]}"
    url = f"redis://:{wrong}@{where}/0"
    with caplog.at_level(logging.WARNING, logger="opero"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        @opero_decorator(
            cache=True, cache_backend="redis", cache_backend_config={"url": url},
            rate_limit=50, rate_limit_scope=f"s-{uuid.uuid4().hex}", rate_limit_backend="redis",
        )  # fmt: skip
        def cached(x: int) -> int:
            return x

        @opero_decorator(
            rate_limit="auto", rate_limit_backend="redis", circuit_breaker=True,
            cache_backend_config={"url": f"redis://{where}/0", "password": wrong},
        )  # fmt: skip
        def adaptive(x: int) -> int:
            return x

        assert [cached(1), cached(1), adaptive(2), adaptive(3)] == [1, 1, 2, 3]
    texts = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    redis_texts = [t for t in texts if "redis" in t]
    assert len(redis_texts) >= 4  # the link, the cache, the limiter, the shared records
    assert all("authentication failed" in t for t in redis_texts), redis_texts
    assert not [t for t in texts if "server down" in t]
    assert not [t for t in texts if wrong in t or right in t]
    assert any(f"redis://:***@{where}/0" in t for t in redis_texts)


def test_right_redis_password_works(locked_redis: tuple[str, str]) -> None:
    """The same server with the right password caches: no warning at all."""
    where, right = locked_redis
    calls: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @opero_decorator(
            cache=True, cache_backend="redis", cache_backend_config={"url": f"redis://:{right}@{where}/0"}
        )
        def cached(x: int) -> int:
            calls.append(x)
            return x

        assert [cached(1), cached(1)] == [1, 1]
    assert calls == [1]


# -- 5. failures lead with the last error's type and HTTP status ----------------------------


def test_str_and_repr_lead_with_type_and_status(api: DemoServer) -> None:
    """404 once: "HTTPError 404: ..."; 500 four times: "HTTPError 500 ×4: ..."; e.status."""
    single = _failed_call(api.url, 404)
    assert str(single).startswith("HTTPError 404: ")
    assert repr(single) == str(single)
    assert "fetch: the only attempt failed" in str(single)
    assert single.status == 404
    repeated = _failed_call(api.url, 500, retries=3)
    assert str(repeated).startswith("HTTPError 500 ×4: ")
    assert "fetch: all 4 attempts failed; last error: 500 Server Error" in str(repeated)
    assert repr(repeated)[:50].startswith("HTTPError 500 ×4")
    assert repeated.status == 500


def test_failed_rows_filter_by_status(api: DemoServer) -> None:
    """A map's failed items tell their status in one attribute (also stand-ins from workers)."""
    fn = opmap(retries=0, progress=False)(_requests_status)
    out = fn([200, 404, 500, 404], api.url)
    failed = [r for r in out if isinstance(r, AllFailedError)]
    assert sorted(r.status for r in failed) == [404, 404, 500]
    remote = AllFailedError(
        "h", [RemoteError("requests.exceptions.HTTPError", "404 Client Error", status=404)]
    )
    assert str(remote).startswith("HTTPError 404: h: the only attempt failed; last error: 404 Client Error")
    assert remote.status == 404


def test_unpicklable_cause_travels_as_a_stand_in_with_its_status(api: DemoServer) -> None:
    """An error holding a socket (urllib's HTTPError, unclosed) crosses as a typed stand-in."""
    err = _failed_call(api.url, 404)
    url_err = urllib.error.HTTPError(f"{api.url}/x", 429, "Too Many", {}, None)  # type: ignore[arg-type]
    wrapped = AllFailedError("k", [err.errors[0], url_err])
    back = pickle.loads(pickle.dumps(portable(wrapped)))
    assert back.__cause__ is back.errors[-1]
    assert isinstance(back.__cause__, urllib.error.HTTPError)
    assert back.status == 429
    assert str(back).startswith("HTTPError 429: k: all 2 attempts failed")
