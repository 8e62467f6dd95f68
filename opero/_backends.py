"""Persistent caches (disk, redis) and shared limiter stores (machine, cluster).

This module only picks the implementation; each lives in its own private module and is
imported when first needed (``import opero`` must not import redis):

- ``_diskcache``: files under ``OPERO_CACHE_DIR`` with a memory tier in front;
- ``_rediscache``: redis-py, expiry by redis, SCAN-based clearing;
- ``_shmstore``: GCRA state in ``/dev/shm`` under ``flock`` (``rate_limit_backend="local"``);
- ``_redislimit``: GCRA as one Lua script on the server (``rate_limit_backend="redis"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._limit import Store
from ._options import Options

if TYPE_CHECKING:
    from ._cache import CacheBackend, KeyBuilder

__all__ = ["clear_persistent", "make_limiter_store", "make_persistent_cache"]


def make_persistent_cache(func: Callable[..., Any], options: Options, builder: KeyBuilder) -> CacheBackend:
    """The disk or redis cache of one function (its folder / key prefix is its qualified name)."""
    if options.cache_backend == "redis":
        from ._rediscache import RedisCache

        return RedisCache(options.cache_backend_config, options.cache_namespace, builder.name)
    from ._diskcache import DiskCache, cache_location

    max_memory = int(options.cache_backend_config.get("max_size", 10_000))
    return DiskCache(cache_location(options), options.cache_namespace, builder.name, max_memory)


def make_limiter_store(options: Options, name: str, scoped: bool) -> Store:
    """The state store of a limiter for ``options.rate_limit_backend``.

    ``"local"``: a file in ``/dev/shm`` shared by this host's processes (a scope by name; a
    function's own budget by this process and the workers it sends the limiter to).
    ``"redis"``: a hash on the redis server of ``cache_backend_config`` / ``OPERO_REDIS_URL``.

    Raises:
        ConfigurationError: a scope is in use elsewhere with a different rate or burst.
    """
    assert options.rate_limit is not None
    if options.rate_limit_backend == "redis":
        from ._redislimit import RedisStore

        return RedisStore.for_limit(
            dict(options.cache_backend_config), name, options.rate_limit, options.rate_burst, scoped
        )
    from ._shmstore import ShmStore, function_path, scope_path

    if scoped:
        return ShmStore(scope_path(name), options.rate_limit, options.rate_burst, scoped=True)
    return ShmStore(function_path(name), options.rate_limit, options.rate_burst, scoped=False, owner=True)


def clear_persistent(namespace: str | None) -> None:
    """Clear ``namespace`` (None: all) in the disk cache and on known redis servers.

    Registered in ``_cache.namespace_clearers``: ``opero.clear_cache`` thus also deletes
    entries other processes wrote, even in a process that never decorated a function.
    The disk roots are those used here plus the default; redis servers are those used here
    plus ``OPERO_REDIS_URL`` when set (redis is not imported otherwise).
    """
    from ._diskcache import clear_namespace as clear_disk

    clear_disk(namespace)
    import sys

    if "opero._rediscache" in sys.modules or _env_redis():
        from ._rediscache import clear_namespace as clear_redis

        clear_redis(namespace)


def _env_redis() -> bool:
    import os

    return bool(os.environ.get("OPERO_REDIS_URL"))
