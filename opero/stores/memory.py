"""``cache_backend="memory"``: a bounded LRU with per-entry expiry, private to this process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

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
        self._data: OrderedDict[Hashable, tuple[object, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[object, ...]:
        # A memory cache is private to its process: another process gets an empty one.
        return (MemoryCache, (self.namespace, self.max_size))

    @property
    def entries(self) -> OrderedDict[Hashable, tuple[object, float | None]]:
        """``key -> (value, expires)``, least recently used first; the same object for life.

        ``Plan.call_sync`` reads hits from it directly (what :meth:`peek` does, inlined).
        """
        return self._data

    def get(self, key: Hashable) -> object:
        """Return the value or ``MISS``; expired entries are dropped on the way."""
        return self.peek(key)

    def peek(self, key: Hashable) -> object:
        """``get`` without a lock: each OrderedDict step is one C call, atomic under the GIL.

        A hit costs one lookup and one ``move_to_end``; an entry dropped by another thread
        between the two is still a hit (the value was read), never an error.
        """
        data = self._data
        entry = data.get(key)
        if entry is None:
            return MISS
        if entry[1] is not None and time.monotonic() >= entry[1]:
            with self._lock:
                if data.get(key) is entry:
                    del data[key]
            return MISS
        try:
            data.move_to_end(key)
        except KeyError:
            pass
        return entry[0]

    def set(self, key: Hashable, value: object, ttl: float | None) -> None:
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
