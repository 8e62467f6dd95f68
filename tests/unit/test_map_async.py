"""opmap with async def functions: async mode, other modes, streaming, the seed's scraper."""

from __future__ import annotations

import asyncio

import pytest

from opero import AllFailedError, opmap


@pytest.mark.asyncio
async def test_async_mode_keeps_at_most_workers_in_flight() -> None:
    """mode='async' runs on the caller's loop with at most `workers` coroutines at once."""
    state = {"now": 0, "peak": 0}

    @opmap(workers=5, progress=False)
    async def probe(x: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return x

    assert await probe(range(40)) == list(range(40))
    assert state["peak"] == 5


@pytest.mark.asyncio
async def test_async_unordered_and_failures() -> None:
    """ordered=False gives completion order; a failing coroutine holds AllFailedError."""

    @opmap(ordered=False, retries=1, min_delay=0.1, jitter=0, progress=False)
    async def nap(x: float) -> float:
        if x < 0:
            raise ValueError("negative")
        await asyncio.sleep(x)
        return x

    out = await nap([0.4, -1.0, 0.0, 0.2])  # the failure ends after its 0.1 s backoff
    assert out[0] == 0.0
    assert isinstance(out[1], AllFailedError)
    assert out[2:] == [0.2, 0.4]


@pytest.mark.asyncio
async def test_async_imap_is_an_async_generator() -> None:
    """fn.imap on an async def function is an async generator of ordered results."""

    @opmap(workers=3, progress=False)
    async def double(x: int) -> int:
        await asyncio.sleep(0.001 * (x % 3))
        return 2 * x

    assert [v async for v in double.imap(iter(range(20)))] == [2 * x for x in range(20)]


def test_sync_function_in_async_mode() -> None:
    """A sync function with mode='async' still maps (on threads) and returns a list."""

    @opmap(mode="async", workers=4, progress=False)
    def inc(x: int) -> int:
        return x + 1

    assert inc(range(5)) == [1, 2, 3, 4, 5]
