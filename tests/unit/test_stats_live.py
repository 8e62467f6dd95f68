"""Live numbers that stay true: throttled time, recent calls/s, history, in flight, latency."""

from __future__ import annotations

import threading
import time
from typing import Any

from opero import opero, opmap
from opero.notebook import dashboard


def test_recent_throughput_beside_lifetime_and_zero_when_idle() -> None:
    """fn.stats has the lifetime throughput and a recent rate that falls to 0 when idle."""

    @opero
    def square(x: int) -> int:
        return x * x

    for i in range(40):
        square(i)
    stats = square.stats.as_dict()
    assert stats["throughput"] is not None and stats["throughput"] > 0
    assert 1.0 <= stats["recent_throughput"] <= 40.0, stats
    assert square.stats.recent_throughput(time.time() + 6.0) == 0.0


def test_a_burst_right_after_definition_shows_in_the_history() -> None:
    """A function's history starts at zero when defined: a burst within 0.5 s has a peak."""

    @opero
    def burst(x: int) -> int:
        return x

    for i in range(50):
        burst(i)
    board = dashboard.Dashboard(title="t")
    dashboard.hub.sample()
    calls, _, _ = dashboard.hub.rates(burst.stats)
    assert calls and max(calls) >= 10.0, calls
    row = next(r for r in board.rows() if r["function"] == burst.stats.name)
    assert row["calls"] == 50
    assert 'data-top="' in row["chart_calls"] and "<title>" in row["chart_calls"]


def test_in_flight_never_exceeds_workers() -> None:
    """The dashboard's in flight stays at or below the map's workers while it runs."""

    @opmap(workers=2, progress=False)
    def slow(x: int) -> int:
        time.sleep(0.05)
        return x

    board = dashboard.Dashboard(title="t")
    worker = threading.Thread(target=slow, args=(range(40),))
    worker.start()
    seen = []
    while worker.is_alive():
        seen.extend(r["in_flight"] for r in board.rows() if r["function"] == slow.stats.name)
        time.sleep(0.01)
    worker.join()
    assert seen and max(seen) <= 2, seen
    assert max(seen) == 2


def test_dashboard_columns_are_named_as_in_stats() -> None:
    """Every table column but the charts is a fn.stats key, and its header is that key."""

    # paced, so the pace's keys (tokens used, concurrency in flight) are in its stats too
    @opero(token_limit="1000/s", tokens=lambda: 1, max_concurrency=2)
    def named() -> int:
        return 1

    named()
    keys = set(named.stats.as_dict())
    for key, label in (*dashboard.COLUMNS, *dashboard.MORE):
        assert key in keys, key
        assert label == key.replace("_", " "), (key, label)


def test_plain_opero_calls_have_failures() -> None:
    """A failed plain @opero call is listed in fn.failures() with its error and traceback."""

    @opero(retries=1, min_delay=0.001)
    def flaky(x: int) -> int:
        raise ValueError(f"bad {x}")

    for i in range(3):
        try:
            flaky(i)
        except Exception:
            pass
    frame = flaky.failures()
    assert len(frame) == 3 == flaky.stats["failures"]
    assert list(frame["error_type"]) == ["ValueError"] * 3
    assert list(frame["message"]) == ["bad 0", "bad 1", "bad 2"]
    assert set(frame["attempts"]) == {2}
    assert all('raise ValueError(f"bad {x}")' in tb for tb in frame["traceback"])


def test_saved_snapshot_follows_the_recent_rate_down_to_zero(monkeypatch: Any) -> None:
    """Once idle, the snapshot a saved notebook keeps is redrawn as the recent rate decays."""
    from opero._telemetry import FunctionStats

    @opero
    def quick(x: int) -> int:
        return x

    for i in range(30):
        quick(i)
    board = dashboard.Dashboard(title="t")
    updates: list[str] = []

    class Handle:
        def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
            updates.append(bundle["text/html"])

    board._handle = Handle()
    board.widget  # builds the widgets and renders once
    board._show_snapshot()
    assert updates and ">0.0/s<" not in _row_html(updates[-1], "quick")
    monkeypatch.setattr(FunctionStats, "recent_throughput", lambda self, now=None: 0.0)
    board._fingerprint = None  # as if the timer saw the decayed rate
    board.refresh(tick=False)
    assert ">0.0/s<" in _row_html(updates[-1], "quick"), updates[-1]


def _row_html(html: str, name: str) -> str:
    return next(r for r in html.split("<tr") if f">{name}</td>" in r)
