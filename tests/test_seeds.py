"""Every ```python block of the user's seed guides runs against opero, unchanged.

The guides (copied into ``tests/seeds/``; the suite reads nothing outside the repository) are
the user's own design documents; SPEC says their examples must run as written. Each block runs
as its own script in a subprocess, after ``tests/seeds/prelude.py`` (names the guides use
without defining them, like ``expensive_operation`` or ``requests``). Only two things change:
URLs of the public internet point at a loopback :class:`~opero.demo.DemoServer`, and where a
guide defines functions without calling them, a short epilogue calls them the way the guide
describes.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from opero.demo import DemoServer
from tests.conftest import require

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
PRELUDE = (SEEDS / "prelude.py").read_text()
URL = re.compile(r"https?://(?P<host>[^/\"'\s]+)(?P<path>[^\"'\s]*)")
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


def closed_port() -> int:
    """A loopback port that nobody listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def point_at_demo(code: str, base: str) -> str:
    """Rewrite public-internet URLs to the demo server; api1/2/3.com become unreachable hosts."""

    def swap(m: re.Match[str]) -> str:
        host, path = m["host"], m["path"]
        if re.fullmatch(r"api\d\.com", host):
            return f"http://127.0.0.1:{closed_port()}{path}"
        if host == "api.com" and path == "/{item}":
            return f"{base}/item/{{item}}"  # "fetch item N" -> the demo API's /item/<id>
        return base + path  # /users/x, /delay/1, /status/404, /health, /user-agent, POST echo

    return URL.sub(swap, code)


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServer]:
    """One loopback demo API shared by the seed scripts."""
    with DemoServer() as server:
        yield server


def redis_config(request: pytest.FixtureRequest) -> tuple[str, int]:
    """``(host, port)`` of the backends' redis fixture, or skip (fail under CI) without one."""
    try:
        server = request.getfixturevalue("redis_server")
    except pytest.FixtureLookupError:
        require(False, "no redis_server fixture (tests/_fixtures_redis.py)")
        raise
    host = getattr(server, "host", "127.0.0.1")
    port = getattr(server, "port", None)
    if port is None:
        url = str(getattr(server, "url", server))
        port = int(re.search(r":(\d+)", url.split("//")[-1])[1])
    return host, int(port)


def run_script(code: str, tmp_path: Path, demo: DemoServer, timeout: float, env: dict[str, str]) -> str:
    """Run ``code`` as ``python script.py`` in ``tmp_path``; return stdout + stderr, fail on error."""
    script = tmp_path / "seed_block.py"
    script.write_text(code)
    environment = {**os.environ, "OPERO_DEMO_URL": demo.url, "PYTHONPATH": str(HERE.parent), **env}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"seed block failed:\n{output[-4000:]}"
    return output


def test_every_seed_block_is_covered() -> None:
    """Each ```python block of each guide has an entry here: none is silently left out."""
    found = {(p.stem, i) for p in seed_files() for i in range(len(python_blocks(p)))}
    assert found == set(SEED_BLOCKS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("guide", "index"),
    # blocks that are not Python (a syntax template) are not collected: see test_only_templates_are_left_out
    [key for key, seed in SEED_BLOCKS.items() if not seed.pytest_suite and not seed.skip],
    ids=lambda v: str(v),
)
def test_seed_block_runs(
    guide: str, index: int, demo: DemoServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The block runs as written (URLs on loopback) and prints what the guide says it does."""
    seed = SEED_BLOCKS[(guide, index)]
    code = point_at_demo(block(guide, index), demo.url)
    if seed.redis:
        host, port = redis_config(request)
        code = code.replace('"host": "localhost", "port": 6379', f'"host": "{host}", "port": {port}')
    parts = [PRELUDE]
    if seed.testing_mode:
        parts.append("import opero as _opero\n_opero.testing()\n")
    parts += [point_at_demo(block(guide, i), demo.url) for i in seed.needs]
    parts += [code, "# -- epilogue: calls the guide describes --\n" + textwrap.dedent(seed.epilogue)]
    output = run_script("\n\n".join(parts), tmp_path, demo, seed.timeout, seed.env)
    for text in seed.expect:
        assert text in output, f"{text!r} not in output:\n{output[-3000:]}"


@pytest.mark.slow
def test_testing_strategies_suite_passes_verbatim(demo: DemoServer, tmp_path: Path) -> None:
    """best-practices.md's "Testing Strategies" suite, verbatim, passes under pytest."""
    suite = block("best-practices", 9)
    # The guide's suite uses `requests` without importing it; that is the only line added.
    (tmp_path / "test_guide_suite.py").write_text("import requests\n\n" + suite)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_guide_suite.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SEED_BLOCKS[("best-practices", 9)].timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b9 passed\b", proc.stdout), proc.stdout[-2000:]


def test_urls_are_rewritten_to_loopback() -> None:
    """No seed script can reach the internet: every URL points at 127.0.0.1."""
    for path in seed_files():
        for code in python_blocks(path):
            for m in URL.finditer(point_at_demo(code, "http://127.0.0.1:1")):
                assert m["host"].startswith("127.0.0.1:"), m[0]


def test_prelude_shadows_nothing_a_block_defines() -> None:
    """The prelude only adds names a block uses without defining; it never replaces the guide's."""
    prelude_names = set(re.findall(r"^(?:def|class|async def) (\w+)", PRELUDE, re.MULTILINE))
    for path in seed_files():
        for code in python_blocks(path):
            defined = set(re.findall(r"^\s*(?:def|class|async def) (\w+)", code, re.MULTILINE))
            assert not (prelude_names & defined) - {"expensive_operation", "process_item"}, path.name


def test_only_templates_are_left_out() -> None:
    """The one seed block not run is a syntax template, not Python: it does not compile."""
    left_out = [key for key, seed in SEED_BLOCKS.items() if seed.skip]
    assert len(left_out) == 1
    for guide, index in left_out:
        with pytest.raises(SyntaxError):
            compile(block(guide, index), f"{guide}-{index}", "exec")
