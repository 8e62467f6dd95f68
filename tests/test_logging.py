"""Logs that tools can read: fields in ``extra``, one WARNING per retry, quiet INFO, no duplicates.

The JSON and structlog tests run the seeds' "Logging and Observability" setup in a fresh
interpreter: pytest puts its own capture handlers on the root logger, and these tests are
about what the root logger and opero's handler print together.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import opero
from opero import AllFailedError, opmap

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("OPERO_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=True,
    )


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Any:
    logger = logging.getLogger("opero")
    old = logger.level
    with caplog.at_level(logging.DEBUG, logger="opero"):
        yield caplog
    logger.setLevel(old)


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.event for r in caplog.records if hasattr(r, "event")]  # type: ignore[attr-defined]


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


SEED_SETUP = """
    import logging, structlog
    from pythonjsonlogger import jsonlogger
    from opero import configure_logging, opero

    def setup_production_logging():
        configure_logging(level=logging.INFO)
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.stdlib.PositionalArgumentsFormatter(),
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.StackInfoRenderer(),
                structlog.processors.format_exc_info,
                structlog.processors.UnicodeDecoder(),
                structlog.processors.JSONRenderer(),
            ],
            context_class=dict,
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
        logHandler = logging.StreamHandler()
        formatter = jsonlogger.JsonFormatter()
        logHandler.setFormatter(formatter)
        logger = logging.getLogger()
        logger.addHandler(logHandler)
        logger.setLevel(logging.INFO)

    setup_production_logging()
    n = {"calls": 0}

    @opero(retries=2, min_delay=0.001, jitter=0)
    def flaky():
        n["calls"] += 1
        if n["calls"] < 3:
            raise ConnectionError("reset by peer")
        return "ok"

    assert flaky() == "ok"
    structlog.get_logger("opero.metrics").info("function_call", function="flaky", status="success")
"""


def test_seed_json_setup_gets_the_fields_once() -> None:
    """The seeds' production setup: every stderr line is JSON, opero's with their fields, none twice."""
    proc = _run(SEED_SETUP)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr  # two retries + the structlog line; no plain-text copy
    records = [json.loads(line) for line in lines]
    retries = [r for r in records if r.get("event") == "retry"]
    assert [(r["attempt"], r["round"], r["error_type"], r["error"]) for r in retries] == [
        (1, 1, "ConnectionError", "reset by peer"),
        (2, 2, "ConnectionError", "reset by peer"),
    ]
    assert all(r["function"] == "__main__.flaky" and r["delay"] > 0 for r in retries)
    assert (
        retries[0]["message"]
        == "retrying __main__.flaky in 0.001 s (attempt 1 raised ConnectionError: reset by peer)"
    )
    # the seeds' own structlog line goes through the same root handler
    metric = json.loads(records[2]["message"])
    assert (metric["event"], metric["function"], metric["logger"]) == (
        "function_call",
        "flaky",
        "opero.metrics",
    )


def test_structlog_renders_opero_records_with_their_fields() -> None:
    """structlog's ProcessorFormatter with ExtraAdder turns opero's extra into event-dict keys."""
    proc = _run(
        """
        import logging, structlog
        from opero import configure_logging, opero

        handler = logging.StreamHandler()
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
        ))
        logging.getLogger().addHandler(handler)
        configure_logging("INFO")

        @opero(retries=1, min_delay=0.001, jitter=0)
        def down():
            raise OSError("no route")

        try:
            down()
        except Exception:
            pass
        """
    )
    records = [json.loads(line) for line in proc.stderr.strip().splitlines()]
    assert [(r["event"], r["level"]) for r in records] == [("retry", "warning"), ("failure", "info")]
    assert records[0]["error_type"] == "OSError" and records[0]["attempt"] == 1
    assert records[1]["error_type"] == "opero.AllFailedError"


@pytest.mark.parametrize("order", ["root first", "opero first", "opero only"])
def test_configure_logging_never_prints_a_line_twice(order: str) -> None:
    """With or without a configured root logger, in either order, each line appears once."""
    setup = {
        "root first": "logging.basicConfig(level=logging.INFO); configure_logging('INFO'); "
        "configure_logging('INFO')",
        "opero first": "configure_logging('INFO'); logging.basicConfig(level=logging.INFO)",
        "opero only": "configure_logging('INFO'); configure_logging('INFO')",
    }[order]
    proc = _run(
        f"""
        import logging
        from opero import configure_logging, opero
        {setup}

        @opero(retries=2, min_delay=0.001)
        def down():
            raise ConnectionError("x")

        try:
            down()
        except Exception:
            pass
        """
    )
    lines = proc.stderr.strip().splitlines()
    assert sum("retrying __main__.down" in line for line in lines) == 2, proc.stderr
    assert sum("__main__.down: failed after" in line for line in lines) == 1, proc.stderr
    assert len(lines) == 3


def test_configure_logging_rejects_unknown_level_naming_it() -> None:
    """A bad level name raises ConfigurationError naming the value and the allowed ones."""
    with pytest.raises(opero.ConfigurationError, match=r"'LOUD'.*DEBUG, INFO, WARNING"):
        opero.configure_logging("LOUD")


@pytest.mark.dask
@pytest.mark.timeout(180)
def test_in_process_dask_map_keeps_the_logger_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: a dask map on an in-process cluster disabled the caller's opero logger.

    Its worker threads share this process: the map's retry is logged once, here, and the
    logger still works afterwards.
    """
    from distributed import Client, LocalCluster

    seen: set[int] = set()

    @opmap(mode="dask", retries=1, min_delay=0.001, progress=False)
    def once(x: int) -> int:
        if x == 2 and x not in seen:
            seen.add(x)
            raise ConnectionError("blip")
        return x

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
        caplog.at_level(logging.INFO, logger="opero"),
    ):
        assert once(range(4)) == [0, 1, 2, 3]
    assert not logging.getLogger("opero").disabled
    retries = [r for r in caplog.records if getattr(r, "event", None) == "retry"]
    assert len(retries) == 1 and retries[0].function == once.stats.name  # type: ignore[attr-defined]
