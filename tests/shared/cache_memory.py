"""Helpers shared by tests/unit/test_cache_memory.py and tests/integration/test_cache_memory.py."""

from __future__ import annotations


def counter():
    """A function counting its calls, returning its arguments."""
    calls: list[tuple[object, ...]] = []

    def f(x: object, y: object = 0) -> tuple[object, object]:
        calls.append((x, y))
        return (x, y)

    return f, calls
