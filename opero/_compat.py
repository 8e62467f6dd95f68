"""Every private name of another library opero relies on, in one place.

Each reader says what it needs and falls back to a safe answer when the library changed,
so an upgrade of joblib, asyncio or logging breaks at most the feature, never an import.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable

__all__ = ["joblib_config", "level_cache", "mark_coroutine_function"]


def joblib_config() -> tuple[object, int | None] | None:
    """The backend and n_jobs of an enclosing ``joblib.parallel_config``, if one is active.

    joblib keeps the active configuration in the private ``joblib.parallel._backend``
    (a thread-local); it has no public reader.
    """
    if "joblib.parallel" not in sys.modules:  # nobody configured joblib in this process
        return None
    try:
        from joblib.parallel import _backend, default_parallel_config
    except ImportError:  # a joblib without them: no enclosing configuration we can see
        return None
    config = getattr(_backend, "config", None)
    if not config or config["backend"] is default_parallel_config["backend"]:
        return None
    n_jobs = config["n_jobs"]
    return config["backend"], n_jobs if isinstance(n_jobs, int) else None


def mark_coroutine_function(obj: Callable[..., object]) -> None:
    """Make ``asyncio.iscoroutinefunction(obj)`` and ``inspect.iscoroutinefunction(obj)`` True.

    For a callable object standing for an ``async def`` function: asyncio (before 3.14)
    looks for the private marker ``asyncio.coroutines._is_coroutine``; inspect (3.12+) has
    ``markcoroutinefunction``.
    """
    import asyncio

    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        vars(obj)["_is_coroutine"] = marker  # an instance attribute, as asyncio sets it
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(obj)


def level_cache(logger: logging.Logger) -> dict[int, bool]:
    """The logger's private ``isEnabledFor`` cache (level -> answer), or an empty dict.

    logging fills it per level and empties it on every ``setLevel`` or ``logging.disable``:
    a cached False is the cheapest exact "nobody logs this".
    """
    cache = getattr(logger, "_cache", None)
    return cache if isinstance(cache, dict) else {}
