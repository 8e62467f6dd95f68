"""The memory cache: keys, TTL, LRU bound, methods, unhashable arguments (SPEC §4)."""

from __future__ import annotations

import opero as opero_pkg
from opero import opero
from tests.shared.cache_memory import counter


def test_cache_clear_and_clear_cache_namespace() -> None:
    """fn.cache_clear() empties one function; clear_cache(namespace) only that namespace."""
    f, fcalls = counter()
    g, gcalls = counter()
    wf = opero(cache=True, cache_namespace="a")(f)
    wg = opero(cache=True, cache_namespace="b")(g)
    wf(1)
    wg(1)
    wf.cache_clear()
    wf(1)
    assert len(fcalls) == 2
    opero_pkg.clear_cache(namespace="b")
    wf(1)
    wg(1)
    assert (len(fcalls), len(gcalls)) == (2, 2)
    opero_pkg.clear_cache()
    wf(1)
    wg(1)
    assert (len(fcalls), len(gcalls)) == (3, 3)
