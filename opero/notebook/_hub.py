"""The dashboards' hub: one sampler of every function's counters, one timer, the live views.

A timer thread wakes every ``INTERVAL`` seconds; every ``SAMPLE`` seconds it samples each
function's counters (plain attribute reads) into a short history, from which the rates and
charts are drawn, then asks each live dashboard to refresh.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._telemetry import FunctionStats, all_stats, logger

if TYPE_CHECKING:
    from .dashboard import Dashboard

__all__ = ["HISTORY", "INTERVAL", "MAX_LIVE", "SAMPLE", "hub"]

#: Seconds between two refreshes: at most ~10 updates a second.
INTERVAL = 0.1
#: Seconds between two samples of the counters (the charts' resolution).
SAMPLE = 0.5
#: Samples kept per function: the charts cover SAMPLE * HISTORY seconds.
HISTORY = 60
#: Global dashboards kept live; older ones freeze at their last state.
MAX_LIVE = 4


@dataclass
class History:
    """A function's sampled counters, oldest first: (time, done, failures, attempts, tokens
    used); ``tokens used`` stays 0 for a function without a token budget."""

    stats_id: int
    samples: deque[tuple[float, ...]]

    def rates(self, key: int) -> list[float]:
        s = list(self.samples)
        # at least a sample's span: a burst right after the definition is not a spike to infinity
        return [
            max(0.0, (_field(b, key) - _field(a, key)) / max(b[0] - a[0], SAMPLE))
            for a, b in itertools.pairwise(s)
        ]


def _field(sample: tuple[float, ...], key: int) -> float:
    # a sample taken without a field (older layout) counts 0 for it
    return sample[key] if key < len(sample) else 0.0


def _tokens_used(s: FunctionStats) -> float:
    """The function's (or its scope's) units spent, 0 without a token budget."""
    if s.pace is None:
        return 0.0
    try:
        return float(s.pace().get("tokens_used") or 0.0)
    except Exception:  # a store that cannot answer now: the chart shows no use
        return 0.0


class _Hub:
    """Process-wide state shared by every dashboard: the sampler, the live views, the timer."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.history: dict[str, History] = {}
        #: bumped by every sample that saw activity; part of every dashboard's fingerprint
        self.version = 0
        self.dashboards: list[Dashboard] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sample = 0.0
        self._active = False
        self.last_change = time.monotonic()

    # -- sampling (the timer thread) -----------------------------------------------------------

    def sample(self, now: float | None = None) -> None:
        """Append one sample of every function's counters to its history."""
        now = time.monotonic() if now is None else now
        changed = False
        # the token counts are store reads (a file lock, a redis round trip): outside the lock
        readings = [(s, _tokens_used(s)) for s in all_stats()]
        with self.lock:
            for s, tokens in readings:
                row = (now, s.successes + s.failures, s.failures, s.attempts, tokens)
                h = self.history.get(s.name)
                if h is None or h.stats_id != id(s):
                    h = self.history[s.name] = History(id(s), deque(maxlen=HISTORY + 1))
                    # The history starts at zero when the function was defined, so a burst
                    # that came and went before this first sample still shows.
                    age = time.time() - s.defined
                    if 0 <= age < SAMPLE * HISTORY:
                        h.samples.append((now - age, 0, 0, 0, 0.0))
                if (h.samples and h.samples[-1][1:] != row[1:]) or (not h.samples and row[1]):
                    changed = True
                h.samples.append(row)
            # One more version after the work stopped, so the charts drop to zero once.
            if changed or self._active:
                self.version += 1
            self._active = changed
            self._last_sample = now

    def rates(self, s: FunctionStats) -> tuple[list[float], list[float], list[float]]:
        """(calls/s history, failures/s history, limit use % history), oldest first."""
        with self.lock:
            h = self.history.get(s.name)
            if h is None or h.stats_id != id(s):
                return [], [], []
            calls = h.rates(1)
            fails = h.rates(2)
            attempts = h.rates(3)
        budget = s.budget
        limit = [min(100.0, 100.0 * a / budget) for a in attempts] if budget else []
        return calls, fails, limit

    def token_use(self, s: FunctionStats, token_limit: float) -> list[float]:
        """Tokens spent per second as % of ``token_limit`` (units per second), oldest first."""
        with self.lock:
            h = self.history.get(s.name)
            if h is None or h.stats_id != id(s) or token_limit <= 0:
                return []
            return [100.0 * t / token_limit for t in h.rates(4)]

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, dashboard: Dashboard) -> None:
        """Keep ``dashboard`` live; start the timer when it is the first."""
        with self.lock:
            self.dashboards.append(dashboard)
            global_ones = [d for d in self.dashboards if d.scope is None]
            stale = global_ones[: max(0, len(global_ones) - MAX_LIVE)]
            if self._thread is None:
                self._start()
        # outside the hub lock: a refresh takes the dashboard's lock, then the hub's
        for old in stale:
            old.detach()

    def detach(self, dashboard: Dashboard) -> None:
        """Stop updating ``dashboard``; stop the timer when no dashboard is left."""
        with self.lock:
            if dashboard in self.dashboards:
                self.dashboards.remove(dashboard)
            if not self.dashboards and self._thread is not None:
                self._stop.set()
                self._thread = None

    def _start(self) -> None:
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="opero-dashboard", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL):
            if time.monotonic() - self._last_sample >= SAMPLE:
                self.sample()
            self.refresh_all(tick=True)

    def refresh_all(self, force: bool = False, tick: bool = False) -> None:
        """Refresh every live dashboard that has something new (all of them with ``force``)."""
        for dashboard in list(self.dashboards):
            try:
                dashboard.refresh(force=force, tick=tick)
            except Exception:  # a dashboard must never take the kernel down
                logger.exception("opero dashboard: refresh failed")


hub = _Hub()
