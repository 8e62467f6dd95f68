"""Checks of rate-limit spacing that hold on a loaded machine.

Exact spacing is checked only on the grant times the limiter decides (``Store.grant_log``:
read on the deciding clock inside its atomic step). What callers observe adds their own
scheduling delay between the grant and their clock read, so caller-side times are checked
only in aggregate: the elapsed time from before the first call, and starts per window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

#: Float rounding on a clock near 1e9 (redis keeps microseconds): far below any interval.
EXACT = 1e-5
#: Caller-side delay tolerated between a grant and the caller's clock read (3x the ~30 ms
#: a thread waits for a core on a loaded 2-core machine).
SCHEDULING = 0.1


def assert_exact_spacing(grants: Iterable[float], rate: float, count: int | None = None) -> None:
    """Grant times (from one or many processes) are at least ``1/rate`` apart, exactly."""
    times = sorted(grants)
    if count is not None:
        assert len(times) == count, len(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps, "fewer than two grants"
    assert min(gaps) >= 1 / rate - EXACT, (min(gaps), 1 / rate)


def max_starts_in(stamps: Iterable[float], window: float) -> int:
    """The largest number of timestamps inside any half-open window of ``window`` seconds."""
    times = sorted(stamps)
    return max(sum(1 for t in times if s <= t < s + window) for s in times)


def assert_starts_per_window(stamps: Iterable[float], rate: float, window: float = 0.2) -> None:
    """Caller-side starts: no window holds more than the rate allows, plus scheduling slack.

    A caller that lost its core after the grant stamps late and may land in the next window;
    ``SCHEDULING`` seconds of such delay are tolerated, so only a budget broken by more than
    that (say twice the rate, or no sharing between threads) fails.
    """
    allowed = int((window + SCHEDULING) * rate) + 1
    worst = max_starts_in(stamps, window)
    assert worst <= allowed, (worst, allowed)
