"""Smarter fallbacks: fallback_on picks which errors move to the next candidate; sticky
candidates are skipped by later calls (threads and process workers) until rechecked."""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from opero import opero, opmap, parts
from opero._hints import status_of
from opero.demo import DemoServer

KEYS = ["key-revoked", "key-good"]


@pytest.fixture
def api() -> Iterator[DemoServer]:
    with DemoServer(fail_rate=0.0) as server:
        yield server


def unauthorized(exc: BaseException) -> bool:
    """The errors that mean "this key is bad": go to the next key at once."""
    return status_of(exc) in (401, 403)


def secure(base: str, item: int, key: str) -> str:
    request = urllib.request.Request(f"{base}/secure/{item}", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # keep the socket out of the error (it travels between processes)
        raise
    return key


def test_401_next_key_503_same_key(api: DemoServer) -> None:
    """Against the demo API: a revoked key (401) moves on at once; a 503 retries that key."""
    base = api.url
    seen: list[str] = []

    @opero(retries=2, min_delay=0.001, arg_fallback="keys", fallback_on=unauthorized, fallback_sticky=False)
    def get(item: int, keys: list[str] = KEYS) -> str:
        seen.append(keys[0])
        if len(seen) == 2:  # the good key hits a 503 once
            urllib.request.urlopen(base + "/status/503", timeout=10)
        return secure(base, item, keys[0])

    assert get(1) == "key-good"
    assert seen == ["key-revoked", "key-good", "key-good"]
    assert api.stats["status"] == {401: 1, 503: 1, 200: 1}


def test_sticky_candidate_is_skipped_by_later_calls(api: DemoServer) -> None:
    """Once the revoked key failed with a fallback_on error, later calls start from the good key."""
    base = api.url

    @opero(retries=2, min_delay=0.001, arg_fallback="keys", fallback_on=unauthorized)
    def get(item: int, keys: list[str] = KEYS) -> str:
        return secure(base, item, keys[0])

    assert [get(i) for i in range(20)] == ["key-good"] * 20
    assert api.stats["unauthorized"] == 1
    assert get.stats.fallbacks == 1


def test_sticky_with_default_fallback_on(api: DemoServer) -> None:
    """fallback_on=None: a candidate is demoted when a later one of the same call succeeded;
    a transient error of the last candidate demotes nothing. The demoted key is the last
    resort: tried (once more) only in the two calls where the good key failed first."""
    base = api.url
    flaky = iter([False, True, False, False, True] + [False] * 50)

    @opero(retries=2, min_delay=0.001, arg_fallback="keys")
    def get(item: int, keys: list[str] = KEYS) -> str:
        key = secure(base, item, keys[0])
        if next(flaky):
            raise ConnectionError("transient")
        return key

    assert [get(i) for i in range(10)] == ["key-good"] * 10
    assert api.stats["unauthorized"] == 3


def test_recheck_tries_a_demoted_candidate_again(api: DemoServer) -> None:
    """After fallback_recheck seconds the demoted key is healthy again (and fails again)."""
    base = api.url

    @opero(retries=1, min_delay=0.001, arg_fallback="keys", fallback_on=unauthorized, fallback_recheck=0.5)
    def get(item: int, keys: list[str] = KEYS) -> str:
        return secure(base, item, keys[0])

    for i in range(5):
        get(i)
    assert api.stats["unauthorized"] == 1
    time.sleep(0.6)
    for i in range(5):
        get(i)
    assert api.stats["unauthorized"] == 2


def test_sticky_off(api: DemoServer) -> None:
    """fallback_sticky=False: every call starts from the first candidate (today's behaviour)."""
    base = api.url

    @opero(retries=1, min_delay=0.001, arg_fallback="keys", fallback_on=unauthorized, fallback_sticky=False)
    def get(item: int, keys: list[str] = KEYS) -> str:
        return secure(base, item, keys[0])

    for i in range(6):
        get(i)
    assert api.stats["unauthorized"] == 6


def test_sticky_in_threads(api: DemoServer) -> None:
    """A thread map of 200 items: at most one revoked request per worker."""
    base = api.url

    @opmap(mode="thread", workers=8, retries=2, min_delay=0.001, arg_fallback="keys",
           fallback_on=unauthorized, progress=False)  # fmt: skip
    def get(item: int, keys: list[str] = KEYS) -> str:
        return secure(base, item, keys[0])

    assert get(range(200)) == ["key-good"] * 200
    assert 1 <= api.stats["unauthorized"] <= 8


def _get_in_worker(item: int, base: str, keys: list[str] = KEYS) -> tuple[str, int]:
    return secure(base, item, keys[0]), os.getpid()


def test_sticky_across_process_workers(api: DemoServer) -> None:
    """Process workers share the demotions with the parent, both ways: a map's workers send at
    most one revoked request each; a second map and the parent itself send none."""
    fn = opmap(
        mode="process",
        workers=2,
        retries=2,
        min_delay=0.001,
        arg_fallback="keys",
        fallback_on=unauthorized,
        progress=False,
    )(_get_in_worker)
    out = fn(range(60), api.url)
    assert [k for k, _ in out] == ["key-good"] * 60
    pids = {p for _, p in out}
    assert os.getpid() not in pids
    first = api.stats["unauthorized"]
    assert 1 <= first <= 2
    again = fn(range(60, 120), api.url)
    assert [k for k, _ in again] == ["key-good"] * 60
    assert api.stats["unauthorized"] == first
    # the demotion came home: the parent's table has it
    assert parts(fn).sticky.demoted(KEYS) == [True, False]


def test_parent_demotion_reaches_process_workers(api: DemoServer) -> None:
    """A demotion made in the parent before the map: the workers never try the revoked key."""
    fn = opmap(
        mode="process", workers=2, retries=2, min_delay=0.001, arg_fallback="keys",
        fallback_on=unauthorized, progress=False,
    )  # fmt: skip
    mapped = fn(_get_in_worker)
    parts(mapped).sticky.demote("key-revoked")
    out = mapped(range(40), api.url)
    assert [k for k, _ in out] == ["key-good"] * 40
    assert api.stats["unauthorized"] == 0


def test_candidates_never_logged(api: DemoServer, caplog: pytest.LogCaptureFixture) -> None:
    """No key value appears in any log line, even at DEBUG, nor in the shared table's bytes."""
    base = api.url
    secret = "key-revoked"

    @opero(retries=1, min_delay=0.001, arg_fallback="keys", fallback_on=unauthorized)
    def get(item: int, keys: list[str] = KEYS) -> str:
        return secure(base, item, keys[0])

    with caplog.at_level(logging.DEBUG, logger="opero"):
        get(1)
        get(2)
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert secret not in text.replace("Bearer", "")
    sticky = parts(get).sticky
    import pickle

    pickle.loads(pickle.dumps(sticky))  # moves the table to its shared file
    path = sticky.path
    assert path is not None and os.path.exists(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    assert secret.encode() not in raw and b"key-good" not in raw
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    assert sticky.demoted(KEYS) == [True, False]


def test_sticky_async(api: DemoServer) -> None:
    """async def functions and async maps share the same demotions."""
    import asyncio

    base = api.url

    @opmap(mode="async", workers=4, retries=1, min_delay=0.001, arg_fallback="keys",
           fallback_on=unauthorized, progress=False)  # fmt: skip
    async def get(item: int, keys: list[str] = KEYS) -> str:
        return await asyncio.to_thread(secure, base, item, keys[0])

    assert asyncio.run(get(range(40))) == ["key-good"] * 40
    assert 1 <= api.stats["unauthorized"] <= 4
    before = api.stats["unauthorized"]
    assert asyncio.run(get(range(40, 60))) == ["key-good"] * 20
    assert api.stats["unauthorized"] == before


def test_sticky_keeps_cache_keys(api: DemoServer) -> None:
    """The cache key is the call's own arguments: a call made before the demotion is a hit after."""
    base = api.url

    @opero(retries=1, min_delay=0.001, arg_fallback="keys", fallback_on=unauthorized, cache=True)
    def get(item: int, keys: list[str] = KEYS) -> str:
        return secure(base, item, keys[0])

    assert get(1) == "key-good"  # demotes the revoked key
    assert get(2) == "key-good"
    requests = api.stats["requests"]
    assert get(1) == "key-good" and get(2) == "key-good"
    assert api.stats["requests"] == requests
    assert get.stats.cache_hits == 2
