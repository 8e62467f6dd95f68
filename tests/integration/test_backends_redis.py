"""Redis cache and cluster-wide limiter (issue 3), against a real throwaway redis-server."""

from __future__ import annotations

import logging
import pickle
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import opero
from opero import ConfigurationError
from opero.stores import redis as _redisconn
from tests._fixtures_redis import run_python
from tests._helpers import run_threads
from tests._spacing import assert_exact_spacing

pytestmark = pytest.mark.redis


@pytest.fixture
def cfg(redis_server: Any) -> Iterator[dict[str, str]]:
    """cache_backend_config for the session's server; the server's data is wiped afterwards."""
    import redis

    yield {"url": redis_server.url}
    redis.Redis.from_url(redis_server.url).flushdb()


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def test_ttl_expiry_by_redis(cfg: dict[str, str]) -> None:
    """Entries expire through redis itself (PX), then the call runs again."""
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="redis", cache_backend_config=cfg, cache_ttl=0.3)
    def f(x: int) -> int:
        calls.append(x)
        return x + 1

    assert [f(1), f(1)] == [2, 2] and calls == [1]
    (key,) = _client(cfg["url"]).keys("opero:*")
    assert 0 < _client(cfg["url"]).pttl(key) <= 300
    time.sleep(0.4)
    assert f(1) == 2 and calls == [1, 1]


def test_shared_between_processes(cfg: dict[str, str], tmp_path: Path) -> None:
    """A result stored by one process is a hit in another; keys are opero:<ns>:<func>:<key>."""
    calls = tmp_path / "calls"
    code = f"""
from opero import opero
@opero(cache=True, cache_backend="redis", cache_namespace="shared")
def work(x):
    open({str(calls)!r}, "a").write("x")
    return [x] * 3
print(work(4))
"""
    env = {"OPERO_REDIS_URL": cfg["url"]}
    assert run_python(code, env).strip() == run_python(code, env).strip() == "[4, 4, 4]"
    assert calls.read_text() == "x"
    (key,) = _client(cfg["url"]).keys("*")
    assert key.startswith(b"opero:shared:__main__.work:")


def test_clear_namespace_uses_scan_and_spares_others(cfg: dict[str, str]) -> None:
    """clear_cache("a") deletes namespace a only; b, prefix look-alikes and foreign keys stay."""
    client = _client(cfg["url"])
    fns = {}
    for ns in ("a", "b", "a:b"):

        @opero.opero(cache=True, cache_backend="redis", cache_backend_config=cfg, cache_namespace=ns)
        def f(x: int) -> int:
            return x

        fns[ns] = f
        for i in range(30):
            f(i)
    client.set("someone-else", b"1")
    assert len(client.keys("opero:*")) == 90
    opero.clear_cache("a")
    left = client.keys("*")
    assert len(left) == 61
    assert not [k for k in left if k.startswith(b"opero:a:")]
    fns["b"].cache_clear()
    assert len(client.keys("*")) == 31 and client.get("someone-else") == b"1"


def test_tampered_entry_with_secret(cfg: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With OPERO_CACHE_SECRET set, a forged redis entry is ignored (never unpickled) and recomputed."""
    monkeypatch.setenv("OPERO_CACHE_SECRET", "k")
    client = _client(cfg["url"])
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="redis", cache_backend_config=cfg)
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(1)
    (key,) = client.keys("opero:*")
    raw = client.get(key)
    client.set(key, raw[:45] + pickle.dumps(666))
    assert f(1) == 1 and calls == [1, 1]
    assert f(1) == 1 and calls == [1, 1]  # the recomputed entry is signed and good


def test_server_killed_mid_run_and_restarted(
    redis_server: Any, cfg: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis going down: calls run uncached with one warning; caching resumes once it is back."""
    monkeypatch.setattr(_redisconn, "BACKOFF", 0.2)
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="redis", cache_backend_config=cfg)
    def f(x: int) -> int:
        calls.append(x)
        return x

    assert [f(1), f(1)] == [1, 1] and calls == [1]
    redis_server.stop()
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "opero"):
            warnings.simplefilter("always")
            began = time.monotonic()
            for _ in range(5):
                assert f(1) == 1
                time.sleep(0.1)
            elapsed = time.monotonic() - began
    finally:
        redis_server.start()
    assert calls == [1] * 6
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert "runs uncached" in str(caught[0].message)
    assert elapsed < 0.5 + 1.5  # five calls plus their sleeps; no timeouts paid
    time.sleep(0.25)  # past the back-off
    assert [f(2), f(2), f(2)] == [2, 2, 2]
    assert calls == [1] * 6 + [2]


def test_closed_port_never_hangs() -> None:
    """Pointing at a closed port: each call returns at once-ish and the function still runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends

    @opero.opero(
        cache=True, cache_backend="redis", cache_backend_config={"url": f"redis://127.0.0.1:{port}/0"}
    )
    def f(x: int) -> int:
        return x * 2

    durations = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(4):
            began = time.monotonic()
            assert f(i) == 2 * i
            durations.append(time.monotonic() - began)
    assert max(durations) < 1.0
    assert [str(w.message).endswith("runs uncached") for w in caught] == [True]


def test_silent_server_times_out_within_a_second() -> None:
    """A server that accepts but never answers costs at most the read timeout, once per back-off."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:

        @opero.opero(
            cache=True, cache_backend="redis", cache_backend_config={"url": f"redis://127.0.0.1:{port}/0"}
        )
        def f(x: int) -> int:
            return x

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            began = time.monotonic()
            assert f(1) == 1
            first = time.monotonic() - began
            began = time.monotonic()
            assert [f(2), f(3)] == [2, 3]
            rest = time.monotonic() - began
        assert len(caught) == 1 and caught[0].category is RuntimeWarning
    finally:
        listener.close()
    assert 0.3 < first < 1.5  # the 0.5 s read timeout, no retries
    assert rest < 0.1  # within the back-off window redis is skipped


def _limit_script(url: str, scope: str, rate: float, out: Path, n: int) -> str:
    return f"""
import threading, time
from opero import opero, parts
@opero(rate_limit={rate}, rate_limit_scope={scope!r}, rate_limit_backend="redis",
       cache_backend_config={{"url": {url!r}}})
def hit():
    pass
store = parts(hit).limiter.store
store.grant_log = []  # grant times on the server's clock, as the Lua script decided them
threads = [threading.Thread(target=lambda: [hit() for _ in range({n})]) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
open({str(out)!r}, "w").write("\\n".join(map(repr, store.grant_log)))
"""


def test_redis_limiter_shared_by_two_processes(redis_server: Any, tmp_path: Path) -> None:
    """Two processes (two threads each) on one redis scope: 20 starts spaced by 1/r overall."""
    import subprocess
    import sys

    rate = 25.0
    outs = [tmp_path / "a", tmp_path / "b"]
    root = str(Path(__file__).resolve().parents[2])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _limit_script(redis_server.url, "redis-shared", rate, out, 5)],
            env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
            cwd=root,
        )
        for out in outs
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
    grants = [float(x) for out in outs for x in out.read_text().split()]
    # Grants are spaced exactly on the server's clock (what a client observes adds the jitter
    # of each reply's round trip, so only the server's times are checked exactly).
    assert_exact_spacing(grants, rate, count=20)


def test_redis_scope_with_other_rate_is_rejected(redis_server: Any) -> None:
    """A redis scope in use with another rate raises ConfigurationError at decoration time."""
    cfg = {"url": redis_server.url}

    @opero.opero(
        rate_limit=5, rate_limit_scope="rscope", rate_limit_backend="redis", cache_backend_config=cfg
    )
    def a() -> None:
        pass

    a()
    # A second process (simulated: a fresh limiter registry) asking for another rate.
    from opero import stores as _limit

    saved = dict(_limit._limiters)
    _limit._limiters.clear()
    try:
        with pytest.raises(ConfigurationError, match="rate_limit=5"):

            @opero.opero(
                rate_limit=6, rate_limit_scope="rscope", rate_limit_backend="redis", cache_backend_config=cfg
            )
            def b() -> None:
                pass
    finally:
        _limit._limiters.update(saved)


def test_redis_limiter_falls_back_when_down() -> None:
    """A redis limiter whose server is unreachable still limits (on this host), with one warning."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stamps: list[float] = []

    @opero.opero(
        rate_limit=20, rate_limit_backend="redis", cache_backend_config={"url": f"redis://127.0.0.1:{port}/0"}
    )
    def f() -> None:
        stamps.append(time.monotonic())

    store = opero.parts(f).limiter.store
    store.grant_log = grants = []  # handed on to the host-wide fallback store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_threads(2, lambda: [f() for _ in range(3)])
    assert ["machine only" in str(w.message) for w in caught] == [True]
    assert len(stamps) == 6
    assert_exact_spacing(grants, 20, count=6)


def test_closures_from_one_factory_do_not_share_entries(cfg: dict[str, str]) -> None:
    """make(2) must not return make(1)'s cached result (redis)."""
    from tests.shared.backends_disk import check_closures_do_not_share

    check_closures_do_not_share("redis", cfg)


def test_plain_globals_are_part_of_the_key(cfg: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing a plain global the function reads is a miss, not a stale hit (redis)."""
    from tests.shared.backends_disk import check_plain_globals_in_key

    check_plain_globals_in_key("redis", monkeypatch, cfg)
