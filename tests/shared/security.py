"""Helpers shared by tests/unit/test_security.py and tests/integration/test_security.py."""

from __future__ import annotations

import opero

# -- the disk cache folder: links and FIFOs are never followed (issue 11.14) ------------------


def _disk_fn(calls: list[int], namespace: str = "opero") -> opero.OperoFunction[[int], int]:
    # ``calls`` reaches the function through a module global: a closure over the list would be
    # part of the key (by content), so each new decoration would use another entry.
    _CALLS[namespace] = calls

    @opero.opero(cache=True, cache_backend="disk", cache_namespace=namespace)
    def work(x: int) -> int:
        _CALLS[namespace].append(x)
        return x * 10

    return work


_CALLS: dict[str, list[int]] = {}
