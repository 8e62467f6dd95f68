"""In-process rate limits: spacing, burst, sharing, async loops (SPEC §6)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

import opero as opero_pkg
from opero import ConfigurationError, opero


def spacings(times: list[float]) -> list[float]:
    """Gaps between consecutive sorted timestamps."""
    times = sorted(times)
    return [b - a for a, b in itertools.pairwise(times)]


def test_spacing_single_thread() -> None:
    """At 50/s, 11 calls take 10 intervals and no gap is below 1/r (1 ms margin)."""
    stamps: list[float] = []

    @opero(rate_limit=50)
    def hit() -> None:
        stamps.append(time.monotonic())

    for _ in range(11):
        hit()
    gaps = spacings(stamps)
    assert min(gaps) >= 0.02 - 0.001
    assert 0.2 - 0.001 <= stamps[-1] - stamps[0] < 0.6
    assert hit.stats.rate_waits >= 9


def test_spacing_eight_threads() -> None:
    """Eight threads share one function budget: total rate is r, not 8r."""
    stamps: list[float] = []
    lock = threading.Lock()

    @opero(rate_limit=100)
    def hit() -> None:
        with lock:
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=lambda: [hit() for _ in range(5)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stamps) == 40
    assert min(spacings(stamps)) >= 0.01 - 0.001
    assert stamps[-1] - stamps[0] >= 0.39 - 0.001


def test_burst_allows_back_to_back_then_spaces() -> None:
    """rate_burst=3 lets three start at once, then the fourth waits 1/r."""
    stamps: list[float] = []

    @opero(rate_limit=10, rate_burst=3)
    def hit() -> None:
        stamps.append(time.monotonic())

    for _ in range(4):
        hit()
    assert stamps[2] - stamps[0] < 0.02
    assert stamps[3] - stamps[0] >= 0.1 - 0.001


def test_scope_is_shared_between_functions() -> None:
    """Two functions naming one scope share one budget."""
    stamps: list[float] = []

    @opero(rate_limit=20, rate_limit_scope="test-shared-scope")
    def a() -> None:
        stamps.append(time.monotonic())

    @opero(rate_limit=20, rate_limit_scope="test-shared-scope")
    def b() -> None:
        stamps.append(time.monotonic())

    for _ in range(3):
        a()
        b()
    assert min(spacings(stamps)) >= 0.05 - 0.001


def test_scope_with_other_rate_is_an_error() -> None:
    """A scope used with a different rate raises ConfigurationError naming both rates."""
    opero(rate_limit=5, rate_limit_scope="test-scope-rate")(lambda: None)
    with pytest.raises(
        ConfigurationError, match="rate_limit_scope='test-scope-rate' already has rate_limit=5"
    ):
        opero(rate_limit=6, rate_limit_scope="test-scope-rate")(lambda: None)


def test_every_attempt_takes_a_token() -> None:
    """Retries and fallbacks are rate limited too: 3 attempts at 20/s span >= 2 intervals."""
    stamps: list[float] = []

    @opero(rate_limit=20, retries=2, min_delay=0, max_delay=0, jitter=0)
    def flaky() -> None:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise ConnectionError

    flaky()
    assert min(spacings(stamps)) >= 0.05 - 0.001


def test_async_waits_do_not_block_loop_and_survive_new_loops() -> None:
    """Async rate waits yield to the loop; the same limiter works after asyncio.run again."""
    stamps: list[float] = []

    @opero(rate_limit=50)
    async def hit() -> None:
        stamps.append(time.monotonic())

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while len(stamps) < 6:
                ticks += 1
                await asyncio.sleep(0.002)

        await asyncio.gather(ticker(), *(hit() for _ in range(6)))
        return ticks

    assert asyncio.run(main()) >= 10
    asyncio.run(main())  # a fresh event loop, same limiter
    assert len(stamps) >= 12
    assert min(spacings(stamps)) >= 0.02 - 0.001


def test_testing_mode_skips_rate_waits() -> None:
    """opero.testing() turns rate-limit waits off."""

    @opero(rate_limit=1)
    def hit() -> int:
        return 1

    t0 = time.perf_counter()
    with opero_pkg.testing():
        assert sum(hit() for _ in range(20)) == 20
    assert time.perf_counter() - t0 < 0.5


def test_limiter_repr_shows_live_state() -> None:
    """The limiter's repr and HTML show rate, grants and waits."""

    @opero(rate_limit=100)
    def hit() -> None:
        pass

    hit()
    hit()
    limiter = hit._opero_plan.limiter  # type: ignore[attr-defined]
    assert "100/s" in repr(limiter) and "2 grants" in repr(limiter)
    assert "<code>" in limiter._repr_html_()
