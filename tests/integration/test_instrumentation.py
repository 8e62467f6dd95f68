"""Instrumentation hooks against the real packages: prometheus-client and the OpenTelemetry SDK.

Metrics are read back from a private ``CollectorRegistry``; spans from the SDK's
``InMemorySpanExporter``. Process and dask maps run in real worker processes, whose events
travel home and reach the hooks in this process.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from opero import AllFailedError, opmap
from tests._fixtures_redis import run_python
from tests.shared.instrumentation import _finished, _value


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_prometheus_sees_dask_workers(registry: CollectorRegistry) -> None:
    """Events of a dask map (its own LocalCluster of worker processes) reach the parent."""

    @opmap(mode="dask", workers=2, retries=1, min_delay=0.001, progress=False)
    def third_fails(x: int) -> int:
        if x == 3:
            raise ConnectionError("dask side")
        return x

    out = third_fails(range(6))
    assert isinstance(out[3], AllFailedError)
    name = third_fails.stats.name
    assert _value(registry, "opero_calls_total", function=name, outcome="success") == 5
    assert _value(registry, "opero_retries_total", function=name, error_type="ConnectionError") == 1


def test_importing_the_hooks_imports_neither_package() -> None:
    """opero.instrumentation imports prometheus_client / opentelemetry only when enabled."""
    code = (
        "import sys, opero; assert 'opero.instrumentation' not in sys.modules; "
        "import opero.instrumentation; "
        "print([m for m in ('prometheus_client', 'opentelemetry') if m in sys.modules])"
    )
    assert run_python(code).strip() == "[]"


def test_prometheus_sees_process_workers(registry: CollectorRegistry) -> None:
    """Events of a real process map reach the parent's registry: every call and retry."""

    @opmap(mode="process", workers=2, retries=1, min_delay=0.001, progress=False)
    def odd_fails_once(x: int) -> tuple[int, int]:
        if x == 5:
            raise ConnectionError("worker side")
        return x, os.getpid()

    out = odd_fails_once(range(12))
    assert isinstance(out[5], AllFailedError)
    assert os.getpid() not in {v[1] for i, v in enumerate(out) if i != 5}
    name = odd_fails_once.stats.name
    assert _value(registry, "opero_calls_total", function=name, outcome="success") == 11
    assert _value(registry, "opero_calls_total", function=name, outcome="failure") == 1
    assert _value(registry, "opero_retries_total", function=name, error_type="ConnectionError") == 1
    assert _value(registry, "opero_call_duration_seconds_count", function=name) == 12
    assert _value(registry, "opero_in_flight", function=name) == 0


def test_spans_of_process_workers_reach_the_parent(spans: Any) -> None:
    """A process map's calls become spans in the parent with the workers' pids and retries."""
    exporter, _ = spans
    marker: dict[str, int] = {}

    @opmap(mode="process", workers=2, retries=2, min_delay=0.001, progress=False)
    def item(x: int) -> int:
        if x == 2 and not marker:
            marker["x"] = 1  # per worker process: each worker fails item 2 once
            raise ConnectionError("first try")
        return x

    assert item(range(6)) == list(range(6))
    got = _finished(exporter, item.stats.name)
    assert len(got) == 6
    pids = {s.attributes["opero.pid"] for s in got if s.attributes}
    assert os.getpid() not in pids
    attempts = sorted(int(s.attributes["opero.attempts"]) for s in got if s.attributes)  # type: ignore[arg-type]
    assert attempts == [1, 1, 1, 1, 1, 2]
    (retried,) = [s for s in got if s.attributes and s.attributes["opero.attempts"] == 2]
    assert [e.name for e in retried.events] == ["retry"]
