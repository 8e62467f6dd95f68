"""Where a cache entry or a rate budget lives: one module per place, loaded by name.

- ``memory``: a per-process LRU with expiry (``cache_backend="memory"``);
- ``disk``: signed files under ``OPERO_CACHE_DIR`` with a memory tier (``"disk"``);
- ``redis``: the connection, the shared cache (``"redis"``) and the cluster-wide limiter
  store (``rate_limit_backend="redis"``);
- ``host``: the host-wide limiter store, a locked file (``rate_limit_backend="local"``).

The tables below name the module of each backend; optional worlds (redis) are imported on
first use only, so ``import opero`` never imports them. Adding a backend is one module and
one line in a table (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import sys
import threading
import weakref
from collections.abc import Callable
from types import ModuleType

from .._breaker import Breaker
from .._breaker import initial as breaker_initial
from .._errors import ConfigurationError
from .._keys import KeyBuilder
from .._limit import Adaptive, Limiter, Store
from .._options import CACHE_BACKENDS, LIMIT_BACKENDS, Options
from ._base import MISS, CacheBackend

__all__ = [
    "MISS",
    "CacheBackend",
    "clear_cache",
    "get_breaker",
    "get_limiter",
    "make_cache",
    "namespace_clearers",
]

#: The tables live in ``_options`` (one each, also what validation allows); named here too.
LIMITER_BACKENDS = LIMIT_BACKENDS


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


# Every live cache of this process, for clear_cache(namespace).
_caches: weakref.WeakSet[CacheBackend] = weakref.WeakSet()
#: Extra clearers (the cell cache registers one). Each receives the namespace or None for all.
namespace_clearers: list[Callable[[str | None], None]] = []


def make_cache(func: Callable[..., object], options: Options) -> tuple[KeyBuilder, CacheBackend] | None:
    """Build the key builder and backend that ``options`` ask for, or None without caching."""
    if not options.cache:
        return None
    persistent = options.cache_backend != "memory"
    builder = KeyBuilder(func, options, persistent=persistent)
    backend: CacheBackend = _module(CACHE_BACKENDS[options.cache_backend]).make_cache(options, builder)
    _caches.add(backend)
    return builder, backend


def clear_cache(namespace: str | None = None) -> None:
    """Empty opero's caches: every namespace, or only ``namespace``.

    Memory caches of this process are emptied; for the disk and redis backends the entries
    of that namespace are deleted from the store, also those written by other processes.

    Args:
        namespace: the ``cache_namespace`` to clear; None clears all.
    """
    for cache in list(_caches):
        if namespace is None or cache.namespace == namespace:
            cache.clear()
    _clear_persistent(namespace)
    for clearer in list(namespace_clearers):
        clearer(namespace)


def _clear_persistent(namespace: str | None) -> None:
    # The disk roots are those used here plus the default; redis servers are those used here
    # plus OPERO_REDIS_URL when set (redis is not imported otherwise).
    import os

    _module("disk").clear_namespace(namespace)
    if f"{__name__}.redis" in sys.modules or os.environ.get("OPERO_REDIS_URL"):
        _module("redis").clear_namespace(namespace)


# Scope limiters of this process, one per (backend, scope): every function naming a scope
# shares it. They stay for the life of the process (one descriptor per scope name, not per
# decoration). A function's own limiter is not kept here: it lives and dies with its Plan,
# which closes its descriptor and removes its file (see stores/host.py).
_limiters: dict[tuple[str, str], Limiter] = {}
_limiters_lock = threading.Lock()


def get_limiter(options: Options, func_name: str) -> Limiter | None:
    """The limiter of a function: its own, or its scope's (shared by every function naming it).

    Raises:
        ConfigurationError: a scope is already in use with a different rate or burst.
    """
    rate = options.start_rate
    if rate is None:
        return None
    scope = options.rate_limit_scope
    module = _module(LIMITER_BACKENDS[options.rate_limit_backend])
    if not scope:
        own: Store = module.limiter_store(options, func_name, False)
        return Limiter(
            func_name, rate, options.rate_burst, own, _adaptive(module, options, rate, func_name, False)
        )
    key = (options.rate_limit_backend, scope)
    with _limiters_lock:
        existing = _limiters.get(key)
        if existing is not None:
            if existing.rate != rate or existing.burst != options.rate_burst:
                raise ConfigurationError(
                    f"rate_limit_scope={scope!r} already has rate_limit={existing.rate:g}, "
                    f"rate_burst={existing.burst}; got rate_limit={options.rate_limit!r}, "
                    f"rate_burst={options.rate_burst!r}. Functions sharing a scope must give the same rate."
                )
            return existing
        store: Store = module.limiter_store(options, scope, True)
        limiter = Limiter(
            scope, rate, options.rate_burst, store, _adaptive(module, options, rate, scope, True)
        )
        _limiters[key] = limiter
        return limiter


def _adaptive(module: ModuleType, options: Options, rate: float, name: str, scoped: bool) -> Adaptive | None:
    if not options.is_adaptive:
        return None
    # "auto" probes upwards (slow start) until the server first pushes back; a rate given as
    # a number starts there (its ceiling) and only comes down when the server says so.
    initial = Adaptive.initial(rate, probing=options.rate_limit == "auto")
    return Adaptive(module.record_store(options, "aimd", name, scoped, initial), options.rate_ceiling)


# Scope breakers of this process (one per backend and scope), like the scope limiters.
_breakers: dict[tuple[str, str], Breaker] = {}


def get_breaker(options: Options, func_name: str) -> Breaker | None:
    """The circuit breaker of a function, or of its ``rate_limit_scope`` (shared like the rate
    budget: by every function naming the scope, on this host or through redis)."""
    settings = options.breaker
    if settings is None:
        return None
    scope = options.rate_limit_scope
    backend = _module(LIMITER_BACKENDS[options.rate_limit_backend])
    initial = breaker_initial(int(settings["failures"]))
    if not scope:  # a function's own breaker: its plan holds it, its workers get a copy
        return Breaker(
            func_name, backend.record_store(options, "breaker", func_name, False, initial), settings
        )
    key = (options.rate_limit_backend, scope)
    with _limiters_lock:
        existing = _breakers.get(key)
        if existing is None:
            record = backend.record_store(options, "breaker", scope, True, initial)
            existing = _breakers[key] = Breaker(scope, record, settings)
        return existing
