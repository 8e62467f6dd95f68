"""Machine-wide rate limits (issue 3): threads, worker processes and host-wide scopes."""

from __future__ import annotations

import time

import opero
from opero._limit import Limiter
from opero.stores.host import HostStore, function_path
from tests._helpers import run_threads
from tests._spacing import SCHEDULING, assert_exact_spacing, assert_starts_per_window


def test_eight_threads_share_a_function_budget() -> None:
    """Eight threads calling one rate_limit=50 function: 40 starts take >= 0.78 s, none bunched."""
    stamps: list[float] = []

    @opero.opero(rate_limit=50)
    def hit() -> None:
        stamps.append(time.monotonic())

    began = time.monotonic()
    run_threads(8, lambda: [hit() for _ in range(5)])
    assert len(stamps) == 40
    assert 0.78 <= max(stamps) - began < 0.78 * 3 + SCHEDULING
    assert_starts_per_window(stamps, 50)


def test_host_store_spaces_threads_exactly() -> None:
    """Eight threads on one host-wide store: grants decided under the file lock are 1/r apart."""
    store = HostStore(function_path("test-threads"), 50, 1, scoped=False, owner=True)
    store.grant_log = log = []
    limiter = Limiter("test-threads", 50, 1, store)
    run_threads(8, lambda: [limiter.acquire() for _ in range(5)])
    assert_exact_spacing(log, 50, count=40)


def test_testing_mode_bypasses_shared_limits() -> None:
    """opero.testing() skips rate-limit waits also for machine-wide limiters."""

    @opero.opero(rate_limit=1)
    def f() -> int:
        return 1

    began = time.monotonic()
    with opero.testing():
        assert sum(f() for _ in range(20)) == 20
    assert time.monotonic() - began < 2.0  # 19 s without testing mode
