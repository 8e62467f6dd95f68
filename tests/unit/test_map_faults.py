"""opmap faults: dead workers, Ctrl-C, resumable maps, rate limits across process workers."""

from __future__ import annotations

import itertools
import time

from opero import AllFailedError, opmap


def test_timeout_per_attempt_in_process_mode() -> None:
    """timeout= also bounds each attempt inside process workers."""

    @opmap(mode="process", workers=2, timeout=0.2, retries=0, progress=False)
    def nap(x: float) -> float:
        time.sleep(x)
        return x

    out = nap([0.0, 2.0])
    assert out[0] == 0.0
    assert isinstance(out[1], AllFailedError)
    assert isinstance(out[1].errors[0], TimeoutError)


def test_rate_limit_is_shared_by_process_workers() -> None:
    """Two process workers at rate_limit=20 start attempts at least 50 ms apart in total."""

    @opmap(mode="process", workers=2, rate_limit=20, progress=False)
    def stamp(_: int) -> float:
        return time.monotonic()

    stamp(range(2))  # warm the workers so their start-up does not hide the spacing
    times = sorted(stamp(range(12)))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 0.002
    assert stamp.stats.rate_waits >= 5
