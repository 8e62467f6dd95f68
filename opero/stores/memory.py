"""``cache_backend="memory"``: a bounded LRU with per-entry expiry, private to this process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from .._keys import KeyBuilder
from .._options import Options
from ._base import MISS

__all__ = ["MemoryCache", "make_cache"]


class MemoryCache:
    """A bounded, thread-safe LRU with per-entry expiry, private to this process."""

    __slots__ = ("__weakref__", "_data", "_lock", "max_size", "namespace")

    def __init__(self, namespace: str, max_size: int = 10_000) -> None:
        self.namespace = namespace
        self.max_size = max_size
        self._data: OrderedDict[Hashable, tuple[Any, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # A memory cache is private to its process: another process gets an empty one.
        return (MemoryCache, (self.namespace, self.max_size))

    def get(self, key: Hashable) -> Any:
        """Return the value or ``MISS``; expired entries are dropped on the way."""
        with self._lock:
            entry = self._data.get(key, None)
            if entry is None:
                return MISS
            value, expires = entry
            if expires is not None and time.monotonic() >= expires:
                del self._data[key]
                return MISS
            self._data.move_to_end(key)
            return value

    def set(self, key: Hashable, value: Any, ttl: float | None) -> None:
        """Store a value; the least recently used entry goes when the cache is full."""
        expires = time.monotonic() + ttl if ttl is not None else None
        with self._lock:
            self._data[key] = (value, expires)
            self._data.move_to_end(key)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<MemoryCache namespace={self.namespace!r} entries={len(self)}/{self.max_size}>"


def make_cache(options: Options, builder: KeyBuilder) -> MemoryCache:
    """The memory cache of one function (``cache_backend_config={"max_size": N}``)."""
    return MemoryCache(options.cache_namespace, int(options.cache_backend_config.get("max_size", 10_000)))
