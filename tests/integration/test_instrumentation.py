"""Instrumentation hooks against the real packages: prometheus-client and the OpenTelemetry SDK.

Metrics are read back from a private ``CollectorRegistry``; spans from the SDK's
``InMemorySpanExporter``. Process and dask maps run in real worker processes, whose events
travel home and reach the hooks in this process.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from opero import AllFailedError, opmap
from tests._fixtures_redis import run_python
from tests.shared.instrumentation import _value


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
