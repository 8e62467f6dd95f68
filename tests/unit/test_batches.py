"""batch_size=N: one request per batch, results per item, cache and dedupe per item, bisection."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from opero import ConfigurationError, opmap
from tests._enrich_server import embed_texts


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
