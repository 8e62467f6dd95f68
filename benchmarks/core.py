"""Per-call overhead of ``@opero`` vs the retry libraries a user would otherwise pick.

Shapes: the happy path (no failure) sync and async, and one failure then success with zero
backoff. Prints a markdown table with each tool's time per call and its ratio to opero.
Run: ``python benchmarks/core.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# ``benchmarks._peers`` when run as a script; appended, so opero still comes from PYTHONPATH.
sys.path.append(str(Path(__file__).resolve().parent.parent))
from benchmarks._peers import one_failure_tools, retry_tools

N = 20_000


def per_call(fn: Callable[[], Any], n: int = N, repeat: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` runs of ``n`` calls."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def per_call_async(make: Callable[[], Awaitable[Any]], n: int = N, repeat: int = 5) -> float:
    """Median seconds per awaited call."""

    async def loop() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await make()
        return (time.perf_counter() - t0) / n

    return statistics.median(asyncio.run(loop()) for _ in range(repeat))


def happy_sync() -> dict[str, float]:
    """No failure: the wrapper's own cost."""
    sync, _ = retry_tools()
    return {name: per_call(fn) for name, fn in sync.items()}


def happy_async() -> dict[str, float]:
    """No failure, ``async def``."""
    _, asyn = retry_tools()
    return {name: per_call_async(fn) for name, fn in asyn.items()}


def one_failure() -> dict[str, float]:
    """First attempt fails, second succeeds, zero backoff."""
    return {name: per_call(fn, n=5000) for name, fn in one_failure_tools().items()}


def table(title: str, results: dict[str, float]) -> str:
    """A markdown table of µs per call and the ratio to opero."""
    base = results["opero"]
    lines = [f"### {title}", "", "| tool | µs/call | × opero |", "|---|---:|---:|"]
    for name, t in sorted(results.items(), key=lambda kv: kv[1]):
        lines.append(f"| {name} | {t * 1e6:.2f} | {t / base:.2f} |")
    return "\n".join(lines)


def main() -> None:
    """Run every shape and print the tables."""
    print(f"python {sys.version.split()[0]}, {N} calls per run, median of 5")
    print(table("happy path, sync", happy_sync()))
    print()
    print(table("happy path, async", happy_async()))
    print()
    print(table("one failure then success (zero backoff)", one_failure()))


if __name__ == "__main__":
    main()
