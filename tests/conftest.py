"""Shared fixtures. Service fixtures live in tests/_fixtures_*.py (one owner each), listed in
pytest_plugins below: a new fixture module is one more name there."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import opero

# Each area keeps its fixtures in its own module (one owner each); pytest loads them here.
pytest_plugins = [
    "tests._fixtures_redis",
    "tests._fixtures_browser",
    "tests._fixtures_nginx",
    # fixtures shared by a module's unit and integration halves (tests/shared/<module>.py)
    "tests.shared.core",
    "tests.shared.instrumentation",
    "tests.shared.notebook_magics",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a service is missing, but fail under CI=true (it must be installed)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {reason}")
    pytest.skip(reason)  # only outside CI: under CI=true the line above fails instead


@pytest.fixture(autouse=True)
def _isolated_opero(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test gets default options, a private cache dir and no leftover testing mode."""
    monkeypatch.setenv("OPERO_CACHE_DIR", str(tmp_path_factory.mktemp("opero-cache")))
    opero.configure()
    yield
    opero.configure()
    opero.testing(False)


@pytest.fixture
def demo_server() -> Iterator[object]:
    """A loopback demo API (opero.demo) for the duration of one test."""
    from opero.demo import DemoServer

    with DemoServer(fail_rate=0.3) as server:
        yield server
