"""Helpers shared by tests/unit/test_map_modes.py and tests/integration/test_map_modes.py."""

from __future__ import annotations


def _square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x
