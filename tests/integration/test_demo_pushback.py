"""The demo API's pushback modes (429 above the limit on every endpoint, an outage window)
and the ``make demo`` runs built on them (issue 13.5)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from opero.demo import DemoServer
from opero.demo.pushback import adaptive_run, outage_run


def _fetch(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.load(exc)


def test_limit_all_answers_429_with_retry_after_on_every_endpoint() -> None:
    """Above rate_limit (bucket of `burst`), any endpoint answers 429 + Retry-After; /health never."""
    with DemoServer(fail_rate=0.0, rate_limit=2, limit_all=True, burst=2) as server:
        codes = [_fetch(f"{server.url}/item/{i}")[0] for i in range(3)]
        assert codes == [200, 200, 429]
        status, headers, body = _fetch(f"{server.url}/users/1")
        assert status == 429
        assert 0 < float(headers["Retry-After"]) <= 0.5
        assert body["error"] == "rate limited"
        assert _fetch(f"{server.url}/health")[0] == 200
        time.sleep(0.6)  # one token back at 2/s
        assert _fetch(f"{server.url}/item/9")[0] == 200
        assert server.stats["rate_limited"] == 2


def test_limited_endpoint_is_unchanged_without_limit_all() -> None:
    """Only /limited is limited by default (existing behaviour)."""
    with DemoServer(fail_rate=0.0, rate_limit=1) as server:
        assert [_fetch(f"{server.url}/item/{i}")[0] for i in range(5)] == [200] * 5
        assert [_fetch(f"{server.url}/limited/{i}")[0] for i in range(2)] == [200, 429]


def test_outage_window_answers_503_then_recovers() -> None:
    """outage(0.4, retry_after=1): 503 + Retry-After: 1 meanwhile, counted; then normal again."""
    with DemoServer(fail_rate=0.0) as server:
        server.outage(0.4, retry_after=1.0)
        assert server.down
        status, headers, body = _fetch(f"{server.url}/item/1")
        assert (status, headers["Retry-After"], body) == (503, "1", {"error": "outage"})
        assert _fetch(f"{server.url}/health")[0] == 200
        time.sleep(0.5)
        assert not server.down
        assert _fetch(f"{server.url}/item/1")[0] == 200
        assert server.stats["outage"] == 1


def test_outage_can_start_later_and_be_any_5xx() -> None:
    """start= delays the window; status= picks the code; bad arguments are refused."""
    with DemoServer(fail_rate=0.0) as server:
        server.outage(5.0, start=0.3, status=502)
        assert _fetch(f"{server.url}/item/1")[0] == 200
        time.sleep(0.35)
        assert _fetch(f"{server.url}/item/1")[0] == 502
        with pytest.raises(ValueError, match="5xx"):
            server.outage(1.0, status=404)


@pytest.mark.slow
def test_demo_adaptive_run_follows_the_server_down() -> None:
    """make demo, run 3: started at 4x the limit, opero ends near it and every item succeeds."""
    run = adaptive_run(n_items=400, server_rate=100.0, start=400.0)
    assert run["ok"] == 400 and run["failed"] == 0
    assert run["rejected"] > 0  # the server pushed back ...
    assert run["events"] and min(rate for _, rate in run["events"]) < 200  # ... and opero cut
    assert run["final_rate"] < 200


@pytest.mark.slow
def test_demo_outage_run_opens_and_closes_the_breaker() -> None:
    """make demo, run 4: few requests while down, the breaker opens then closes, no item lost."""
    run = outage_run(n_items=300, down=1.0)
    states = [state for _, state in run["events"]]
    assert run["ok"] == 300 and run["failed"] == 0
    assert states[0] == "open" and states[-1] == "closed"
    assert "half_open" in states
    assert run["outage_requests"] <= 5 + states.count("half_open") + 16


def test_command_line_server_has_the_pushback_modes() -> None:
    """python -m opero.demo --limit-all --outage START SECONDS serves both modes."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opero.demo",
            "--port",
            "0",
            "--limit-all",
            "--rate-limit",
            "1",
            "--outage",
            "0.5",
            "30",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        assert _fetch(f"{url}/item/1")[0] == 200
        assert _fetch(f"{url}/item/2")[0] == 429  # --limit-all at 1/s, bucket of 1
        time.sleep(0.6)
        assert _fetch(f"{url}/item/3")[0] == 503  # the outage began 0.5 s after start-up
    finally:
        proc.terminate()
        proc.wait(timeout=10)
