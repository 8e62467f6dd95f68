"""batch_size with token_limit and max_concurrency: one token and one slot per batch call,
``tokens`` summed over the batch's items (SPEC §5a)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

import opero
from opero import BudgetExhausted, opmap
from tests._enrich_server import embed_texts as embed
from tests._helpers import serve_loopback


class _Log:
    """What the loopback embedding endpoint saw: arrival times, batch sizes, peak in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.sizes: list[int] = []
        self.now = 0
        self.peak = 0


@pytest.fixture
def embed_server() -> Iterator[tuple[str, _Log]]:
    """POST /embed with a JSON list of texts: ``[len(text), 1.0]`` each, after 30 ms."""
    log = _Log()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with log.lock:
                log.arrivals.append(time.monotonic())
                log.sizes.append(len(texts))
                log.now += 1
                log.peak = max(log.peak, log.now)
            time.sleep(0.03)
            with log.lock:
                log.now -= 1
            data = json.dumps([[float(len(t)), 1.0] for t in texts]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    with serve_loopback(Handler) as url:
        yield f"{url}", log


def embed_charged(texts: list[str], url: str) -> list[list[float]]:
    """embed, reporting half of the estimate as the real cost of the request."""
    opero.charge(sum(len(t) for t in texts) / 2)
    return embed(texts, url)


def text_tokens(texts: str, url: str) -> int:
    """The per-item estimate: one token per character (``texts`` holds one item here)."""
    return len(texts)


def _texts(n: int) -> list[str]:
    # 10 to 49 characters each: batches of different total cost
    return ["y" * (10 + (7 * i) % 40) for i in range(n)]


@pytest.mark.parametrize("mode", ["thread", "async"])
def test_token_spacing_follows_the_summed_tokens_of_each_batch(
    mode: str, embed_server: tuple[str, _Log]
) -> None:
    """token_limit=2000/s, batches of 5: requests are spaced by their summed tokens, all counted."""
    url, log = embed_server
    texts = _texts(40)
    fn = opmap(mode=mode, batch_size=5, workers=4, progress=False, token_limit="2000/s", tokens=text_tokens)(
        embed
    )
    began = time.monotonic()
    out = fn(texts, url)
    took = time.monotonic() - began
    assert out == [[float(len(t)), 1.0] for t in texts]
    assert log.sizes == [5] * 8  # one request per batch
    total = sum(len(t) for t in texts)
    assert fn.stats["tokens_used"] == total
    # GCRA with a cost: the last request starts once the first seven batches' tokens passed
    batch_costs = sorted(sum(len(t) for t in texts[i : i + 5]) for i in range(0, 40, 5))
    least = sum(batch_costs[:7]) / 2000  # whatever order the batches went in
    span = log.arrivals[-1] - log.arrivals[0]
    assert span >= least * 0.9
    assert took < 3 * (total / 2000) + 1.0
    # per-item spacing (tokens of one item, not of the batch) would have let them start at once
    assert least > 0.5


def test_charge_in_a_batch_call_corrects_the_summed_estimate(embed_server: tuple[str, _Log]) -> None:
    """charge() inside the batch call replaces the batch's summed estimate: half is counted."""
    url, _ = embed_server
    texts = _texts(20)
    fn = opmap(batch_size=10, workers=2, progress=False, token_limit="100000/s", tokens=text_tokens)(
        embed_charged
    )
    assert len(fn(texts, url)) == 20
    assert fn.stats["tokens_used"] == sum(len(t) for t in texts) / 2


@pytest.mark.parametrize("mode", ["thread", "async", "process"])
def test_batch_calls_in_flight_never_exceed_max_concurrency(
    mode: str, embed_server: tuple[str, _Log]
) -> None:
    """8 workers, max_concurrency=2, 12 batches of 4: exactly 2 requests at most in flight."""
    url, log = embed_server
    fn = opmap(mode=mode, batch_size=4, workers=8, progress=False, max_concurrency=2)(embed)
    texts = _texts(48)
    assert fn(texts, url) == [[float(len(t)), 1.0] for t in texts]
    assert log.sizes == [4] * 12
    assert log.peak == 2
    assert fn.stats["max_concurrency"] == 2
    assert fn.stats["concurrency_in_flight"] == 0


def test_process_workers_sum_the_tokens_of_their_batches(embed_server: tuple[str, _Log]) -> None:
    """Process workers draw on the parent's token budget with the summed estimate."""
    url, _ = embed_server
    texts = _texts(24)
    fn = opmap(
        mode="process", batch_size=6, workers=2, progress=False, token_limit="100000/s", tokens=text_tokens
    )(embed)
    assert len(fn(texts, url)) == 24
    assert fn.stats["tokens_used"] == sum(len(t) for t in texts)


def test_token_budget_counts_summed_batch_estimates(embed_server: tuple[str, _Log]) -> None:
    """token_budget=200 covers 2 batches of 5 items of 20 tokens: 10 answered, 10 BudgetExhausted."""
    url, log = embed_server
    texts = [f"{i:02d}" + "z" * 18 for i in range(20)]
    fn = opmap(batch_size=5, workers=1, progress=False, token_budget=200, tokens=text_tokens)(embed)
    out = fn(texts, url)
    answered = [r for r in out if not isinstance(r, BaseException)]
    assert len(answered) == 10
    assert all(isinstance(r, BudgetExhausted) for r in out[10:])
    assert log.sizes == [5, 5]
    assert fn.stats["tokens_used"] == 200


def test_a_bound_method_sums_the_items_after_self(embed_server: tuple[str, _Log]) -> None:
    """A batch method: the batch follows ``self``, and tokens is still summed per item."""
    url, _ = embed_server

    class Client:
        @opmap(
            batch_size=4,
            workers=2,
            progress=False,
            token_limit="100000/s",
            tokens=lambda self, texts: len(texts),
        )
        def embed(self, texts: list[str]) -> list[list[float]]:
            return embed(texts, url)

    client = Client()
    texts = _texts(8)
    assert len(client.embed(texts)) == 8
    assert Client.embed.stats["tokens_used"] == sum(len(t) for t in texts)
