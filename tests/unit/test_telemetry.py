"""Telemetry: counters, events, the logger, opero.stats() (SPEC §7)."""

from __future__ import annotations

import logging

import pytest

import opero as opero_pkg
from opero import AllFailedError, opero
from opero._telemetry import Event, subscribe
from tests._helpers import run_threads


def test_counters_after_mixed_calls() -> None:
    """calls/successes/failures/attempts/retries/fallbacks/latency add up exactly."""
    state = {"n": 0}

    @opero(retries=1, min_delay=0.001, arg_fallback="key", cache=True)
    def f(x: int, key: list[str]) -> int:
        state["n"] += 1
        if x < 0 or key[0] == "bad":
            raise ConnectionError
        return x

    f(1, ["bad", "good"])  # 2 attempts, 1 fallback
    f(1, ["bad", "good"])  # cache hit
    with pytest.raises(AllFailedError):
        f(-1, ["good"])  # 2 rounds -> 2 attempts, 1 retry
    s = f.stats.as_dict()
    assert (s["calls"], s["successes"], s["failures"]) == (3, 2, 1)
    assert (s["attempts"], s["retries"], s["fallbacks"]) == (4, 1, 1)
    assert (s["cache_hits"], s["cache_misses"]) == (1, 2)
    assert s["in_flight"] == 0
    assert s["latency_p50"] is not None and s["latency_p95"] >= s["latency_p50"]
    assert f.stats["retries"] == 1


def test_counters_are_thread_safe() -> None:
    """8 threads x 500 calls count exactly 4000."""

    @opero
    def f() -> None:
        pass

    run_threads(8, lambda: [f() for _ in range(500)])
    assert (f.stats.calls, f.stats.successes) == (4000, 4000)


def test_logger_records_events(caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG the opero logger reports cache misses/hits, failed attempts and fallbacks."""
    logger = opero_pkg.configure_logging(level=logging.DEBUG)
    assert logger is logging.getLogger("opero")

    @opero(retries=1, min_delay=0.001, arg_fallback="k", cache=True)
    def f(k: list[str]) -> str:
        if k[0] == "bad":
            raise ConnectionError("bad key")
        return k[0]

    try:
        with caplog.at_level(logging.DEBUG, logger="opero"):
            f(["bad", "good"])
            f(["bad", "good"])
    finally:
        logger.setLevel(logging.WARNING)
    kinds = [getattr(r, "event", None) for r in caplog.records]
    assert kinds == [
        "start",
        "cache_miss",
        "attempt_failed",
        "fallback",
        "success",
        "start",
        "cache_hit",
        "success",
    ]
    assert "ConnectionError: bad key" in caplog.text
    assert "good" not in caplog.text.replace(f.stats.name, "")  # no fallback candidate is logged


def test_subscribers_get_frozen_events() -> None:
    """Subscribers receive frozen Event records filtered by kind."""
    got: list[Event] = []
    unsubscribe = subscribe(got.append, kinds={"retry"})
    try:

        @opero(retries=2, min_delay=0.001, jitter=0)
        def f() -> None:
            raise ConnectionError

        with pytest.raises(AllFailedError):
            f()
    finally:
        unsubscribe()
    assert [e.kind for e in got] == ["retry", "retry"]
    assert [e.round for e in got] == [1, 2]
    with pytest.raises(AttributeError):
        got[0].kind = "x"  # type: ignore[misc]


def test_stats_frame_has_a_row_per_function() -> None:
    """opero.stats() is a DataFrame indexed by function with the counters as columns."""

    @opero
    def stats_probe_fn() -> int:
        return 1

    stats_probe_fn()
    frame = opero_pkg.stats()
    row = frame.loc[next(i for i in frame.index if i.endswith("stats_probe_fn"))]
    assert row["calls"] == 1 and row["successes"] == 1
    for column in ("failures", "retries", "cache_hit_rate", "rate_waits", "latency_p95", "throughput"):
        assert column in frame.columns


def test_stats_html_repr() -> None:
    """fn.stats renders as an HTML table in notebooks."""

    @opero
    def f() -> None:
        pass

    f()
    html = f.stats._repr_html_()
    assert "<table" in html and "successes" in html


def test_configure_logging_by_name() -> None:
    """configure_logging accepts level names and rejects unknown ones."""
    assert opero_pkg.configure_logging("DEBUG").level == logging.DEBUG
    opero_pkg.configure_logging("WARNING")
    with pytest.raises(opero_pkg.ConfigurationError):
        opero_pkg.configure_logging("LOUD")
