"""Executors: where the items of a map run (thread, process, async, async_process, dask).

Every executor takes ``(index, item)`` pairs lazily from one iterator and hands back lists of
outcomes ``(index, ok, value, item)`` as they complete (``_chunks``); ordering, progress and
results are the map's business (``_map``). Items travel in chunks sized from measured item
times, and each item runs through the Plan directly: no executor future per item.

- ``thread``: ``workers`` threads pulling chunks (cheap enough that 20,000 tiny items take a
  few milliseconds); an ``async def`` function gets one event loop per thread.
- ``process`` / ``async_process``: opero's own process pool (``processes``).
- ``async``: one event loop, ``workers`` lanes pulling items: at most ``workers`` in flight.
- ``dask``: chunks as tasks on the active ``distributed.Client`` or a LocalCluster.

Inside an enclosing ``joblib.parallel_config(backend=...)``, thread and process maps run
their chunks through ``joblib.Parallel`` on the configured backend instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

from .._compat import joblib_config
from .._options import MODES
from ._chunks import MapCall, Outcome, Window

__all__ = ["MODES", "async_outcomes", "default_workers", "sync_outcomes"]


def default_workers(mode: str) -> int:
    """The defaults: threads min(32, cpus+4), processes cpus, async 64."""
    cpus = os.cpu_count() or 1
    if mode == "thread":
        return min(32, cpus + 4)
    if mode == "async":
        return 64
    return cpus


def sync_outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> Iterator[list[Outcome]]:
    """The executor for ``call.mode``, run from synchronous code."""
    if call.mode in ("thread", "process") and joblib_config() is not None:
        from .dask import joblib_outcomes

        return joblib_outcomes(call, source, window)
    import importlib

    module = importlib.import_module(f"{__name__}.{MODES[call.mode]}")
    return module.outcomes(call, source, window)  # type: ignore[no-any-return]


def async_outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> AsyncIterator[list[Outcome]]:
    """The executor of an awaited map: ``workers`` lanes on the running loop."""
    from .local import async_outcomes as lanes

    return lanes(call, source, window)
