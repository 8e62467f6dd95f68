"""Tests for the loopback demo API in ``opero.demo`` (talks only to 127.0.0.1)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opero.demo import (
    DemoServer,
    first_attempt_fails,
    geocode,
    item_value,
    start_demo_server,
)

ROOT = Path(__file__).resolve().parents[2]


class Reply:
    """Status, headers and raw body of one HTTP exchange."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body.decode("utf-8"))


def call(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Reply:
    """Perform a request with urllib and return the reply, even for 4xx/5xx."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return Reply(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, dict(err.headers.items()), err.read())


@pytest.fixture
def server() -> Iterator[DemoServer]:
    """Start a fresh demo server with seed 0, 50 % first-attempt failures, 5 req/s."""
    with DemoServer(seed=0, fail_rate=0.5, rate_limit=5) as srv:
        yield srv


def test_url_points_to_loopback(server: DemoServer) -> None:
    """The URL is http://127.0.0.1:<bound port>."""
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0
    assert server.running


def test_health(server: DemoServer) -> None:
    """GET /health answers 200 {"status": "ok"} as JSON."""
    reply = call(server.url + "/health")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"status": "ok"}


def test_item_first_attempt_fails_then_succeeds(server: DemoServer) -> None:
    """Ids selected by the rule fail once with 500, then succeed; others never fail."""
    ids = [str(i) for i in range(20)]
    failing = [i for i in ids if first_attempt_fails(i, seed=0, fail_rate=0.5)]
    passing = [i for i in ids if i not in failing]
    assert failing
    assert passing
    for item_id in failing:
        first = call(f"{server.url}/item/{item_id}")
        assert first.status == 500
        assert first.json() == {
            "error": "transient failure",
            "id": item_id,
            "attempt": 1,
        }
        second = call(f"{server.url}/item/{item_id}")
        assert second.status == 200
        assert second.json()["attempt"] == 2
    for item_id in passing:
        reply = call(f"{server.url}/item/{item_id}")
        assert reply.status == 200
        assert reply.json() == {
            "id": item_id,
            "value": item_value(item_id),
            "name": f"item-{item_id}",
            "attempt": 1,
        }


def test_reset_forgets_attempts(server: DemoServer) -> None:
    """After reset() the first attempt for a failing id fails again."""
    item_id = next(str(i) for i in range(100) if first_attempt_fails(str(i), fail_rate=0.5))
    assert call(f"{server.url}/item/{item_id}").status == 500
    assert call(f"{server.url}/item/{item_id}").status == 200
    server.reset()
    assert server.stats["requests"] == 0
    assert call(f"{server.url}/item/{item_id}").status == 500


def test_slow_sleeps_and_caps(server: DemoServer) -> None:
    """GET /slow?delay=0.1 sleeps about 0.1 s; bad delays give 400."""
    start = time.perf_counter()
    reply = call(server.url + "/slow?delay=0.1")
    assert time.perf_counter() - start >= 0.1
    assert reply.status == 200
    assert reply.json() == {"slept": 0.1}
    assert call(server.url + "/slow?delay=abc").status == 400


def test_flaky_extremes(server: DemoServer) -> None:
    """GET /flaky with p=0 always succeeds and with p=1 always fails."""
    ok = call(server.url + "/flaky?p=0")
    assert ok.status == 200
    assert ok.json() == {"ok": True, "p": 0.0}
    bad = call(server.url + "/flaky?p=1")
    assert bad.status == 500
    assert bad.json()["error"] == "flaky failure"


def test_flaky_is_seeded() -> None:
    """Two servers with the same seed produce the same /flaky outcomes."""
    outcomes = []
    for _ in range(2):
        with DemoServer(seed=3) as srv:
            outcomes.append([call(srv.url + "/flaky?p=0.5").status for _ in range(12)])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 500}


def test_status_codes(server: DemoServer) -> None:
    """GET /status/<code> answers with that code and {"status": code}."""
    for code in (200, 404, 418, 503):
        reply = call(f"{server.url}/status/{code}")
        assert reply.status == code
        assert reply.json() == {"status": code}
    assert call(server.url + "/status/abc").status == 400


def test_limited_429_then_recovers(server: DemoServer) -> None:
    """Hammering /limited beyond 5 req/s gives 429 + Retry-After, then 200 again."""
    replies = [call(f"{server.url}/limited/{i}") for i in range(8)]
    statuses = [r.status for r in replies]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    assert replies[0].json() == {"id": "0", "value": item_value("0")}
    limited = next(r for r in replies if r.status == 429)
    retry_after = float(limited.headers["Retry-After"])
    assert 0 < retry_after <= 0.2
    assert limited.json() == {"error": "rate limited", "retry_after": retry_after}
    time.sleep(retry_after + 0.02)
    assert call(f"{server.url}/limited/again").status == 200
    assert server.stats["rate_limited"] == statuses.count(429)


def test_limited_unlimited_by_default() -> None:
    """Without rate_limit, /limited never answers 429."""
    with DemoServer() as srv:
        assert {call(f"{srv.url}/limited/{i}").status for i in range(15)} == {200}


def test_secure_key_handling(server: DemoServer) -> None:
    """/secure accepts valid keys and refuses revoked, unknown and missing keys."""
    url = server.url + "/secure/7"
    for key in ("key-good", "key-backup"):
        reply = call(url, headers={"Authorization": f"Bearer {key}"})
        assert reply.status == 200
        assert reply.json() == {"id": "7", "key": key}
    for key in ("key-revoked", "nope"):
        reply = call(url, headers={"Authorization": f"Bearer {key}"})
        assert reply.status == 401
        assert reply.json() == {"error": "invalid key"}
    missing = call(url)
    assert missing.status == 401
    assert missing.json() == {"error": "missing key"}
    assert server.stats["unauthorized"] == 3


def test_secure_custom_keys() -> None:
    """valid_keys replaces the accepted keys; key-revoked stays refused."""
    with DemoServer(valid_keys=("alpha", "key-revoked")) as srv:
        url = srv.url + "/secure/1"
        assert call(url, headers={"Authorization": "Bearer alpha"}).status == 200
        assert call(url, headers={"Authorization": "Bearer key-good"}).status == 401
        assert call(url, headers={"Authorization": "Bearer key-revoked"}).status == 401


def test_geocode(server: DemoServer) -> None:
    """/geocode is deterministic, 404s on "nowhere", 400s without address."""
    address = "1 Main St"
    query = urllib.parse.quote(address)
    first = call(f"{server.url}/geocode?address={query}")
    if first_attempt_fails(address, fail_rate=0.5, namespace="geocode"):
        assert first.status == 500
        first = call(f"{server.url}/geocode?address={query}")
    assert first.status == 200
    lat, lon = geocode(address)
    assert first.json() == {"address": address, "lat": lat, "lon": lon}
    assert -90 <= lat < 90
    assert -180 <= lon < 180
    assert call(f"{server.url}/geocode?address=Nowhere+Land").status == 404
    assert call(f"{server.url}/geocode").status == 400


def test_user_agent_and_html(server: DemoServer) -> None:
    """/user-agent echoes the header; /html 403s OperoBot and serves others."""
    ua = call(server.url + "/user-agent", headers={"User-Agent": "Tester/1"})
    assert ua.json() == {"user-agent": "Tester/1"}
    blocked = call(server.url + "/html/3", headers={"User-Agent": "OperoBot/1.0"})
    assert blocked.status == 403
    page = call(server.url + "/html/3", headers={"User-Agent": "Mozilla/5.0"})
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<title>Page 3</title>" in page.body.decode()


def test_delay(server: DemoServer) -> None:
    """/delay/<n> returns {"delay": n} after n * delay_scale seconds."""
    start = time.perf_counter()
    reply = call(server.url + "/delay/2")
    assert time.perf_counter() - start >= 0.02
    assert reply.status == 200
    assert reply.json() == {"delay": 2}


def test_users_and_preferences(server: DemoServer) -> None:
    """/users/<id> and /users/<id>/preferences return stable JSON."""
    user = call(server.url + "/users/user123")
    assert user.status == 200
    body = user.json()
    assert body["id"] == "user123"
    assert body["name"] == "User user123"
    assert call(server.url + "/users/user123").json() == body
    prefs = call(server.url + "/users/user123/preferences").json()
    assert prefs["user_id"] == "user123"
    assert prefs["theme"] in {"light", "dark"}
    assert isinstance(prefs["notifications"], bool)


def test_post_echo(server: DemoServer) -> None:
    """POST /data and POST /anything echo the JSON body."""
    payload = json.dumps({"key": "value"}).encode()
    headers = {"Content-Type": "application/json"}
    for path in ("/data", "/anything/else"):
        reply = call(server.url + path, data=payload, headers=headers)
        assert reply.status == 200
        assert reply.json() == {
            "path": path,
            "json": {"key": "value"},
            "data": '{"key": "value"}',
        }


def test_unknown_path_is_json_404(server: DemoServer) -> None:
    """Unknown paths answer 404 with a JSON error."""
    reply = call(server.url + "/no/such/thing")
    assert reply.status == 404
    assert reply.json() == {"error": "not found", "path": "/no/such/thing"}


def test_stats_counters(server: DemoServer) -> None:
    """The stats property counts requests, endpoints and 401/429/500 statuses."""
    call(server.url + "/health")
    call(server.url + "/health")
    call(server.url + "/status/500")
    call(server.url + "/secure/1")
    call(server.url + "/missing")
    stats = server.stats
    assert stats["requests"] == 5
    assert stats["endpoints"] == {"health": 2, "status": 1, "secure": 1, "unknown": 1}
    assert stats["status"] == {200: 2, 500: 1, 401: 1, 404: 1}
    assert stats["server_errors"] == 1
    assert stats["unauthorized"] == 1
    assert stats["rate_limited"] == 0


def test_stop_frees_port() -> None:
    """After stop() the port can be bound again and the server no longer answers."""
    srv = start_demo_server()
    port = srv.port
    assert call(srv.url + "/health").status == 200
    srv.stop()
    assert not srv.running
    with pytest.raises(RuntimeError):
        _ = srv.url
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
    srv.stop()  # idempotent


def test_latency_applies_to_every_request() -> None:
    """A latency delays every response by at least that many seconds."""
    with DemoServer(latency=0.05) as srv:
        start = time.perf_counter()
        assert call(srv.url + "/health").status == 200
        assert time.perf_counter() - start >= 0.05


def test_module_entry_point_serves_until_interrupted() -> None:
    """Running ``python -m opero.demo --port 0`` prints its URL, serves, and stops on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opero.demo", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first_line = proc.stdout.readline()
        assert first_line.startswith("opero demo server running at http://127.0.0.1:")
        url = first_line.rsplit(" ", 1)[-1].strip()
        assert call(url + "/health").json() == {"status": "ok"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
