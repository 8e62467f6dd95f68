"""What ``rate_limit`` and ``rate_burst`` promise over a 1-second window, wall-clock waits,
and the async redis path that never blocks the event loop (issue 12.6)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from opero import opero
from tests._helpers import (
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
