"""One call of an ``async def`` function: the async driver mirrors the sync one (SPEC §3)."""

from __future__ import annotations

import asyncio
import time

import pytest

from opero import AllFailedError, opero


@pytest.mark.asyncio
async def test_async_stays_async_and_retries() -> None:
    """An async function stays a coroutine function and retries with asyncio.sleep."""
    calls: list[int] = []

    @opero(retries=2, min_delay=0.001)
    async def fetch(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        if len(calls) < 3:
            raise ConnectionError
        return x * 2

    assert asyncio.iscoroutinefunction(fetch)
    assert await fetch(4) == 8
    assert len(calls) == 3
    assert fetch.stats.retries == 2


@pytest.mark.asyncio
async def test_async_fallback_and_all_failed() -> None:
    """Async fallback candidates are suffixes; AllFailedError lists every attempt."""
    seen: list[str] = []

    @opero(retries=1, min_delay=0.001, arg_fallback="key")
    async def fetch(key: list[str]) -> str:
        seen.append(key[0])
        raise ConnectionError(key[0])

    with pytest.raises(AllFailedError) as info:
        await fetch(["a", "b"])
    assert seen == ["a", "b", "a", "b"]
    assert len(info.value.errors) == 4


@pytest.mark.asyncio
async def test_async_timeout_really_cancels() -> None:
    """A timed-out async attempt is cancelled (its finally block runs) and fails with TimeoutError."""
    cancelled: list[bool] = []

    @opero(retries=0, timeout=0.05)
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    t0 = time.perf_counter()
    with pytest.raises(AllFailedError) as info:
        await slow()
    assert time.perf_counter() - t0 < 0.5
    assert isinstance(info.value.errors[0], TimeoutError)
    assert cancelled == [True]


@pytest.mark.asyncio
async def test_async_backoff_does_not_block_the_loop() -> None:
    """While one call backs off, other tasks on the loop keep running."""
    ticks: list[float] = []

    @opero(retries=1, min_delay=0.1, max_delay=0.1, jitter=0)
    async def flaky() -> str:
        if not ticks or len(ticks) < 2:
            ticks.append(-1.0)
            raise ConnectionError
        return "ok"

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    result, _ = await asyncio.gather(flaky(), ticker())
    assert result == "ok"
    assert len([t for t in ticks if t > 0]) == 5


@pytest.mark.asyncio
async def test_async_non_retryable_propagates() -> None:
    """A non-retryable error of an async function propagates as itself."""

    @opero(retries=3, retry_on=ConnectionError)
    async def bad() -> None:
        raise LookupError("x")

    with pytest.raises(LookupError):
        await bad()


@pytest.mark.asyncio
async def test_async_cache_hit_skips_call() -> None:
    """Async results are cached like sync ones."""
    calls: list[int] = []

    @opero(cache=True)
    async def get(x: int) -> int:
        calls.append(x)
        return x

    assert [await get(1), await get(1), await get(2)] == [1, 1, 2]
    assert calls == [1, 2]


def test_async_method_with_fallback_and_cache() -> None:
    """The seed's MockAPIClient shape: an async method with fallback, cache and rate limit."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @opero(retries=3, cache=True, cache_ttl=60, rate_limit=50.0, arg_fallback="api_key")
        async def fetch(self, endpoint: str, api_key: list[str]) -> dict[str, str]:
            self.calls += 1
            if api_key[0] == "bad":
                raise ConnectionError("bad key")
            return {"endpoint": endpoint, "key": api_key[0]}

    c = Client()
    out = asyncio.run(c.fetch("e", api_key=["bad", "good"]))
    assert out == {"endpoint": "e", "key": "good"}
    assert asyncio.run(c.fetch("e", api_key=["bad", "good"])) == out
    assert c.calls == 2
    other = Client()
    asyncio.run(other.fetch("e", api_key=["good"]))
    assert other.calls == 1  # self is part of the key: another instance misses
