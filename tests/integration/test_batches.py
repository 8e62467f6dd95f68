"""batch_size=N: one request per batch, results per item, cache and dedupe per item, bisection."""

from __future__ import annotations

import asyncio
import math
import urllib.error
from typing import Any

import pandas as pd
import pytest

from opero import AllFailedError, opmap
from tests._enrich_server import CountingServer, embed_texts


async def aembed_texts(texts: list[str], url: str) -> list[list[float]]:
    """embed_texts from an async def function."""
    return await asyncio.to_thread(embed_texts, texts, url)


def _texts(n: int, poison: int | None = None) -> list[str]:
    return ["x" * 80 if i == poison else f"text {i}" for i in range(n)]


def test_one_poison_row_fails_alone_at_about_log2_extra_requests() -> None:
    """10,000 rows, one over-long, batch_size=100: ~100 + 2·log2(100) requests, 9,999 vectors.

    (retries=0: the 400 is permanent; with retries each failing batch call is retried first.)
    """
    texts = _texts(10_000, poison=4321)
    with CountingServer(delay=0.0) as server:
        embed = opmap(batch_size=100, workers=8, retries=0, progress=False)(embed_texts)
        out = embed(texts, server.url)
        requests = server.requests("/embed")
        assert max(server.batch_sizes) == 100
    assert 100 < requests <= 100 + 2 * math.ceil(math.log2(100))
    assert len(out) == 10_000
    good = [v for v in out if not isinstance(v, BaseException)]
    assert len(good) == 9_999
    assert out[0] == [6.0, 1.0]
    assert isinstance(out[4321], AllFailedError)
    assert isinstance(out[4321].__cause__, urllib.error.HTTPError)
    assert out[4321].__cause__.code == 400
    assert len(embed.failures()) == 1


@pytest.mark.parametrize(
    ("mode", "func"),
    [
        ("thread", embed_texts),
        ("async", embed_texts),
        ("async", aembed_texts),
        ("process", embed_texts),
        ("async_process", aembed_texts),
    ],
    ids=["thread", "async-sync-fn", "async-def", "process", "async_process"],
)
def test_every_mode_sends_one_request_per_batch(mode: str, func: Any) -> None:
    """1,000 items at batch_size=100 cost 10 requests in every mode, results in order."""
    texts = _texts(1000)
    with CountingServer(delay=0.0) as server:
        embed = opmap(batch_size=100, mode=mode, workers=2, progress=False)(func)
        out = embed(texts, server.url)
        if asyncio.iscoroutine(out):
            out = asyncio.run(out)
        assert server.requests("/embed") == 10
    assert out == [[float(len(t)), 1.0] for t in texts]


def test_cache_and_duplicates_are_per_item_before_batching() -> None:
    """Only missing, distinct items are sent: duplicates once, cached items never again."""
    with CountingServer(delay=0.0) as server:
        embed = opmap(batch_size=10, cache=True, workers=2, progress=False)(embed_texts)
        first = embed(["a", "b", "a", "c", "b"], server.url)
        assert server.batch_sizes == [3]
        second = embed(["c", "d", "a", "e"], server.url)
        assert server.batch_sizes == [3, 2]
    assert first == [[1.0, 1.0]] * 5
    assert second == [[1.0, 1.0]] * 4
    assert embed.stats.cache_hits == 2 + 2  # the duplicates, then "c" and "a"
    assert embed.stats.attempts == 2  # one per request
    assert embed.stats.in_flight == 0


def test_imap_streams_batches_from_a_generator() -> None:
    """imap over a generator of 10,000 items yields every result in order, 100 per request."""
    with CountingServer(delay=0.0) as server:
        embed = opmap(batch_size=100, workers=4, progress=False)(embed_texts)
        out = list(embed.imap((f"t{i}" for i in range(10_000)), server.url))
        assert server.requests("/embed") == 100
    assert out[-1] == [float(len("t9999")), 1.0]
    assert len(out) == 10_000


def test_pipe_adds_one_column_of_vectors() -> None:
    """df.pipe(embed, "text") with batch_size=100 adds embed_texts and its error column."""
    df = pd.DataFrame({"text": _texts(250, poison=7)}, index=range(1000, 1250))
    with CountingServer(delay=0.0) as server:
        embed = opmap(batch_size=100, retries=0, progress=False)(embed_texts)
        out = df.pipe(embed, "text", server.url)
    assert list(out.columns) == ["text", "embed_texts", "embed_texts_error"]
    assert out.loc[1000, "embed_texts"] == [6.0, 1.0]
    assert out["embed_texts_error"].notna().sum() == 1
    assert isinstance(out.loc[1007, "embed_texts_error"], AllFailedError)
    assert list(out.index) == list(df.index)
