"""opmap with async def functions: async mode, other modes, streaming, the seed's scraper."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest

import opero
from opero import AllFailedError, opmap

# -- the seed's scraping example (basic-usage.md), pointed at the loopback demo server ------


@opmap(
    mode="async",
    workers=25,
    retries=3,
    cache=True,
    cache_ttl=1800,
    rate_limit=15.0,
    arg_fallback="user_agent",
    ordered=True,
    progress=True,
)
async def scrape_url(url: str, user_agent: list[str] = None) -> dict[str, Any]:  # type: ignore[assignment]  # noqa: RUF013
    """Scrape a single URL with fallback user agents."""
    if user_agent is None:
        user_agent = [
            "Mozilla/5.0 (compatible; OperoBot/1.0)",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
        ]
    headers = {"User-Agent": user_agent[0]}
    timeout = aiohttp.ClientTimeout(total=30, connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, headers=headers) as response:
            if response.status in [403, 429]:
                raise aiohttp.ClientError(f"Blocked with status {response.status}")
            response.raise_for_status()
            content = await response.text()
            return {
                "url": url,
                "status": response.status,
                "content_length": len(content),
                "user_agent": user_agent[0],
            }


@pytest.mark.asyncio
async def test_seed_scraper_falls_back_to_a_browser_user_agent(demo_server: Any) -> None:
    """The seed's scraper: OperoBot is refused (403), the next user agent succeeds; 404 fails."""
    base = demo_server.url
    urls = [f"{base}/html/{i}" for i in range(3)] + [f"{base}/status/404", f"{base}/delay/1"]
    user_agents = ["Mozilla/5.0 (compatible; OperoBot/1.0)", "Mozilla/5.0 (X11; Linux x86_64)"]
    with opero.testing():
        results = await scrape_url(urls, user_agent=user_agents)
    assert [r["status"] for r in results[:3]] == [200, 200, 200]
    assert all(r["user_agent"] == user_agents[1] for r in results[:3])
    assert isinstance(results[3], AllFailedError)
    assert results[4]["status"] == 200
    assert scrape_url.stats.fallbacks >= 3


class UserService:
    """The seed's UserService.get_users_batch shape: an opmap'd async method."""

    def __init__(self, base: str) -> None:
        self.base = base

    @opmap(mode="async", workers=20, retries=2, ordered=True, progress=True)
    async def get_users_batch(self, user_id: str) -> dict[str, Any]:
        """Fetch one user (items are the argument after self)."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.base}/users/{user_id}") as resp:
                resp.raise_for_status()
                return dict(await resp.json())


@pytest.mark.asyncio
async def test_seed_async_method_batch(demo_server: Any) -> None:
    """An opmap'd async method called as self.method(items) maps over the items."""
    users = await UserService(demo_server.url).get_users_batch(["1", "2", "3"])
    assert [u["id"] for u in users] == ["1", "2", "3"]


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["thread", "process", "async_process"])
async def test_async_function_in_thread_and_process_modes(mode: str) -> None:
    """An async def function also runs in thread, process and async_process modes."""

    @opmap(mode=mode, workers=2, progress=False)
    async def who(x: int) -> tuple[int, int]:
        await asyncio.sleep(0.01)
        return x, os.getpid()

    out = await who(range(10))
    assert [x for x, _ in out] == list(range(10))
    pids = {p for _, p in out}
    assert (pids == {os.getpid()}) == (mode == "thread")


def test_async_process_runs_a_chunk_concurrently() -> None:
    """async_process: each worker's event loop runs its chunk's coroutines concurrently."""

    @opmap(mode="async_process", workers=2, progress=False)
    async def nap(x: int) -> int:
        await asyncio.sleep(0.2)
        return x

    opero.run(nap([0, 1]))  # start the workers
    t0 = time.perf_counter()
    assert opero.run(nap(range(40))) == list(range(40))
    assert time.perf_counter() - t0 < 1.0  # sequential would be 4 s per worker
