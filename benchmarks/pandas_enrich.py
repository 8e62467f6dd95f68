"""What enriching a DataFrame column costs over the same opmap on a plain list (SPEC §9).

Run: ``python benchmarks/pandas_enrich.py [rows]`` (default 100,000 rows).

A tiny function is the worst case for the pandas adapter: the per-item work is nearly zero,
so any per-row overhead of the adapter (building items, putting results back on the index)
shows up in full. The target is ``df.pipe(enrich, col)`` ≤ 1.2× ``enrich(list)``.
The plain-pandas baselines (``Series.map`` and a row-wise ``DataFrame.apply``) show what a
user would otherwise write, without retries, error capture or parallelism.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from opero import opmap


def tiny(address: str) -> int:
    """The per-row work: next to nothing."""
    return len(address)


enrich = opmap(tiny, progress=False, mode="thread")


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Fastest and median of ``repeat`` runs; the fastest is the least disturbed one."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    print(f"      (runs: median {statistics.median(times):.3f}s)", end="")
    return min(times)


def main(rows: int = 100_000) -> None:
    """Time each way of enriching ``rows`` addresses and print ratios to the plain list."""
    df = pd.DataFrame({"address": [f"{i} Main Street" for i in range(rows)], "n": range(rows)})
    items = df["address"].tolist()

    cases: dict[str, Callable[[], Any]] = {
        "opmap(list)": lambda: enrich(items),
        "opmap(series)": lambda: enrich(df["address"]),
        "df.pipe(opmap, col)": lambda: df.pipe(enrich, "address"),
        "df.pipe(opmap, [col])": lambda: df.pipe(enrich, ["address"]),
        "df.pipe(opmap, {p: col})": lambda: df.pipe(enrich, {"address": "address"}),
        "df[col].map(f)": lambda: df["address"].map(tiny),
        "df.apply(f, axis=1)": lambda: df.apply(lambda row: tiny(row["address"]), axis=1),
    }
    # One warm-up each: thread pools, imports and first-call caches are not what we measure.
    for fn in cases.values():
        fn()
    print(f"{rows:,} rows, tiny function, mode='thread'")
    timings: dict[str, float] = {}
    for label, fn in cases.items():
        print(f"  {label:<26}", end="")
        timings[label] = best_of(fn, repeat=2 if "apply" in label else 5)
        print(f"  best {timings[label]:.3f}s")
    base = timings["opmap(list)"]
    print("ratios to opmap(list):")
    for label, seconds in timings.items():
        print(f"  {label:<26} {seconds / base:6.2f}x")
    ratio = timings["df.pipe(opmap, col)"] / base
    print(f"df.pipe(enrich, col) / enrich(list) = {ratio:.2f}x (target <= 1.20x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
