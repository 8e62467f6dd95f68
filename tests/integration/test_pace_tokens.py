"""Token budgets, charge(), token_budget and max_concurrency, shared at every level."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

import opero
from tests._helpers import remove_scope_files, run_threads, serve_loopback, wiped_redis_server  # noqa: F401
from tests._redis import RedisServer

ROOT = str(Path(__file__).resolve().parents[2])


def _cost(text: str) -> int:
    return len(text)


@opero.opmap(mode="process", workers=3, progress=False, token_limit="1000/s", tokens=lambda text: len(text))
def _paced_in_workers(text: str) -> float:
    return time.monotonic()


def test_process_workers_share_the_token_budget() -> None:
    """3 process workers draw on one budget: 12 items of 100 units at 1000/s span >= 1.1 s."""
    starts = sorted(_paced_in_workers(["y" * 100] * 12))
    assert starts[-1] - starts[0] >= 1.09


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_host_wide_scope_shares_token_budget_across_processes() -> None:
    """Two unrelated processes naming one scope share its token_budget: 10 successes in total."""
    scope = f"pace-budget-{os.getpid()}"
    remove_scope_files(scope)
    body = f"""
        import opero
        @opero.opero(rate_limit_scope={scope!r}, token_budget=1000, tokens=lambda: 100, retries=0)
        def call():
            return 1
        ok = 0
        for _ in range(10):
            try:
                ok += call()
            except opero.BudgetExhausted:
                pass
        print(ok)
    """
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [subprocess.Popen(_script(body), env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [int(p.communicate(timeout=60)[0]) for p in procs]
    remove_scope_files(scope)
    assert sum(outs) == 10


def test_redis_shares_token_budget_and_rate_across_processes(redis_server: RedisServer) -> None:
    """Over redis, two processes share one token_budget (10 in total) and one token rate."""
    body = f"""
        import time, opero
        @opero.opero(rate_limit_scope="pace-redis", rate_limit_backend="redis", token_limit="1000/s",
                     token_budget=1000, tokens=lambda: 100, retries=0,
                     cache_backend_config={{"url": {redis_server.url!r}}})
        def call():
            return time.monotonic()
        ok = []
        for _ in range(10):
            try:
                ok.append(call())
            except opero.BudgetExhausted:
                pass
        print(len(ok), min(ok) if ok else 0, max(ok) if ok else 0)
    """
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [subprocess.Popen(_script(body), env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    rows = [p.communicate(timeout=60)[0].split() for p in procs]
    assert sum(int(r[0]) for r in rows) == 10
    span = max(float(r[2]) for r in rows) - min(float(r[1]) for r in rows if int(r[0]))
    assert span >= 0.85  # 10 grants of 0.1 s each on the server's clock


# -- max_concurrency ------------------------------------------------------------------------


class _Peak:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0


@pytest.fixture
def peak_server() -> Iterator[tuple[str, _Peak]]:
    """A loopback server that counts requests in flight (each takes 50 ms)."""
    peak = _Peak()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with peak.lock:
                peak.now += 1
                peak.peak = max(peak.peak, peak.now)
            time.sleep(0.05)
            with peak.lock:
                peak.now -= 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    with serve_loopback(Handler) as url:
        yield f"{url}/", peak


def _fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def test_max_concurrency_caps_threads_server_side(peak_server: tuple[str, _Peak]) -> None:
    """8 threads, max_concurrency=3: the server never sees more than 3 requests at once."""
    url, peak = peak_server
    call = opero.opero(max_concurrency=3)(_fetch)
    run_threads(8, lambda: [call(url) for _ in range(4)])
    assert peak.peak == 3
    assert call.stats["max_concurrency"] == 3
    assert call.stats["concurrency_in_flight"] == 0


def test_max_concurrency_on_redis_caps_threads(
    peak_server: tuple[str, _Peak], redis_server: RedisServer
) -> None:
    """max_concurrency=2 held on redis leases: 6 threads, never more than 2 at the server."""
    url, peak = peak_server
    config = {"url": redis_server.url}
    call = opero.opero(max_concurrency=2, rate_limit_backend="redis", cache_backend_config=config)(_fetch)
    run_threads(6, lambda: [call(url) for _ in range(3)])
    assert peak.peak == 2
    assert call.stats["concurrency_in_flight"] == 0


def test_max_concurrency_caps_process_workers(peak_server: tuple[str, _Peak]) -> None:
    """4 process workers, max_concurrency=2: at most 2 in flight at the server."""
    url, peak = peak_server
    fetch = opero.opmap(mode="process", workers=4, progress=False, max_concurrency=2)(_fetch)
    assert fetch([url] * 16) == ["ok"] * 16
    assert peak.peak == 2


def _holder(scope: str, redis_url: str | None = None) -> subprocess.Popen[str]:
    """A process holding the scope's only slot (redis: with a 2-s lease) until it is killed."""
    backend = (
        ""
        if redis_url is None
        else f", rate_limit_backend='redis', cache_backend_config={{'url': {redis_url!r}}}"
    )
    body = f"""
        import time, opero, opero.stores.redis
        opero.stores.redis.LEASE = 2.0
        @opero.opero(rate_limit_scope={scope!r}, max_concurrency=1{backend})
        def hold():
            print("holding", flush=True)
            time.sleep(600)
        hold()
    """
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(_script(body), env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_killed_holder_slot_returns_at_once_on_this_host() -> None:
    """A SIGKILLed process's host-wide slot is free again at once."""
    scope = f"pace-slot-{os.getpid()}"
    remove_scope_files(scope)
    holder = _holder(scope)
    call = opero.opero(rate_limit_scope=scope, max_concurrency=1)(lambda: time.monotonic())
    try:
        blocked = threading.Thread(target=call)
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()  # the slot is held
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        blocked.join(5)
        assert not blocked.is_alive()
        assert time.monotonic() - killed < 0.5
    finally:
        holder.kill()
        remove_scope_files(scope)


def test_killed_holder_lease_returns_on_redis(redis_server: RedisServer) -> None:
    """On redis a dead holder's slot returns when its lease ends (shortened to 2 s here)."""
    holder = _holder("pace-lease", redis_server.url)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    began = time.monotonic()
    call = opero.opero(
        rate_limit_scope="pace-lease",
        max_concurrency=1,
        rate_limit_backend="redis",
        cache_backend_config={"url": redis_server.url},
    )(lambda: time.monotonic())
    granted = call()
    assert 0.5 < granted - began < 6.0


# -- the LLM-shaped demo endpoint -----------------------------------------------------------


def test_demo_chat_endpoint_reports_usage_and_openai_headers() -> None:
    """/v1/chat/completions answers usage.total_tokens and x-ratelimit-* headers; 429 when spent."""
    import json
    import urllib.error
    import urllib.request

    from opero.demo import DemoServer

    body = json.dumps({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}).encode()
    with DemoServer(llm_requests=2, llm_tokens=100000, llm_window=60) as server:
        url = server.url + "/v1/chat/completions"
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")) as r:
            reply = json.load(r)
            reading = opero.observe(r)
        usage = reply["usage"]
        assert usage["prompt_tokens"] == 100
        assert (
            usage["total_tokens"] == 100 + usage["completion_tokens"]
            and 1 <= usage["completion_tokens"] <= 50
        )
        assert (
            reading.requests is not None and reading.requests.limit == 2 and reading.requests.remaining == 1
        )
        assert reading.tokens is not None and reading.tokens.remaining == 100000 - usage["total_tokens"]
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")).close()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"))
        assert info.value.code == 429
        assert 25 <= float(info.value.headers["Retry-After"]) <= 31  # one request refills in 30 s
        assert server.chat.usage()["throttled"] == 1


def test_token_limit_with_charge_uses_the_demo_token_limit() -> None:
    """300 prompts through token_limit + charge: >= 80 % of the token limit, <= 1 % 429s."""
    import json
    import random
    import urllib.request

    from opero.demo import DemoServer

    rng = random.Random(3)
    prompts = ["w" * rng.randint(50, 3000) for _ in range(300)]

    def complete(prompt: str, url: str) -> int:
        body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": 100}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as r:
            opero.observe(r)
            total = int(json.load(r)["usage"]["total_tokens"])
        opero.charge(total)
        return total

    with DemoServer(llm_requests=100, llm_tokens=20000, llm_window=1.0) as server:
        time.sleep(1.0)
        fn = opero.opmap(
            mode="thread",
            workers=12,
            progress=False,
            rate_limit=100,
            token_limit="20000/s",
            tokens=lambda prompt, url: -(-len(prompt) // 4) + 100,
            retries=8,
        )(complete)
        results = fn(prompts, server.url + "/v1/chat/completions")
        use = server.chat.usage()
    assert all(isinstance(r, int) for r in results)
    assert use["throttled"] <= 3
    assert use["token_use"] >= 0.8


@opero.opmap(mode="process", workers=3, progress=False, token_budget=1000, tokens=lambda text: len(text))
def _budgeted_in_workers(text: str) -> str:
    return text


def test_threads_share_the_token_budget() -> None:
    """8 threads x 5 calls of 100 units at 2000/s take at least 39 x 0.05 s."""

    @opero.opero(token_limit=2000, tokens=lambda: 100)
    def call() -> None:
        pass

    began = time.monotonic()
    run_threads(8, lambda: [call() for _ in range(5)])
    assert time.monotonic() - began >= 39 * 0.05 - 0.01


def test_token_budget_caps_total_spend_and_map_items_hold_it() -> None:
    """token_budget=1000 with 100-unit items across process workers: exactly 10 run."""
    results = _budgeted_in_workers(["z" * 100] * 16)
    done = [r for r in results if r == "z" * 100]
    held = [r for r in results if isinstance(r, opero.BudgetExhausted)]
    assert (len(done), len(held)) == (10, 6)
