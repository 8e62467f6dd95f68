"""Logs that tools can read: fields in ``extra``, one WARNING per retry, quiet INFO, no duplicates.

The JSON and structlog tests run the seeds' "Logging and Observability" setup in a fresh
interpreter: pytest puts its own capture handlers on the root logger, and these tests are
about what the root logger and opero's handler print together.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import opero
from opero import AllFailedError, opmap


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Any:
    logger = logging.getLogger("opero")
    old = logger.level
    with caplog.at_level(logging.DEBUG, logger="opero"):
        yield caplog
    logger.setLevel(old)


def test_every_event_carries_its_fields_in_extra(debug_logs: pytest.LogCaptureFixture) -> None:
    """Each record has event, function, attempt, round, candidate, delay and error_type attributes."""

    @opero.opero(retries=1, min_delay=0.001, jitter=0, arg_fallback="key")
    def fetch(key: list[str]) -> str:
        raise ConnectionError(f"refused ({len(key)} keys left)")

    with pytest.raises(AllFailedError):
        fetch(["secret-a", "secret-b"])
    records = [r for r in debug_logs.records if hasattr(r, "event")]
    by_kind: dict[str, list[Any]] = {}
    for r in records:
        by_kind.setdefault(r.event, []).append(r)  # type: ignore[attr-defined]
    assert [r.event for r in records] == [  # type: ignore[attr-defined]
        "start",
        "attempt_failed",
        "fallback",
        "attempt_failed",
        "retry",
        "attempt_failed",
        "fallback",
        "attempt_failed",
        "failure",
    ]
    name = fetch.stats.name
    assert all(r.function == name for r in records)  # type: ignore[attr-defined]
    assert [(r.attempt, r.round, r.candidate) for r in by_kind["attempt_failed"]] == [
        (1, 1, 0),
        (2, 1, 1),
        (3, 2, 0),
        (4, 2, 1),
    ]
    retry = by_kind["retry"][0]
    assert (retry.attempt, retry.round, retry.error_type, retry.levelno) == (
        2,
        1,
        "ConnectionError",
        logging.WARNING,
    )
    assert retry.delay == pytest.approx(0.001)
    fallback = by_kind["fallback"][0]
    assert (fallback.candidate, fallback.attempt, fallback.error) == (1, 2, "refused (2 keys left)")
    failure = by_kind["failure"][0]
    assert failure.error_type == "opero.AllFailedError" and failure.duration > 0
    # candidates (API keys) never appear in a line or a field
    dumped = json.dumps([{k: str(v) for k, v in vars(r).items()} for r in records])
    assert "secret" not in dumped and "secret" not in debug_logs.text


def test_item_failed_carries_the_item(debug_logs: pytest.LogCaptureFixture) -> None:
    """A failed opmap item's record names the item (its repr for non-scalars)."""

    @opmap(retries=0, progress=False)
    def parse(x: Any) -> int:
        return int(x)

    out = parse(["1", "x", ("t", 1)])
    assert out[0] == 1
    items = [r.item for r in debug_logs.records if getattr(r, "event", None) == "item_failed"]  # type: ignore[attr-defined]
    assert sorted(map(str, items)) == ["('t', 1)", "x"]


def test_one_warning_per_retry(caplog: pytest.LogCaptureFixture) -> None:
    """3 retries give exactly 3 WARNING lines, worded like tenacity's before_sleep_log."""

    @opero.opero(retries=3, min_delay=0.001, jitter=0)
    def flaky() -> None:
        raise TimeoutError("slow")

    with caplog.at_level(logging.INFO, logger="opero"), pytest.raises(AllFailedError):
        flaky()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    name = flaky.stats.name
    assert [r.getMessage() for r in warnings] == [
        f"retrying {name} in 0.001 s (attempt 1 raised TimeoutError: slow)",
        f"retrying {name} in 0.0015 s (attempt 2 raised TimeoutError: slow)",
        f"retrying {name} in 0.00225 s (attempt 3 raised TimeoutError: slow)",
    ]
    # the rest at INFO: only the failed call itself
    assert [getattr(r, "event", None) for r in caplog.records if r.levelno == logging.INFO] == ["failure"]


def test_cache_and_rate_waits_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Cache hits, misses and rate waits appear at DEBUG and never at INFO."""

    @opero.opero(cache=True, rate_limit=50)
    def lookup(x: int) -> int:
        return x

    with caplog.at_level(logging.INFO, logger="opero"):
        for x in (1, 2, 1, 3):
            lookup(x)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="opero"):
        for x in (4, 4, 5):
            lookup(x)
    debug = [(r.event, r.levelno) for r in caplog.records]  # type: ignore[attr-defined]
    assert {k for k, _ in debug} >= {"cache_hit", "cache_miss", "rate_wait"}
    assert all(level == logging.DEBUG for _, level in debug)
    waits = [r for r in caplog.records if r.event == "rate_wait"]  # type: ignore[attr-defined]
    assert waits and all(r.delay > 0 for r in waits)  # type: ignore[attr-defined]


def _busy_map() -> tuple[Any, list[Any]]:
    """1,000 items: cached, rate-limited, 100 items fail once, 10 fail for good."""
    seen: set[int] = set()

    @opmap(
        workers=8, cache=True, rate_limit=100_000, rate_burst=100, retries=2, min_delay=0.001, progress=False
    )
    def enrich(x: int) -> int:
        if x % 100 == 7:
            raise ConnectionError("down")
        if x % 10 == 3 and x not in seen:
            seen.add(x)
            raise ConnectionError("blip")
        return x

    return enrich, enrich(list(range(1000)))


def test_info_is_not_flooded_by_a_1000_item_map(caplog: pytest.LogCaptureFixture) -> None:
    """At INFO a 1,000-item map logs one line per retry and per failed item, nothing else."""
    with caplog.at_level(logging.INFO, logger="opero"):
        enrich, out = _busy_map()
    failed = sum(isinstance(v, BaseException) for v in out)
    assert failed == 10
    # 100 items retried once, 10 failing items retried twice each
    assert enrich.stats.retries == 120
    levels = [(getattr(r, "event", None), r.levelno) for r in caplog.records]
    assert levels.count(("retry", logging.WARNING)) == 120
    assert levels.count(("failure", logging.INFO)) == 10
    assert len(levels) == 130


def test_configure_logging_rejects_unknown_level_naming_it() -> None:
    """A bad level name raises ConfigurationError naming the value and the allowed ones."""
    with pytest.raises(opero.ConfigurationError, match=r"'LOUD'.*DEBUG, INFO, WARNING"):
        opero.configure_logging("LOUD")
