"""Helpers shared by tests/unit/test_backends_disk.py and tests/integration/test_backends_disk.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import opero


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.pkl"))


_SCALE = 1


def _factory(backend: str, config: dict[str, Any] | None = None) -> Any:
    def make(k: Any) -> Any:
        @opero.opero(cache=True, cache_backend=backend, cache_backend_config=config or {})
        def times(x: int) -> Any:
            return (x, k)

        return times

    return make


def check_closures_do_not_share(backend: str, config: dict[str, Any] | None = None) -> None:
    """Two closures from one factory (same source, same name) never share entries."""
    make = _factory(backend, config)
    assert make(1)(5) == (5, 1)
    assert make(2)(5) == (5, 2)
    assert make([1, 2])(5) == (5, [1, 2])  # a non-plain cell value: by content
    assert make([1, 3])(5) == (5, [1, 3])
    assert make(1)(5) == (5, 1)  # and the first one's entry is still served


def check_plain_globals_in_key(
    backend: str, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any] | None = None
) -> None:
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend=backend, cache_backend_config=config or {})
    def scaled(x: int) -> int:
        calls.append(x)
        return x * _SCALE

    assert [scaled(3), scaled(3)] == [3, 3] and calls == [3]
    monkeypatch.setattr(__import__(__name__, fromlist=["_SCALE"]), "_SCALE", 10)
    assert scaled(3) == 30 and calls == [3, 3]
