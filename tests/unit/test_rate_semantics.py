"""What ``rate_limit`` and ``rate_burst`` promise over a 1-second window, wall-clock waits,
and the async redis path that never blocks the event loop (issue 12.6)."""

from __future__ import annotations

import pytest

from opero import opero
from tests._helpers import (
    wiped_redis_server,  # noqa: F401  (overrides redis_server here)
)


def test_wall_clock_wait_of_one_thread_equals_its_wait() -> None:
    """One caller: the wall-clock wait and the thread-seconds are the same time."""

    @opero(rate_limit=10)
    def hit() -> None:
        pass

    for _ in range(6):
        hit()
    stats = hit.stats
    assert stats.rate_wait_seconds == pytest.approx(stats.rate_wait_wall, abs=0.02)
    assert stats.rate_wait_wall >= 0.45
