"""What ``rate_limit`` and ``rate_burst`` promise over a 1-second window, wall-clock waits,
and the async redis path that never blocks the event loop (issue 12.6)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from opero import opero, parts
from tests._helpers import (
    run_threads,
    wiped_redis_server,  # noqa: F401  (overrides redis_server here)
)
from tests._redis import RedisServer
from tests._spacing import EXACT
from tests.shared.rate_semantics import _grants, _max_in_window


def test_burst_window_through_redis(redis_server: RedisServer) -> None:
    """The redis store keeps the same promise (the window lives in a list on the server)."""

    @opero(
        rate_limit=10,
        rate_burst=10,
        rate_limit_backend="redis",
        cache_backend_config={"url": redis_server.url},
    )
    def hit() -> None:
        pass

    grants = _grants(hit)
    for _ in range(21):
        hit()
    assert len(grants) == 21
    assert grants[9] - grants[0] < 0.05
    assert grants[10] - grants[0] >= 1.0 - EXACT
    assert _max_in_window(grants) == 10


@pytest.mark.redis
def test_async_redis_limiter_never_blocks_the_event_loop(redis_server: RedisServer) -> None:
    """With redis paused for 0.3 s, async calls wait for it while a ticker task keeps ticking.

    The limiter talks to redis through redis.asyncio: a blocking client would freeze the loop
    for the whole pause (one tick gap >= 0.3 s).
    """
    import redis

    url = redis_server.url

    @opero(
        rate_limit=50, rate_limit_backend="redis", cache_backend_config={"url": url, "socket_timeout": 2.0}
    )
    async def hit(i: int) -> int:
        return i

    async def main() -> tuple[list[float], float, list[int]]:
        assert await hit(-1) == -1  # connect and load the script before the pause
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", "300", "ALL")
        began = time.monotonic()
        results = await asyncio.gather(*(hit(i) for i in range(5)))
        took = time.monotonic() - began
        await asyncio.sleep(0.05)
        stop.set()
        await task
        return ticks, took, results

    ticks, took, results = asyncio.run(main())
    assert results == [0, 1, 2, 3, 4]
    assert took >= 0.25  # the calls really waited for the paused server
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.2, max(gaps)  # ... while the loop kept running
    assert hit.stats.successes == 6


@pytest.mark.redis
def test_async_redis_limiter_survives_a_new_event_loop(redis_server: RedisServer) -> None:
    """A notebook re-running asyncio.run: each loop gets its own redis.asyncio client."""

    @opero(rate_limit=100, rate_limit_backend="redis", cache_backend_config={"url": redis_server.url})
    async def hit(i: int) -> int:
        return i

    grants = _grants(hit)
    for _ in range(3):
        assert asyncio.run(hit(1)) == 1
    assert len(grants) == 3


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_burst_is_inside_the_rate_not_on_top(backend: str) -> None:
    """r=10, B=10: 10 start back to back, and no 1-second window ever sees more than 10.

    (Plain GCRA let a 1-second window see r + B - 1 = 19.)
    """

    @opero(rate_limit=10, rate_burst=10)
    def hit() -> None:
        pass

    if backend == "memory":  # the in-process store runs the same steps
        from opero._limit import LocalStore

        parts(hit).limiter.store = LocalStore()
    grants = _grants(hit)
    began = time.monotonic()
    for _ in range(25):
        hit()
    elapsed = time.monotonic() - began
    assert len(grants) == 25
    assert grants[9] - grants[0] < 0.05  # the burst: 10 back to back
    assert _max_in_window(grants) == 10
    assert grants[10] - grants[0] >= 1.0 - EXACT  # the 11th waits for the first to leave
    assert grants[20] - grants[10] >= 1.0 - EXACT
    assert 2.0 - EXACT <= elapsed < 6.0


def test_burst_below_rate_then_spacing() -> None:
    """r=20, B=5: 5 back to back, then about 1/r apart; any second sees at most 20 starts.

    After the burst, starts are scheduled 1/r apart; one delayed by the scheduler may be
    followed sooner (the unused burst allows that), so the spacing promise is GCRA's: k later
    starts span at least (k - (B - 1)) / r.
    """

    @opero(rate_limit=20, rate_burst=5)
    def hit() -> None:
        pass

    grants = _grants(hit)
    for _ in range(30):
        hit()
    assert grants[4] - grants[0] < 0.05
    for k in (5, 10, 20):
        assert grants[5 + k] - grants[5] >= (k - 4) / 20 - EXACT
    assert grants[5] - grants[0] >= 1 / 20 - EXACT
    assert _max_in_window(grants) <= 20


def test_burst_one_keeps_exact_spacing() -> None:
    """The default burst 1 is unchanged: grants exactly 1/r apart, ceil(r) per second."""

    @opero(rate_limit=25)
    def hit() -> None:
        pass

    grants = _grants(hit)
    for _ in range(30):
        hit()
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= 1 / 25 - EXACT
    assert _max_in_window(grants) <= 25


def test_wall_clock_wait_is_reported_beside_thread_seconds() -> None:
    """8 threads waiting together: rate_wait_seconds adds each thread's wait, rate_wait_wall
    counts the seconds during which at least one of them waited (at most the elapsed time)."""

    @opero(rate_limit=20)
    def hit() -> None:
        pass

    began = time.monotonic()
    run_threads(8, lambda: [hit() for _ in range(5)])
    elapsed = time.monotonic() - began
    stats = hit.stats
    assert elapsed >= 39 / 20 - 0.01
    assert 0.8 * (39 / 20) <= stats.rate_wait_wall <= elapsed + 0.01
    assert stats.rate_wait_seconds > 2.5 * stats.rate_wait_wall  # 8 waiting at once, mostly
    assert stats["rate_wait_wall"] == stats.rate_wait_wall
