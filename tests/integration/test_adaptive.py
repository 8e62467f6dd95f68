"""The adaptive rate (AIMD) against the loopback demo server: down on 429, up on success,
never above the ceiling, one budget across threads, processes and redis (issue 13.2).

Numbers (convergence time, rejection share) live in benchmarks/adaptive.py; these tests check
the mechanism, with real HTTP requests and the real limiter.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import opero
from opero import opero as opero_deco
from opero import opmap
from opero._telemetry import Event, subscribe
from opero.demo import DemoServer
from tests._fixtures_redis import run_python
from tests._helpers import (
    get,
    remove_scope_files,
    wiped_redis_server,  # noqa: F401  (overrides redis_server here)
)
from tests._redis import RedisServer


@pytest.fixture
def rate_events() -> Iterator[list[Event]]:
    """Every ``rate`` event while the test runs."""
    events: list[Event] = []
    stop = subscribe(events.append, kinds=["rate"])
    yield events
    stop()


@pytest.fixture
def limited() -> Iterator[DemoServer]:
    """A server that accepts 20 requests/s on every endpoint (bucket of 2), 429 above."""
    with DemoServer(fail_rate=0.0, rate_limit=20, limit_all=True, burst=2) as server:
        yield server


@pytest.fixture
def free() -> Iterator[DemoServer]:
    """A server without a limit."""
    with DemoServer(fail_rate=0.0) as server:
        yield server


def _limiter(fn: Any) -> Any:
    return opero.parts(fn).limiter


def _cut_below_start(fetch: Any) -> float:
    """25 calls against the 20/s server: 429s cut the shared rate below ``rate_start=80``."""
    for i in range(25):
        fetch(i)
    cut: float = _limiter(fetch).current_rate()
    assert cut < 80
    return cut


def test_rate_is_cut_on_429_and_climbs_on_success(
    limited: DemoServer, free: DemoServer, rate_events: list[Event]
) -> None:
    """Starting at 4x the server's 20/s, 429s cut the shared rate; successes raise it again."""
    base = {"url": limited.url}

    @opmap(
        mode="thread", workers=4, rate_limit="auto", rate_start=80, retries=30, min_delay=0.01, progress=False
    )
    def fetch(item: int) -> int:
        return int(get(f"{base['url']}/item/{item}")["value"])

    limiter = _limiter(fetch)
    assert limiter.current_rate() == 80
    results = fetch(list(range(40)))
    assert not [r for r in results if isinstance(r, BaseException)]
    assert limited.stats["rate_limited"] > 0
    cut = limiter.current_rate()
    assert cut < 60  # cut at least twice from 80
    cuts = [e.rate for e in rate_events if e.rate is not None and e.rate < 80]
    assert cuts and min(cuts) < 60
    # Against a server that accepts everything the rate only climbs (additively).
    base["url"] = free.url
    fetch(list(range(40, 100)))
    assert limiter.current_rate() > cut
    assert rate_events[-1].rate == pytest.approx(limiter.current_rate(), rel=0.1)


def test_never_above_the_rate_limit(free: DemoServer, limited: DemoServer) -> None:
    """adaptive=True next to rate_limit=30: starts at 30, cut on 429, climbs back to 30, no more."""
    base = {"url": free.url}

    @opero_deco(rate_limit=30, adaptive=True, retries=20, min_delay=0.01)
    def fetch(item: int) -> int:
        return int(get(f"{base['url']}/item/{item}")["value"])

    limiter = _limiter(fetch)
    for i in range(20):
        fetch(i)
    assert limiter.current_rate() == 30  # successes at the ceiling do not raise it
    base["url"] = limited.url
    limited.reset()
    for i in range(30):
        fetch(i)
    lowered = limiter.current_rate()
    assert lowered < 30
    base["url"] = free.url
    for i in range(200):
        fetch(i)
        assert limiter.current_rate() <= 30
    assert limiter.current_rate() > lowered


def test_auto_starts_from_rate_start_and_probes_upwards(free: DemoServer) -> None:
    """rate_limit="auto" starts at rate_start and, until the first 429, gains 1/s per success."""

    @opero_deco(rate_limit="auto", rate_start=5)
    def fetch(item: int) -> int:
        return int(get(f"{free.url}/item/{item}")["value"])

    limiter = _limiter(fetch)
    assert limiter.current_rate() == 5
    for i in range(10):
        fetch(i)
    assert limiter.current_rate() == 15


def test_retry_after_holds_the_whole_budget(free: DemoServer) -> None:
    """A 429 with Retry-After: 0.5 makes the next start of *any* caller of the budget wait it.

    (The deadline ends the throttled call, which would otherwise wait as asked and try again.)
    """
    import time

    @opero_deco(rate_limit=100, retries=0, deadline=0.3)
    def status(code: int) -> Any:
        return get(f"{free.url}/status/{code}?retry_after=0.5")

    with pytest.raises(opero.AllFailedError) as caught:
        status(429)
    assert isinstance(caught.value.__cause__, urllib.error.HTTPError)
    began = time.monotonic()
    status(200)
    assert time.monotonic() - began >= 0.45


def test_async_map_cuts_and_recovers(limited: DemoServer) -> None:
    """The async driver feeds the same AIMD state (through the async record methods)."""

    @opmap(
        mode="async", workers=8, rate_limit="auto", rate_start=80, retries=30, min_delay=0.01, progress=False
    )
    async def fetch(item: int) -> int:
        return int((await asyncio.to_thread(get, f"{limited.url}/item/{item}"))["value"])

    results = asyncio.run(fetch(list(range(30))))
    assert not [r for r in results if isinstance(r, BaseException)]
    assert _limiter(fetch).current_rate() < 60
    assert limited.stats["rate_limited"] > 0


def test_process_workers_share_one_adaptive_budget(limited: DemoServer) -> None:
    """Process workers cut the parent's rate: the record is one file for all of them."""

    @opmap(
        mode="process",
        workers=2,
        rate_limit="auto",
        rate_start=80,
        retries=30,
        min_delay=0.01,
        progress=False,
    )
    def fetch(item: int, url: str) -> int:
        return int(get(f"{url}/item/{item}")["value"])

    results = fetch(list(range(30)), limited.url)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert limited.stats["rate_limited"] > 0
    assert _limiter(fetch).current_rate() < 60  # read in the parent: the workers cut it


def test_two_processes_naming_a_scope_share_the_adaptive_rate(limited: DemoServer) -> None:
    """Another process naming the scope sees this one's cut at once, and its successes count."""
    scope = f"adaptive-{uuid.uuid4().hex[:8]}"

    @opero_deco(rate_limit="auto", rate_start=80, rate_limit_scope=scope, retries=30, min_delay=0.01)
    def fetch(item: int) -> int:
        return int(get(f"{limited.url}/item/{item}")["value"])

    cut = _cut_below_start(fetch)
    code = f"""
import opero
@opero.opero(rate_limit="auto", rate_start=80, rate_limit_scope={scope!r})
def other():
    return 1
limiter = opero.parts(other).limiter
print(limiter.current_rate())
for _ in range(5):
    opero.parts(other).limiter.succeeded()
print(limiter.current_rate())
"""
    seen, after = (float(x) for x in run_python(code).split())
    assert seen == pytest.approx(cut)
    assert after > cut
    assert _limiter(fetch).current_rate() == pytest.approx(after)
    remove_scope_files(scope)


@pytest.mark.redis
def test_adaptive_rate_shared_through_redis(redis_server: RedisServer, limited: DemoServer) -> None:
    """rate_limit_backend="redis": a process on another machine (here: another process) reads
    the same rate from the server."""
    scope = f"adaptive-{uuid.uuid4().hex[:8]}"
    config = {"url": redis_server.url}

    @opero_deco(
        rate_limit="auto",
        rate_start=80,
        rate_limit_scope=scope,
        rate_limit_backend="redis",
        cache_backend_config=config,
        retries=30,
        min_delay=0.01,
    )
    def fetch(item: int) -> int:
        return int(get(f"{limited.url}/item/{item}")["value"])

    cut = _cut_below_start(fetch)
    code = f"""
import opero
@opero.opero(rate_limit="auto", rate_start=80, rate_limit_scope={scope!r}, rate_limit_backend="redis",
             cache_backend_config={config!r})
def other():
    return 1
print(opero.parts(other).limiter.current_rate())
"""
    assert float(run_python(code)) == pytest.approx(cut)
    assert type(_limiter(fetch).adaptive.record).__name__ == "RedisRecord"


def test_testing_mode_skips_waits_but_keeps_the_mechanism(free: DemoServer) -> None:
    """Under opero.testing() neither Retry-After, backoff nor the rate makes anyone wait;
    429s still cut the rate. Throttled attempts use up no retry: the call ends when the
    throttle allowance (10 attempts, 10 minutes of skipped waits) runs out."""
    import time

    @opero_deco(rate_limit="auto", rate_start=5, retries=2, min_delay=120.0, max_delay=120.0, jitter=0)
    def status(code: int) -> Any:
        return get(f"{free.url}/status/{code}?retry_after=5")

    limiter = _limiter(status)
    with opero.testing():
        began = time.monotonic()
        with pytest.raises(opero.AllFailedError):
            status(429)
        for _ in range(10):
            status(200)
        elapsed = time.monotonic() - began
    assert elapsed < 2.0  # 18 min of throttle waits and 4 s of rate waits skipped
    assert status.stats.rate_waits == 0
    assert limiter.current_rate() < 5 * 0.9  # cut by the 429s (then +1 per success)
    assert free.stats["status"][429] == 10


def test_soft_ceiling_cuts_gently_and_climbs_carefully_near_it() -> None:
    """The rate at the last cut is a soft ceiling: near it a 429 cuts to 90 % (not 80 %) and
    successes climb 4x slower; far below it the climb is the usual one."""
    from opero._limit import CLIMB, CLIMB_NEAR, CUT, CUT_NEAR, PEAK, RATE, Adaptive, Limiter, LocalRecord

    record = LocalRecord(Adaptive.initial(20.0, probing=False))
    limiter = Limiter("soft", 20.0, adaptive=Adaptive(record, None))
    assert limiter.throttled(0.0) == pytest.approx(20.0 * CUT)  # no soft ceiling yet
    assert record.values[PEAK] == 20.0
    assert limiter.succeeded() == pytest.approx(16.0 + CLIMB)  # 16 is far below 20: full climb
    record.values[RATE] = 19.0  # within 10 % of the soft ceiling
    assert limiter.succeeded() == pytest.approx(19.0 + CLIMB * 16.0 / 19.0 * CLIMB_NEAR)
    rate = record.values[RATE]
    assert limiter.throttled(1.0) == pytest.approx(rate * CUT_NEAR)
    assert record.values[PEAK] == pytest.approx(rate)  # the new soft ceiling
    assert limiter.throttled(1.0) is None  # granted before that cut: one signal, one cut


def test_a_pacing_429_skips_a_slot_instead_of_stalling_the_budget() -> None:
    """A 429 with Retry-After: 1 on a grant that had to wait holds a fixed budget one slot,
    not 1 s, and widens its spacing; the third within a second holds the whole budget 1 s."""
    import time

    from opero._limit import SLACK_STEP, Limiter

    limiter = Limiter("pacing", 50.0)
    limiter.take()
    for strike in (1, 2):
        limiter.take()  # waited for its slot: the budget is busy
        limiter.throttled(0.0, 1.0)
        assert limiter.slack == pytest.approx(strike * SLACK_STEP, abs=1e-3)
        began = time.monotonic()
        limiter.take()
        assert time.monotonic() - began < 0.5  # one slot is 21 ms; not the server's 1 s
    limiter.throttled(0.0, 1.0)  # the third within a second: no longer the spacing's noise
    began = time.monotonic()
    limiter.take()
    assert time.monotonic() - began >= 0.95


def test_the_first_grant_of_a_process_reserves_two_slots() -> None:
    """With burst 1 the start after a limiter's first grant is two intervals later (a first
    call is slow to go out); then the spacing is exact again."""
    from opero._limit import Limiter, LocalStore
    from tests._spacing import assert_exact_spacing

    store = LocalStore()
    store.grant_log = []
    limiter = Limiter("cold", 40.0, store=store)
    for _ in range(4):
        limiter.take()
    g = store.grant_log
    assert g[1] - g[0] >= 2 * limiter.interval - 1e-5
    assert_exact_spacing(g[1:], 40.0, count=3)
