"""Persistent caches (disk, redis) and shared limiter stores (machine, cluster)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError
from ._limit import LocalStore, Store
from ._options import Options

if TYPE_CHECKING:
    from ._cache import CacheBackend, KeyBuilder


def make_persistent_cache(func: Callable[..., Any], options: Options, builder: KeyBuilder) -> CacheBackend:
    """The disk or redis cache of one function."""
    raise ConfigurationError(f"cache_backend={options.cache_backend!r} is not available yet")


def make_limiter_store(options: Options, name: str, scoped: bool) -> Store:
    """The state store of a limiter for ``options.rate_limit_backend``."""
    return LocalStore()
