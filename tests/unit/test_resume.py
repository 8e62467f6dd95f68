"""Rerun only what failed: df.pipe(fn, column, resume=True) and fn(items, resume=earlier)."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest

from opero import AllFailedError, Cancelled, ConfigurationError, opmap
from opero._progress import subscribe_progress


class _Flaky:
    """Fails the listed values on their first call only; records every call."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = set(failing)
        self.calls: list[int] = []

    def __call__(self, x: int) -> float:
        self.calls.append(x)
        if x in self.failing:
            self.failing.discard(x)
            raise ConnectionError(f"lost {x}")
        return x / 2


def _fn(flaky: _Flaky, **options: Any) -> Any:
    def half(x: int) -> float:
        return flaky(x)

    return opmap(**{"retries": 0, "workers": 4, "progress": False, **options})(half)


def test_resume_reruns_only_the_failed_rows_and_keeps_the_rest() -> None:
    """300 failed rows of 1,000 rerun alone; values, dtypes, index and other columns survive."""
    df = pd.DataFrame(
        {"x": range(1000), "label": [f"r{i}" for i in range(1000)], "w": [0.5] * 1000},
        index=pd.Index(range(5000, 6000), name="id"),
    )
    flaky = _Flaky(set(range(0, 1000, 10)) | set(range(1, 1000, 5)))
    half = _fn(flaky)
    first = df.pipe(half, "x")
    failed = int(first["half_error"].notna().sum())
    assert failed == 300
    assert first["half"].dtype == "float64"
    flaky.calls.clear()

    second = first.pipe(half, "x", resume=True)
    assert sorted(flaky.calls) == sorted(first.index[first["half_error"].notna()] - 5000)
    assert len(flaky.calls) == 300
    assert second["half_error"].isna().all()
    assert second["half"].tolist() == [i / 2 for i in range(1000)]
    assert list(second.columns) == ["x", "label", "w", "half", "half_error"]
    assert second.index.equals(df.index)
    assert second.dtypes.to_dict() == first.dtypes.to_dict()
    assert first["half_error"].notna().sum() == 300  # the earlier frame is not modified


def test_resume_reruns_cancelled_rows() -> None:
    """A row holding a Cancelled marker (a stopped map) runs again; the others do not."""
    flaky = _Flaky(set())
    half = _fn(flaky)
    earlier = pd.DataFrame(
        {"x": [1, 2, 3], "half": [0.5, None, 1.5], "half_error": [None, Cancelled("stopped"), None]}
    )
    out = earlier.pipe(half, "x", resume=True)
    assert flaky.calls == [2]
    assert out["half"].tolist() == [0.5, 1.0, 1.5]
    assert out["half_error"].isna().all()


def test_resume_without_earlier_columns_runs_every_row() -> None:
    """A frame without <name>/<name>_error columns runs every row, as without resume."""
    flaky = _Flaky(set())
    half = _fn(flaky)
    out = pd.DataFrame({"x": [4, 6]}).pipe(half, "x", resume=True)
    assert sorted(flaky.calls) == [4, 6]
    assert out["half"].tolist() == [2.0, 3.0]


def test_resume_with_nothing_failed_calls_nothing() -> None:
    """A clean earlier frame comes back equal, without a single call."""
    flaky = _Flaky(set())
    half = _fn(flaky)
    first = pd.DataFrame({"x": [1, 2]}).pipe(half, "x")
    flaky.calls.clear()
    again = first.pipe(half, "x", resume=True)
    assert flaky.calls == []
    pd.testing.assert_frame_equal(again, first)


def test_resume_for_lists() -> None:
    """fn(items, resume=earlier) runs only the items whose earlier result is an exception."""
    flaky = _Flaky({2, 5})
    half = _fn(flaky)
    items = list(range(8))
    first = half(items)
    assert [isinstance(r, AllFailedError) for r in first].count(True) == 2
    flaky.calls.clear()
    second = half(items, resume=first)
    assert sorted(flaky.calls) == [2, 5]
    assert second == [i / 2 for i in items]


def test_resume_for_async_lists() -> None:
    """The async form awaits the rerun and merges it the same way."""
    calls: list[int] = []

    @opmap(retries=0, progress=False)
    async def double(x: int) -> int:
        calls.append(x)
        return x * 2

    earlier: list[Any] = [0, ValueError("x"), 4]
    assert asyncio.run(double([0, 1, 2], resume=earlier)) == [0, 2, 4]
    assert calls == [1]


def test_resume_progress_counts_only_the_rows_that_run() -> None:
    """The progress total of a resumed frame is the number of rows that run."""
    flaky = _Flaky({3})
    half = _fn(flaky, progress=True)
    first = pd.DataFrame({"x": range(10)}).pipe(half, "x")
    seen: list[tuple[Any, ...]] = []
    unsubscribe = subscribe_progress(lambda *a: seen.append(a))
    try:
        first.pipe(half, "x", resume=True)
    finally:
        unsubscribe()
    _, _, done, total, failed, finished = seen[-1]
    assert (done, total, failed, finished) == (1, 1, 0, True)


def test_resume_with_a_wrong_length_is_refused() -> None:
    """Earlier results of another length are a ConfigurationError naming both lengths."""
    half = _fn(_Flaky(set()))
    with pytest.raises(ConfigurationError, match="2 earlier results for 3 items"):
        half([1, 2, 3], resume=[1, 2])
