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
from pathlib import Path

import pytest

from opero.demo import DemoServer
from tests.conftest import require
from tests.shared.seeds import HERE, PRELUDE, SEED_BLOCKS, block, python_blocks, seed_files

URL = re.compile(r"https?://(?P<host>[^/\"'\s]+)(?P<path>[^\"'\s]*)")


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
