"""The shared circuit breaker against the loopback demo server (issue 13.3).

Failures open it, calls then fail fast with CircuitOpenError without a request, one
half-open probe closes (or reopens) it; map items wait for the probe; the state is shared
by threads, processes (host files) and machines (redis). Counts are exact where opero
decides them (requests made while open), times have a 3x margin.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import opero
from opero import CircuitOpenError, opmap
from opero import opero as opero_deco
from opero._telemetry import subscribe
from opero.demo import DemoServer
from tests._fixtures_redis import run_python
from tests._helpers import (
    get,
    remove_scope_files,
    wiped_redis_server,  # noqa: F401  (overrides redis_server here)
)
from tests._redis import RedisServer


def fail_twice(fetch: Any) -> None:
    """Two calls that each fail once (no retries), which opens a ``failures=2`` breaker."""
    for i in range(2):
        with pytest.raises(opero.AllFailedError):
            fetch(i)


@pytest.fixture
def server() -> Iterator[DemoServer]:
    """A demo server without flaky items (outages are switched on per test)."""
    with DemoServer(fail_rate=0.0) as srv:
        yield srv


@pytest.fixture
def states() -> Iterator[list[str]]:
    """The ``state`` of every ``breaker`` event, in order."""
    seen: list[str] = []
    stop = subscribe(lambda e: seen.append(str(e.state)), kinds=["breaker"])
    yield seen
    stop()


def _scope() -> str:
    return f"breaker-{uuid.uuid4().hex[:8]}"


def test_failures_open_it_and_calls_fail_fast_without_a_request(
    server: DemoServer, states: list[str]
) -> None:
    """3 failed attempts within the window open it; the next call raises CircuitOpenError at
    once and the server sees no request."""
    server.outage(30.0)

    @opero_deco(retries=0, circuit_breaker={"failures": 3, "window": 10.0, "open": 30.0})
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    for i in range(3):
        with pytest.raises(opero.AllFailedError):
            fetch(i)
    assert states == ["open"]
    began = time.monotonic()
    with pytest.raises(CircuitOpenError) as caught:
        fetch(99)
    assert time.monotonic() - began < 0.5
    assert isinstance(caught.value, opero.OperoError)
    assert 25 < caught.value.retry_in <= 30
    assert server.stats["outage"] == 3  # the fourth call never reached the server
    assert opero.parts(fetch).breaker.state() == "open"


def test_circuit_open_is_never_retried(server: DemoServer) -> None:
    """retries=5 and retry_on=Exception: an open breaker still fails the call at once."""
    server.outage(30.0)

    @opero_deco(retries=5, min_delay=0.01, retry_on=Exception, circuit_breaker={"failures": 2, "open": 30.0})
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    began = time.monotonic()
    with pytest.raises(CircuitOpenError):
        fetch(1)  # attempt 1 and 2 fail, the breaker opens, attempt 3 fails fast
    assert time.monotonic() - began < 2.0
    assert server.stats["outage"] == 2


def test_half_open_probe_closes_it(server: DemoServer, states: list[str]) -> None:
    """After `open` seconds one probe goes through; its success closes the breaker."""
    server.outage(0.3)

    @opero_deco(retries=0, circuit_breaker={"failures": 2, "open": 0.5})
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    fail_twice(fetch)
    with pytest.raises(CircuitOpenError):
        fetch(2)
    time.sleep(0.6)
    assert fetch(3)["id"] == "3"
    assert states == ["open", "half_open", "closed"]
    assert opero.parts(fetch).breaker.state() == "closed"
    assert server.stats["outage"] == 2


def test_failed_probe_reopens_it(server: DemoServer, states: list[str]) -> None:
    """A probe that fails opens the breaker for another period (one request per period)."""
    server.outage(30.0)

    @opero_deco(retries=0, circuit_breaker={"failures": 2, "open": 0.3})
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    fail_twice(fetch)
    time.sleep(0.35)
    with pytest.raises(opero.AllFailedError):
        fetch(2)  # the probe
    with pytest.raises(CircuitOpenError):
        fetch(3)
    assert states == ["open", "half_open", "open"]
    assert server.stats["outage"] == 3


def test_errors_that_are_not_failures_do_not_count(server: DemoServer) -> None:
    """A 404 (not retried) and a 429 (busy, not down) leave the breaker closed."""

    # a throttled call paces itself until its deadline (2 attempts here)
    @opero_deco(
        retries=0, retry_on=urllib.error.HTTPError, circuit_breaker={"failures": 2}, deadline=0.2, jitter=0
    )
    def status(code: int) -> Any:
        return get(f"{server.url}/status/{code}")

    for _ in range(4):
        with pytest.raises(opero.AllFailedError):
            status(429)

    @opero_deco(retries=0, retry_on=lambda e: getattr(e, "code", 0) >= 500, circuit_breaker={"failures": 2})
    def strict(code: int) -> Any:
        return get(f"{server.url}/status/{code}")

    for _ in range(4):
        with pytest.raises(urllib.error.HTTPError):
            strict(404)
    assert opero.parts(status).breaker.state() == "closed"
    assert opero.parts(strict).breaker.state() == "closed"


def test_map_items_wait_for_the_probe_and_all_succeed(server: DemoServer, states: list[str]) -> None:
    """16 workers, an API down for 1.5 s: few requests during the outage, every item succeeds.

    Items do not burn their retries while the breaker is open: they wait for the probe.
    """

    @opmap(
        mode="thread",
        workers=16,
        retries=6,
        min_delay=0.05,
        rate_limit=200,
        circuit_breaker={"failures": 5, "open": 0.3},
        progress=False,
    )
    def fetch(item: int) -> int:
        return int(get(f"{server.url}/item/{item}")["value"])

    server.outage(1.5, start=0.2)
    results = fetch(list(range(400)))
    assert not [r for r in results if isinstance(r, BaseException)]
    probes = states.count("half_open")
    assert states[0] == "open" and states[-1] == "closed"
    assert 1 <= probes <= 1.5 / 0.3 + 2
    # threshold + one request per probe (+ at most one in-flight attempt per worker, granted
    # just before it opened; benchmarks/adaptive.py measures 5 + probes on an idle machine)
    assert server.stats["outage"] <= 5 + probes + 16, (server.stats["outage"], probes)


def test_fail_fast_map_items_fail_with_circuit_open(server: DemoServer) -> None:
    """fail_fast=True: items fail at once with CircuitOpenError instead of waiting."""
    server.outage(30.0)

    @opmap(
        mode="thread", workers=4, retries=0, circuit_breaker={"failures": 3, "open": 30.0, "fail_fast": True}
    )
    def fetch(item: int) -> int:
        return int(get(f"{server.url}/item/{item}")["value"])

    began = time.monotonic()
    results = fetch(list(range(50)))
    assert time.monotonic() - began < 5.0
    fast = [r for r in results if isinstance(r, CircuitOpenError)]
    assert len(fast) >= 50 - 3 - 4  # at most threshold + in-flight reached the server
    assert server.stats["outage"] <= 3 + 4


def test_breaker_shared_by_two_processes(server: DemoServer) -> None:
    """Opened here, a scope's breaker is open in another process too: it fails fast there."""
    scope = _scope()
    server.outage(30.0)
    settings = {"failures": 3, "open": 30.0}

    @opero_deco(retries=0, rate_limit=100, rate_limit_scope=scope, circuit_breaker=settings)
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    for i in range(3):
        with pytest.raises(opero.AllFailedError):
            fetch(i)
    code = f"""
import json, urllib.request, opero
@opero.opero(retries=0, rate_limit=100, rate_limit_scope={scope!r}, circuit_breaker={settings!r})
def other():
    return urllib.request.urlopen({server.url!r} + "/item/1").read()
try:
    other()
except opero.CircuitOpenError as exc:
    print("open", round(exc.retry_in))
"""
    assert run_python(code).split()[0] == "open"
    assert server.stats["outage"] == 3
    remove_scope_files(scope)


def test_process_map_workers_share_the_parent_breaker(server: DemoServer, states: list[str]) -> None:
    """mode="process": the workers' failures open one breaker; while it is open they wait for
    the probe; every item succeeds once the API is back."""

    @opmap(
        mode="process",
        workers=2,
        retries=6,
        min_delay=0.05,
        rate_limit=100,
        circuit_breaker={"failures": 4, "open": 0.4},
        progress=False,
    )
    def fetch(item: int, url: str) -> int:
        return int(get(f"{url}/item/{item}")["value"])

    assert fetch([0, 1], server.url) == [fetch.__wrapped__(i, server.url) for i in (0, 1)]  # pool up
    server.outage(1.2)
    results = fetch(list(range(60)), server.url)
    assert not [r for r in results if isinstance(r, BaseException)]
    # events travel home in batches, so their order across workers is not kept
    assert "open" in states and "closed" in states
    assert server.stats["outage"] <= 4 + 1.2 / 0.4 + 2 + 4
    assert opero.parts(fetch).breaker.state() == "closed"


@pytest.mark.redis
def test_breaker_shared_through_redis(redis_server: RedisServer, server: DemoServer) -> None:
    """rate_limit_backend="redis": another process (a machine, for redis) sees it open."""
    scope = _scope()
    server.outage(30.0)
    config = {"url": redis_server.url}
    settings = {"failures": 3, "open": 30.0}

    @opero_deco(
        retries=0,
        rate_limit=100,
        rate_limit_scope=scope,
        rate_limit_backend="redis",
        cache_backend_config=config,
        circuit_breaker=settings,
    )
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    assert type(opero.parts(fetch).breaker.record).__name__ == "RedisRecord"
    for i in range(3):
        with pytest.raises(opero.AllFailedError):
            fetch(i)
    code = f"""
import urllib.request, opero
@opero.opero(retries=0, rate_limit=100, rate_limit_scope={scope!r}, rate_limit_backend="redis",
             cache_backend_config={config!r}, circuit_breaker={settings!r})
def other():
    return urllib.request.urlopen({server.url!r} + "/item/1").read()
print(opero.parts(other).breaker.state())
try:
    other()
except opero.CircuitOpenError:
    print("failed-fast")
"""
    assert run_python(code).split() == ["open", "failed-fast"]
    assert server.stats["outage"] == 3


def test_testing_mode_skips_the_open_period_in_maps(server: DemoServer, states: list[str]) -> None:
    """Under opero.testing() nothing waits: map items probe at once instead of sleeping 30 s
    (and, without backoff, keep probing until the API is back); single calls still fail fast."""

    # retries: enough attempts, made back to back, to outlast a 0.4 s outage
    @opmap(
        mode="thread", workers=4, retries=20000, min_delay=1.0, circuit_breaker={"failures": 3, "open": 30.0}
    )
    def fetch(item: int) -> int:
        return int(get(f"{server.url}/item/{item}")["value"])

    with opero.testing():
        assert fetch([0]) == [get(f"{server.url}/item/0")["value"]]  # threads up before the outage
        server.outage(0.4)
        began = time.monotonic()
        results = fetch(list(range(20)))
        elapsed = time.monotonic() - began
    assert elapsed < 10.0  # one 30 s open period (or one 1 s backoff per retry) would exceed it
    assert "open" in states and "closed" in states
    assert all(isinstance(r, int) for r in results)


def test_single_call_fails_fast_under_testing_mode(server: DemoServer) -> None:
    """opero.testing() does not hide an open breaker from a single call."""
    server.outage(30.0)

    @opero_deco(retries=0, circuit_breaker={"failures": 1, "open": 30.0})
    def fetch() -> Any:
        return get(f"{server.url}/item/1")

    with opero.testing():
        with pytest.raises(opero.AllFailedError):
            fetch()
        with pytest.raises(CircuitOpenError):
            fetch()
    assert server.stats["outage"] == 1


def test_retry_on_returning_seconds_counts_as_a_failure(server: DemoServer) -> None:
    """retry_on answering a wait (even 0.0 s: "retry now") is retryable: the breaker counts it."""
    server.outage(30.0)

    @opero_deco(retries=0, retry_on=lambda exc: 0.0, circuit_breaker={"failures": 2, "open": 30.0})
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    fail_twice(fetch)
    assert opero.parts(fetch).breaker.state() == "open"


def test_redis_down_keeps_the_breaker_on_this_machine(server: DemoServer) -> None:
    """An unreachable redis never fails a call: the breaker state falls back to this host."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server.outage(30.0)

    @opero_deco(
        retries=0,
        rate_limit=100,
        rate_limit_backend="redis",
        cache_backend_config={"url": f"redis://127.0.0.1:{port}/0", "socket_connect_timeout": 0.2},
        circuit_breaker={"failures": 2, "open": 30.0},
    )
    def fetch(item: int) -> Any:
        return get(f"{server.url}/item/{item}")

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fail_twice(fetch)
        with pytest.raises(CircuitOpenError):
            fetch(3)
    assert any(issubclass(w.category, RuntimeWarning) for w in caught)  # "limiting locally"
    assert server.stats["outage"] == 2
