"""Helpers shared by tests/unit/test_instrumentation.py and tests/integration/test_instrumentation.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from opero.instrumentation import (
    enable_prometheus,
    remove_hook,
)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    hook = enable_prometheus(reg)
    yield reg
    remove_hook(hook)


def _value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    got = reg.get_sample_value(name, labels)
    return 0.0 if got is None else got
