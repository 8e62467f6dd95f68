"""Helpers shared by tests/unit/test_rate_semantics.py and tests/integration/test_rate_semantics.py."""

from __future__ import annotations

from typing import Any

from opero import parts
from tests._helpers import (
    wiped_redis_server,  # noqa: F401  (overrides redis_server here)
)
from tests._spacing import EXACT, max_starts_in


def _grants(fn: Any) -> list[float]:
    """Switch on the grant log of a decorated function's limiter store and return it."""
    log: list[float] = []
    parts(fn).limiter.store.grant_log = log
    return log


def _max_in_window(grants: list[float], window: float = 1.0) -> int:
    # A start exactly one window after another is outside its window (half-open windows);
    # EXACT absorbs float rounding of clock readings near 1e9 (redis).
    return max_starts_in([t - EXACT for t in grants[:1]] + grants[1:], window) if grants else 0
