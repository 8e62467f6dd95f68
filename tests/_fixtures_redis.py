"""A throwaway redis-server for the session (issue 3): ``redis_server.url/.port/.stop()/.start()``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._redis import RedisServer, find_redis_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, stopped by PID at the end of the session."""
    from tests.conftest import require

    binary = find_redis_server(install=True)
    require(binary is not None, "redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    server = RedisServer(binary).start()
    try:
        yield server
    finally:
        server.close()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter (repo on the path); return its stdout, fail on error."""
    import os
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)
    full_env = {**os.environ, "PYTHONPATH": root, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=root
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
