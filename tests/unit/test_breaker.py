"""The shared circuit breaker against the loopback demo server (issue 13.3).

Failures open it, calls then fail fast with CircuitOpenError without a request, one
half-open probe closes (or reopens) it; map items wait for the probe; the state is shared
by threads, processes (host files) and machines (redis). Counts are exact where opero
decides them (requests made while open), times have a 3x margin.
"""

from __future__ import annotations

import os

from opero import opero as opero_deco
from tests._helpers import (
    wiped_redis_server,  # noqa: F401  (overrides redis_server here)
)


def test_redecorating_leaks_no_state_files() -> None:
    """A function's own breaker and adaptive-rate records go away with the function."""
    import gc

    from opero.stores.host import folder

    def files() -> int:
        return sum(1 for n in os.listdir(folder()) if n.startswith(("breaker-fn-", "aimd-fn-")))

    def fds() -> int:
        return len(os.listdir(f"/proc/{os.getpid()}/fd"))

    gc.collect()
    before, fd_before = files(), fds()
    for _ in range(30):

        @opero_deco(rate_limit="auto", circuit_breaker=True)
        def fetch() -> int:
            return 1

        assert fetch() == 1
    del fetch
    gc.collect()
    assert files() <= before + 1
    assert fds() <= fd_before + 3  # 30 x (limiter + rate record + breaker) would be 90
