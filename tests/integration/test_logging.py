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

import pytest

from opero import opmap

ROOT = Path(__file__).resolve().parents[2]


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


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.event for r in caplog.records if hasattr(r, "event")]  # type: ignore[attr-defined]


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
