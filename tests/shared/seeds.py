"""Helpers shared by tests/unit/test_seeds.py and tests/integration/test_seeds.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SEEDS = HERE / "seeds"
PRELUDE = (SEEDS / "prelude.py").read_text()
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Seed:
    """How one seed block is run and what its output must show."""

    epilogue: str = ""  # code run after the block: calls the guide describes but does not show
    expect: tuple[str, ...] = ()  # substrings of stdout + stderr
    needs: tuple[int, ...] = ()  # earlier blocks of the same guide that define names it uses
    testing_mode: bool = False  # run under opero.testing(): the seed alone would take minutes
    redis: bool = False  # needs a redis server
    skip: str = ""  # why the block is not runnable Python at all
    timeout: float = 120
    pytest_suite: bool = False  # a test suite: run it with pytest, verbatim
    env: dict[str, str] = field(default_factory=dict)


SEED_BLOCKS: dict[tuple[str, int], Seed] = {
    # -- basic-usage.md ---------------------------------------------------------------------
    ("basic-usage", 0): Seed(skip="a syntax template (`@opero(parameter=value, ...)`), not Python"),
    ("basic-usage", 1): Seed(expect=("User profile: {'id': 'user123'",)),
    ("basic-usage", 2): Seed(
        epilogue="""
        assert len(results) == len(items) == 5  # item1, item2, item3, ..., item100
        assert not [r for r in results if isinstance(r, Exception)], results
        print("mapped", len(results))
        """,
        expect=("mapped 5",),
    ),
    ("basic-usage", 3): Seed(
        epilogue="""
        outcomes = {
            "thread": io_bound_task(["1", "2", "3"]),
            "process": cpu_bound_task([1, 2, 3]),
            "async": asyncio.run(async_io_task(["4", "5"])),
            "async_process": asyncio.run(async_process_task([1, 2])),
        }
        for mode, results in outcomes.items():
            assert not [r for r in results if isinstance(r, Exception)], (mode, results)
        assert outcomes["process"] == [complex_calculation(i) for i in (1, 2, 3)]
        assert outcomes["thread"][0]["id"] == "1"
        print("all four modes ran")
        """,
        expect=("all four modes ran",),
        timeout=240,
    ),
    ("basic-usage", 4): Seed(expect=("Successfully scraped: 40 pages", "Failed to scrape: 10 pages")),
    ("basic-usage", 5): Seed(
        epilogue="""
        assert expensive_calculation.stats.cache_hits == 1
        print("cached:", result2)
        """,
        expect=("cached: 332833500",),
    ),
    ("basic-usage", 6): Seed(
        epilogue="""
        assert result1 == result2
        assert CALLS["expensive_operation"] == 1, "the timestamp must not be part of the key"
        print("one entry for both timestamps")
        """,
        expect=("one entry for both timestamps",),
    ),
    ("basic-usage", 7): Seed(
        epilogue="""
        for fn in (memory_cached, disk_cached, redis_cached):
            fn(); fn()
            assert fn.stats.cache_hits == 1, fn.stats
        print("three backends cached")
        """,
        expect=("three backends cached",),
        redis=True,
    ),
    # api1/api2/api3.com are unreachable here: every attempt fails, as the section intends.
    ("basic-usage", 8): Seed(expect=("All 12 attempts failed:", "Last error was:")),
    ("basic-usage", 9): Seed(expect=("Resource not found - not retried",)),
    ("basic-usage", 10): Seed(
        epilogue="""
        assert set(preferences) == {"user_id", "theme", "language", "notifications"}, preferences
        print("preferences:", preferences["user_id"])
        """,
        expect=("preferences: user123",),
    ),
    ("basic-usage", 11): Seed(
        epilogue="""
        assert len(results) == 50
        assert api_call.stats.rate_waits >= 45, api_call.stats  # 10/s: ~every call waits its turn
        print("rate limited calls:", api_call.stats.calls)
        """,
        expect=("rate limited calls: 50",),
    ),
    ("basic-usage", 12): Seed(
        epilogue="""
        assert get_data.stats.calls == post_data.stats.calls == 1
        print("shared scope ok")
        """,
        expect=("shared scope ok",),
    ),
    ("basic-usage", 13): Seed(
        epilogue="time_aware_api(); print('dynamic rate', get_rate_limit())", expect=("dynamic rate",)
    ),
    # The guide's comment says INFO shows cache hits/misses; opero logs them at DEBUG so a
    # 1,000-item map does not flood INFO (the docs say so): at INFO the call prints no line.
    ("basic-usage", 14): Seed(
        # ...and at DEBUG the guide's "cache hits/misses" and "rate limiting actions" appear.
        epilogue="""
        print('result', result)
        logger.setLevel(logging.DEBUG)
        monitored_function(42); monitored_function(43); monitored_function(44)
        """,
        expect=(
            "result 84",
            "monitored_function: cache hit",
            "monitored_function: cache miss",
            "monitored_function: rate limit held the call back",
        ),
    ),
    ("basic-usage", 15): Seed(epilogue="timed_function(3)", expect=("timed_function succeeded in",)),
    ("basic-usage", 16): Seed(
        epilogue="""
        api_function_1(); api_function_2()
        print("configs:", sorted(BATCH_CONFIG), sorted(REALTIME_CONFIG))
        """,
        expect=("configs:",),
    ),
    ("basic-usage", 17): Seed(
        epilogue="""
        assert result == default_value
        print("degraded to", result)
        """,
        expect=("degraded to {'status': 'default'}",),
    ),
    ("basic-usage", 18): Seed(
        epilogue="""
        basic_function()
        api_function({"q": 1}, api_key=["k1", "k2"])
        assert batch_processor([1, 2, 3]) == [None, None, None]
        assert asyncio.run(async_processor([1, 2])) == [None, None]
        print("quick reference ok")
        """,
        expect=("quick reference ok",),
    ),
    # -- best-practices.md ------------------------------------------------------------------
    ("best-practices", 0): Seed(
        epilogue="""
        async def _demo():
            controller = ApplicationController()
            dashboard = await controller.get_user_dashboard("42")
            print("dashboard:", dashboard["status"], dashboard["user"]["name"])
            batch = await controller.user_service.get_users_batch(["7", "8"])
            print("batch of", len(batch), batch[0])
        asyncio.run(_demo())
        """,
        expect=("dashboard: success User 42", "batch of 2"),
    ),
    ("best-practices", 1): Seed(
        epilogue="""
        configured_function()
        print("environment config:", config.retries, config.rate_limit)
        """,
        expect=("environment config: 1 5.0",),
    ),
    ("best-practices", 2): Seed(
        epilogue="""
        assert len(results) == len(all_items)
        assert not [r for r in results if isinstance(r, Exception)], results[:3]
        print("optimized:", len(results))
        """,
        expect=("Workload analysis:", "optimized: 100"),
    ),
    # 100,000 items in process workers, each failing and retried with backoff: minutes of
    # sleeping as written, so it runs under opero.testing() (no sleeps, same attempts).
    ("best-practices", 3): Seed(
        epilogue="print('results:', len(results))",
        expect=("Processing chunk 100 (1000 items)", "results: 100000"),
        testing_mode=True,
        timeout=600,
    ),
    ("best-practices", 4): Seed(
        epilogue="""
        first = get_user_profile("7")
        assert get_user_profile("7") == first
        assert get_user_profile.stats.cache_hits == 1
        assert CALLS["fetch_user_data"] == 1
        print("profile:", first["name"], get_product_info("p1", "books"))
        """,
        expect=("profile: User 7",),
    ),
    ("best-practices", 5): Seed(
        epilogue="print('echo:', robust_api_call('orders', {'id': 1})['json'])",
        expect=("echo: {'id': 1}",),
    ),
    ("best-practices", 6): Seed(
        epilogue="""
        report = asyncio.run(health_endpoint())
        print("health:", report["status"], sorted(report["checks"]))
        """,
        expect=("health: healthy ['api', 'cache', 'database']",),
    ),
    ("best-practices", 7): Seed(
        epilogue="""
        production_api_call("items")
        assert production_batch_processor([1, 2]) == [None, None]
        print("config loaded:", type(prod_config).__name__)
        """,
        expect=("config loaded: DevelopmentConfig",),
    ),
    ("best-practices", 8): Seed(
        needs=(7,),
        epilogue="""
        print("api:", production_api_function("health"))
        print("batch:", production_batch_function([1, 2]))
        """,
        expect=("api: {'status': 'ok'}", "batch: ['processed_1', 'processed_2']", "function_call"),
    ),
    ("best-practices", 9): Seed(pytest_suite=True, timeout=180),
}


def seed_files() -> list[Path]:
    """The guides: the copies in tests/seeds."""
    return sorted(SEEDS.glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of one markdown file, in order."""
    return BLOCK.findall(path.read_text())


def block(guide: str, index: int) -> str:
    """Block ``index`` of ``<guide>.md``."""
    return python_blocks(next(p for p in seed_files() if p.stem == guide))[index]
