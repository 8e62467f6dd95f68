"""Calling a language-model API over many prompts: who uses the token limit, who draws 429s.

The loopback demo server's ``/v1/chat/completions`` allows ``REQUESTS`` requests and
``TOKENS`` tokens per ``WINDOW`` seconds (a provider's per-minute limits, scaled to seconds),
answers ``usage.total_tokens`` and OpenAI-style ``x-ratelimit-*`` headers, and 429 with
``Retry-After`` above either limit. The same prompts of mixed length (50 to 4,000
characters) go through, side by side, in one run:

1. **opero**: ``rate_limit`` at the request limit, ``token_limit`` at the token limit,
   ``tokens=`` the upper-bound estimate (prompt tokens + ``max_tokens``), ``opero.charge``
   of ``usage.total_tokens`` and ``opero.observe`` of the headers; a thread map.
2. **request-only**: ``rate_limit`` at the request limit, nothing about tokens.
3. **cookbook**: the common script, written from its description: the client tracks requests
   and tokens per window itself and spends at most 50 % of each (headroom), and pauses 15 s
   after a 429 (scaled: a quarter of a window).
4. **tenacity** with a thread pool: retry on 429 with random exponential backoff.

Printed per strategy: time, served tokens as a share of what the token limit allowed over the
run, and the number of 429s. Target: opero at least 90 % of the token limit, at most 1 % 429s.

Run: ``python benchmarks/llm.py [N]`` (N prompts, default 2,000; ~1 min).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import opero
from opero.demo import DemoServer

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
REQUESTS, TOKENS, WINDOW = 200, 40000, 1.0
MAX_TOKENS = 200
WORKERS = 16
PAUSE = 15.0 / 60.0 * WINDOW  # the cookbook's 15 s after a 429, scaled to the window


def prompts(n: int) -> list[str]:
    """Mixed lengths: mostly short questions, some long documents."""
    rng = random.Random(7)
    return [("word " * rng.choice((10, 40, 100, 300, 800)))[: rng.randint(50, 4000)] for _ in range(n)]


def estimate(prompt: str) -> int:
    """An upper bound of one call's tokens: prompt tokens (4 characters each) + max_tokens."""
    return -(-len(prompt) // 4) + MAX_TOKENS


def post(url: str, prompt: str) -> urllib.request.Request:
    body = {"model": "demo", "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS}
    return urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )


def complete(prompt: str, url: str) -> dict[str, Any]:
    """One chat completion; an HTTPError (429 included) propagates."""
    with urllib.request.urlopen(post(url, prompt), timeout=30) as response:
        opero.observe(response)
        reply: dict[str, Any] = json.load(response)
    opero.charge(reply["usage"]["total_tokens"])
    return reply


def run_opero(url: str, items: list[str]) -> None:
    fn = opero.opmap(
        mode="thread",
        workers=WORKERS,
        progress=False,
        rate_limit=REQUESTS / WINDOW,
        token_limit=TOKENS / WINDOW,
        tokens=lambda prompt, url: estimate(prompt),
        retries=8,
    )(complete)
    fn(items, url)


def run_request_only(url: str, items: list[str]) -> None:
    fn = opero.opmap(mode="thread", workers=WORKERS, progress=False, rate_limit=REQUESTS / WINDOW, retries=8)(
        _complete_plain
    )
    fn(items, url)


def _complete_plain(prompt: str, url: str) -> dict[str, Any]:
    with urllib.request.urlopen(post(url, prompt), timeout=30) as response:
        return dict(json.load(response))


class Cookbook:
    """Client-side tracking of requests and tokens per window at 50 % headroom; a 15-s (scaled)
    pause after a 429."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: deque[tuple[float, int]] = deque()
        self.paused_until = 0.0

    def wait(self, cost: int) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                while self.sent and self.sent[0][0] < now - WINDOW:
                    self.sent.popleft()
                used = sum(c for _, c in self.sent)
                if (
                    now >= self.paused_until
                    and len(self.sent) < REQUESTS * 0.5
                    and used + cost <= TOKENS * 0.5
                ):
                    self.sent.append((now, cost))
                    return
            time.sleep(0.005)

    def call(self, url: str, prompt: str) -> None:
        for _ in range(20):
            self.wait(estimate(prompt))
            try:
                _complete_plain(prompt, url)
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise
                with self.lock:
                    self.paused_until = time.monotonic() + PAUSE


def run_cookbook(url: str, items: list[str]) -> None:
    book = Cookbook()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda p: book.call(url, p), items))


def run_tenacity(url: str, items: list[str]) -> None:
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

    @retry(
        retry=retry_if_exception(lambda e: isinstance(e, urllib.error.HTTPError) and e.code == 429),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        stop=stop_after_attempt(30),
    )
    def call(prompt: str) -> dict[str, Any]:
        return _complete_plain(prompt, url)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(call, items))


STRATEGIES: dict[str, Callable[[str, list[str]], None]] = {
    "opero token_limit + charge": run_opero,
    "request-only limiter": run_request_only,
    "cookbook (50 % headroom)": run_cookbook,
    "tenacity + thread pool": run_tenacity,
}


def main() -> None:
    items = prompts(N)
    print(f"{N} prompts; limits {REQUESTS} requests and {TOKENS} tokens per {WINDOW:g} s window")
    print(f"{'strategy':<28} {'seconds':>8} {'token use':>10} {'429s':>6}")
    for name, run in STRATEGIES.items():
        with DemoServer(llm_requests=REQUESTS, llm_tokens=TOKENS, llm_window=WINDOW) as server:
            time.sleep(WINDOW)  # full buckets for everyone
            began = time.monotonic()
            run(server.url + "/v1/chat/completions", items)
            took = time.monotonic() - began
            use = server.chat.usage()
            print(f"{name:<28} {took:8.1f} {use['token_use']:10.1%} {use['throttled']:6d}")


if __name__ == "__main__":
    main()
