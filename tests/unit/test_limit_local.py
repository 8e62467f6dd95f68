"""In-process rate limits: spacing, burst, sharing, async loops (SPEC §6).

Exact spacing is checked on the grant times the limiter decides (``LocalStore.grant_log``);
what the decorated functions observe is checked in aggregate (see tests/_spacing.py).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

import pytest

import opero as opero_pkg
from opero import ConfigurationError, opero
from opero._limit import Limiter, LocalStore, clock
from opero.stores.host import scope_path
from tests._helpers import run_threads
from tests._spacing import SCHEDULING, assert_exact_spacing, assert_starts_per_window


def logged_limiter(rate: float, burst: int = 1) -> tuple[Limiter, list[float]]:
    """A limiter on an in-process store that records its grant times."""
    store = LocalStore()
    log: list[float] = []
    store.grant_log = log
    return Limiter("test", rate, burst, store), log


def test_grant_log_is_off_by_default_and_records_each_grant() -> None:
    """A store records nothing unless given a list; then one clock reading per grant, in order."""
    assert LocalStore().grant_log is None
    limiter, log = logged_limiter(1000)
    before = clock()
    for _ in range(3):
        limiter.acquire()
    assert len(log) == 3
    assert before <= log[0] <= log[1] <= log[2] <= clock()


def test_spacing_single_thread() -> None:
    """At 50/s, 11 grants are 1/r apart exactly and span 10 intervals (< 3x that)."""
    limiter, log = logged_limiter(50)
    for _ in range(11):
        limiter.acquire()
    assert_exact_spacing(log, 50, count=11)
    assert 0.2 - 1e-5 <= log[-1] - log[0] < 0.6


def test_spacing_eight_threads() -> None:
    """Eight threads on one limiter share its budget: grants 1/r apart, total rate r, not 8r."""
    limiter, log = logged_limiter(100)
    run_threads(8, lambda: [limiter.acquire() for _ in range(5)])
    assert_exact_spacing(log, 100, count=40)


def test_decorated_function_spacing_in_aggregate() -> None:
    """A rate_limit=50 function called 11 times takes >= 10 intervals, < 3x, and waits."""
    stamps: list[float] = []

    @opero(rate_limit=50)
    def hit() -> None:
        stamps.append(time.monotonic())

    began = time.monotonic()
    for _ in range(11):
        hit()
    # Each grant is >= 1/r after the previous one and the first is after `began`.
    assert 0.2 <= stamps[-1] - began < 0.6 + SCHEDULING
    assert_starts_per_window(stamps, 50)
    assert hit.stats.rate_waits >= 5


def test_decorated_function_shared_by_eight_threads() -> None:
    """Eight threads calling one rate_limit=100 function: 40 starts take >= 0.39 s, none bunched."""
    stamps: list[float] = []
    lock = threading.Lock()

    @opero(rate_limit=100)
    def hit() -> None:
        with lock:
            stamps.append(time.monotonic())

    began = time.monotonic()
    run_threads(8, lambda: [hit() for _ in range(5)])
    assert len(stamps) == 40
    assert 0.39 <= max(stamps) - began < 0.39 * 3 + SCHEDULING
    assert_starts_per_window(stamps, 100)


def test_burst_allows_back_to_back_then_spaces() -> None:
    """rate_burst=3 lets three start without spacing, then the fourth waits 1/r after the first."""
    limiter, log = logged_limiter(10, burst=3)
    for _ in range(4):
        limiter.acquire()
    assert log[2] - log[0] < 0.1  # spaced, they would be 0.2 s apart
    # With burst > 1 the start is not re-checked after the sleep, and a remaining wait below
    # the limiter's 2 ms spin threshold is yielded rather than slept.
    assert log[3] - log[0] >= 0.1 - 0.002


def test_scope_is_shared_between_functions() -> None:
    """Two functions naming one scope share one budget: 6 alternating calls take >= 5 intervals."""
    stamps: list[float] = []
    scope = f"test-{uuid.uuid4().hex}"  # host-wide: another test run must not share it

    @opero(rate_limit=20, rate_limit_scope=scope)
    def a() -> None:
        stamps.append(time.monotonic())

    @opero(rate_limit=20, rate_limit_scope=scope)
    def b() -> None:
        stamps.append(time.monotonic())

    began = time.monotonic()
    for _ in range(3):
        a()
        b()
    # Two separate budgets would let a and b start together: about 2 intervals in all.
    assert 0.25 <= stamps[-1] - began < 0.75 + SCHEDULING
    os.unlink(scope_path(scope))


def test_scope_with_other_rate_is_an_error() -> None:
    """A scope used with a different rate raises ConfigurationError naming both rates."""
    scope = f"test-{uuid.uuid4().hex}"
    opero(rate_limit=5, rate_limit_scope=scope)(lambda: None)
    with pytest.raises(ConfigurationError, match=f"rate_limit_scope='{scope}' already has rate_limit=5"):
        opero(rate_limit=6, rate_limit_scope=scope)(lambda: None)
    os.unlink(scope_path(scope))


def test_every_attempt_takes_a_token() -> None:
    """Retries are rate limited too: 3 attempts at 20/s take >= 2 intervals (no backoff set)."""
    stamps: list[float] = []

    @opero(rate_limit=20, retries=2, min_delay=0, max_delay=0, jitter=0)
    def flaky() -> None:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise ConnectionError

    began = time.monotonic()
    flaky()
    assert len(stamps) == 3
    assert 0.1 <= stamps[-1] - began < 0.3 + SCHEDULING
    assert flaky.stats.rate_waits >= 1


def test_async_grants_spaced_across_event_loops() -> None:
    """acquire_async grants are 1/r apart, also after asyncio.run starts a fresh loop."""
    limiter, log = logged_limiter(50)

    async def main() -> None:
        await asyncio.gather(*(limiter.acquire_async() for _ in range(6)))

    asyncio.run(main())
    asyncio.run(main())  # a fresh event loop, same limiter
    assert_exact_spacing(log, 50, count=12)


def test_async_waits_do_not_block_the_loop() -> None:
    """While async calls wait for tokens (4 at 10/s), another task on the loop keeps ticking."""
    stamps: list[float] = []

    @opero(rate_limit=10)
    async def hit() -> None:
        stamps.append(time.monotonic())

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while len(stamps) < 4:
                ticks += 1
                await asyncio.sleep(0.005)

        await asyncio.gather(ticker(), *(hit() for _ in range(4)))
        return ticks

    began = time.monotonic()
    ticks = asyncio.run(main())
    assert len(stamps) == 4
    assert stamps[-1] - began >= 0.3
    # ~60 ticks in 0.3 s; a blocking wait would leave the ticker one tick per grant.
    assert ticks >= 10


def test_testing_mode_skips_rate_waits() -> None:
    """opero.testing() turns rate-limit waits off: 20 calls at 1/s take well under 19 s."""

    @opero(rate_limit=1)
    def hit() -> int:
        return 1

    t0 = time.perf_counter()
    with opero_pkg.testing():
        assert sum(hit() for _ in range(20)) == 20
    assert time.perf_counter() - t0 < 2.0


def test_limiter_repr_shows_live_state() -> None:
    """The limiter's repr and HTML show rate, grants and waits."""
    limiter = Limiter("test", 100)
    limiter.acquire()
    limiter.acquire()
    assert "100/s" in repr(limiter) and "2 grants" in repr(limiter)
    assert "LocalStore" in repr(limiter)
    assert limiter._repr_html_().startswith("<code>&lt;Limiter")
