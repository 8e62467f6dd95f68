"""Shared fixtures. Service fixtures live in tests/_fixtures_*.py (one owner each)."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import opero
from opero import _options

# Pull in every fixture module so each area keeps its fixtures in its own file.
for _mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _mod.name.startswith("_fixtures_"):
        globals().update(
            {
                k: v
                for k, v in vars(importlib.import_module(f"tests.{_mod.name}")).items()
                if not k.startswith("__")
            }
        )

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a service is missing, but fail under CI=true (it must be installed)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_opero(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test gets default options, a private cache dir and no leftover testing mode."""
    monkeypatch.setenv("OPERO_CACHE_DIR", str(tmp_path_factory.mktemp("opero-cache")))
    _options.configure()
    yield
    _options.configure()
    opero.testing(False)


@pytest.fixture
def demo_server() -> Iterator[object]:
    """A loopback demo API (opero.demo) for the duration of one test."""
    from opero.demo import DemoServer

    with DemoServer(fail_rate=0.3) as server:
        yield server
