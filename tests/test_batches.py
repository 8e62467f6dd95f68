"""batch_size=N: one request per batch, results per item, cache and dedupe per item, bisection."""

from __future__ import annotations

import asyncio
import itertools
import math
import urllib.error
from typing import Any

import pandas as pd
import pytest

from opero import AllFailedError, ConfigurationError, opmap
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


def test_progress_counts_items() -> None:
    """A batch map's progress runs to its number of items, with the failed ones counted."""
    from opero._progress import subscribe_progress

    @opmap(batch_size=10, retries=0, progress=True)
    def tens(values: list[int]) -> list[Any]:
        return [ValueError("seven") if v == 7 else v for v in values]

    seen: list[tuple[Any, ...]] = []
    unsubscribe = subscribe_progress(lambda *a: seen.append(a))
    try:
        tens(range(35))
    finally:
        unsubscribe()
    _, _, done, total, failed, finished = seen[-1]
    assert (done, total, failed, finished) == (35, 35, 1, True)


def test_exceptions_in_the_returned_list_fail_only_their_items() -> None:
    """An exception instance in the returned list fails that item; the batch is not split."""
    calls = itertools.count()

    @opmap(batch_size=4, progress=False)
    def check(values: list[int]) -> list[Any]:
        next(calls)
        return [ValueError(f"odd {v}") if v % 2 else v * 10 for v in values]

    out = check(range(8))
    assert next(calls) == 2
    assert out[0::2] == [0, 20, 40, 60]
    assert [str(e) for e in out[1::2]] == ["odd 1", "odd 3", "odd 5", "odd 7"]


def test_a_wrong_length_fails_the_batch_with_both_lengths() -> None:
    """A batch function returning too few results fails that batch's items, naming 3 and 2."""

    @opmap(batch_size=3, progress=False)
    def short(values: list[int]) -> list[int]:
        return values[:2] if 5 in values else values

    out = short([1, 2, 3, 4, 5, 6, 7])
    assert out[:3] == [1, 2, 3]
    assert out[6] == 7
    for error in out[3:6]:
        assert isinstance(error, ConfigurationError)
        assert "batch of 3 items" in str(error) and "2 results" in str(error)


def test_retries_apply_per_batch_call() -> None:
    """A batch whose first request fails is retried whole: one extra request, no split."""
    sizes: list[int] = []

    @opmap(batch_size=5, retries=2, min_delay=0.01, progress=False)
    def flaky(values: list[int]) -> list[int]:
        sizes.append(len(values))
        if len(sizes) == 1:
            raise ConnectionError("reset")
        return [v + 1 for v in values]

    assert flaky(range(5)) == [1, 2, 3, 4, 5]
    assert sizes == [5, 5]
    assert flaky.stats.retries == 1
    assert flaky.stats.attempts == 2


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


def test_batch_size_is_validated() -> None:
    """batch_size=0 is a ConfigurationError naming the value and what is allowed."""
    with pytest.raises(ConfigurationError, match=r"batch_size=0 .*integer >= 1"):
        opmap(batch_size=0)(embed_texts)


def test_the_rate_limit_counts_requests_not_items() -> None:
    """rate_limit=10/s with batch_size=50: 200 items are 4 requests, about 0.3 s (not 20 s)."""
    import time

    starts: list[float] = []

    @opmap(batch_size=50, rate_limit=10, workers=4, progress=False)
    def stamp(values: list[int]) -> list[int]:
        starts.append(time.monotonic())
        return values

    t0 = time.monotonic()
    assert stamp(range(200)) == list(range(200))
    took = time.monotonic() - t0
    assert len(starts) == 4
    assert took >= 0.25  # 3 spacings of 0.1 s
    assert took < 3.0  # per item it would be 20 s
