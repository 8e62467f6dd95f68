"""Each distinct call once (single-flight): duplicates in a map, and overlapping plain calls."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from opero import AllFailedError, opmap
from tests._enrich_server import CountingServer, alookup, embed_texts, lookup

#: the issue's shape: 10,000 rows of 500 distinct values, duplicates side by side
DISTINCT, ROWS = 500, 10_000


def _sorted_column() -> list[str]:
    return sorted(f"v{i % DISTINCT:04d}" for i in range(ROWS))


@pytest.mark.parametrize(
    ("mode", "workers", "func"),
    [
        ("thread", 16, lookup),
        ("async", 16, lookup),
        ("async", 16, alookup),
        ("process", 4, lookup),
        ("async_process", 2, alookup),
    ],
    ids=["thread", "async-sync-fn", "async-def", "process", "async_process"],
)
def test_sorted_column_costs_one_request_per_distinct_value(mode: str, workers: int, func: object) -> None:
    """A sorted 10,000-row column of 500 values costs exactly 500 requests in every mode."""
    items = _sorted_column()
    with CountingServer(delay=0.002) as server:
        fn = opmap(mode=mode, workers=workers, cache=True, progress=False)(func)  # type: ignore[call-overload]
        out = fn(items, server.url)
        if asyncio.iscoroutine(out):
            out = asyncio.run(out)
        assert server.requests("/lookup") == DISTINCT
        assert max(server.queries.values()) == 1
    assert len(out) == ROWS
    assert all(r == {"q": q, "n": len(q)} for r, q in zip(out, items, strict=True))
    assert fn.stats.attempts == DISTINCT
    assert fn.stats.calls == ROWS
    assert fn.stats.successes == ROWS
    assert fn.stats.in_flight == 0


def test_sorted_frame_through_pipe_costs_one_request_per_distinct_value() -> None:
    """df.pipe(fn, column) over a sorted frame: 500 requests, every row answered."""
    df = pd.DataFrame({"q": _sorted_column(), "row": range(ROWS)}, index=range(100, 100 + ROWS))
    with CountingServer(delay=0.002) as server:
        fn = opmap(workers=16, cache=True, progress=False)(lookup)
        out = df.pipe(fn, "q", server.url)
        assert server.requests("/lookup") == DISTINCT
    assert list(out.index) == list(df.index)
    assert out["lookup_error"].isna().all()
    assert out["lookup"].iloc[-1] == {"q": df["q"].iloc[-1], "n": 5}


def test_dask_workers_get_each_distinct_value_once() -> None:
    """mode='dask': a sorted column of 1,000 rows and 50 values costs 50 requests; batches too."""
    from distributed import Client, LocalCluster

    items = sorted(f"v{i % 50:03d}" for i in range(1000))
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        Client(cluster),
        CountingServer(delay=0.002) as server,
    ):
        fn = opmap(mode="dask", workers=2, cache=True, progress=False)(lookup)
        out = fn(items, server.url)
        assert server.requests("/lookup") == 50
        embed = opmap(mode="dask", batch_size=100, progress=False)(embed_texts)
        vectors = embed(items, server.url)
        assert server.requests("/embed") == 10
    assert out[-1] == {"q": "v049", "n": 4}
    assert vectors[0] == [4.0, 1.0]


def test_a_failure_is_shared_by_its_duplicates() -> None:
    """A failing value that appears 20 times side by side is requested once; all 20 rows fail."""
    items = ["ok"] * 5 + ["bad"] * 20 + ["fine"] * 5
    with CountingServer(delay=0.05, fail=frozenset({"bad"})) as server:
        fn = opmap(workers=8, cache=True, retries=0, progress=False)(lookup)
        out = fn(items, server.url)
        assert server.queries["bad"] == 1
        assert server.queries["ok"] == 1
    failed = [r for r in out if isinstance(r, BaseException)]
    assert len(failed) == 20
    assert all(isinstance(r, AllFailedError) for r in failed)
    assert out[0] == {"q": "ok", "n": 2}
    assert len(fn.failures()) == 20
    assert fn.stats.failures == 20
    assert fn.stats.in_flight == 0


def test_without_cache_duplicates_all_run() -> None:
    """Single-flight belongs to cache=True: without it every duplicate is its own call."""
    with CountingServer(delay=0.0) as server:
        fn = opmap(workers=4, progress=False)(lookup)
        fn(["a"] * 30, server.url)
        assert server.requests("/lookup") == 30
