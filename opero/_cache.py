"""Cache keys and backends.

A key has two parts: the function's identity and its arguments bound by name with defaults
applied. The memory backend takes a fast path for hashable arguments (typed, like
``lru_cache(typed=True)``) and falls back to ``joblib.hash`` (content hashing: lists, dicts,
numpy arrays, DataFrames). Persistent backends (disk, redis) always hash by content and add
a hash of the function's source, so editing the function misses.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

from ._options import Options
from ._telemetry import logger

__all__ = ["MISS", "ArgumentBinder", "CacheBackend", "KeyBuilder", "MemoryCache", "clear_cache", "make_cache"]


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


#: Returned by ``CacheBackend.get`` when there is no usable entry.
MISS: Any = _Miss()


class CacheBackend(Protocol):
    """What every cache backend provides; keys come from :class:`KeyBuilder`."""

    namespace: str

    def get(self, key: Hashable) -> Any:
        """Return the stored value or ``MISS`` (also for expired, corrupt or unreachable entries)."""

    def set(self, key: Hashable, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (None: forever); never raises on backend faults."""

    def clear(self) -> None:
        """Drop this function's entries."""


class ArgumentBinder:
    """Binds a call's arguments to parameter names with defaults applied, fast when simple."""

    __slots__ = ("defaults", "names", "signature", "simple")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        self.names = tuple(p.name for p in params)
        self.defaults = tuple(p.default for p in params)
        # Only positional-or-keyword parameters: a positional call binds by zip.
        self.simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``{parameter: value}`` for this call, defaults included."""
        n = len(args)
        if self.simple and n <= len(self.names):
            out = dict(zip(self.names, args))
            for name, default in zip(self.names[n:], self.defaults[n:]):
                if name in kwargs:
                    out[name] = kwargs[name]
                elif default is not inspect.Parameter.empty:
                    out[name] = default
            if len(kwargs) + n <= len(self.names) and all(k in out for k in kwargs):
                return out
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


class _Unhashable(Exception):
    pass


def _memory_part(value: Any) -> Any:
    # Typed keys: f(1), f(1.0) and f(True) must not share an entry. Hashable values (self
    # included: its own hash and equality, identity by default) key by themselves; the
    # others (lists, dicts, arrays, frames) by content through joblib.hash.
    try:
        hash(value)
    except TypeError:
        return ("#", value.__class__, _content_hash(value))
    return (value.__class__, value)


class KeyBuilder:
    """Builds cache keys for one function.

    Args:
        func: the undecorated function.
        options: its resolved options (``cache_key`` is honoured).
        persistent: True for disk/redis: content hashes only, plus the source's hash.
    """

    def __init__(self, func: Callable[..., Any], options: Options, persistent: bool = False) -> None:
        self.binder = ArgumentBinder(func)
        self.custom = options.cache_key
        self.persistent = persistent
        self.name = f"{func.__module__}.{func.__qualname__}"
        self.identity: tuple[str, ...] = (self.name,)
        if persistent:
            import hashlib

            self.identity = (self.name, _source_hash(func))
            # blake2b state primed with the identity; copied per call for plain arguments.
            self._seed = hashlib.blake2b(repr(self.identity).encode(), digest_size=16)
        self._warned = False

    def key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Hashable | None:
        """The key of this call, or None when its arguments cannot be hashed (call uncached)."""
        try:
            bound = self.binder.bind(args, kwargs)
        except TypeError:
            return None  # a wrong call: let the function raise its own TypeError
        try:
            if self.custom is not None:
                part: Any = self.custom(**bound)
                if self.persistent:
                    return _persistent_hash((self.identity, "custom", part))
                return (*self.identity, "custom", part if _hashable(part) else _content_hash(part))
            if self.persistent:
                if all(v.__class__ in _PLAIN for v in bound.values()):
                    # repr of these types is already typed (1, 1.0, True, '1', b'1' differ).
                    h = self._seed.copy()
                    h.update(repr(tuple(bound.items())).encode())
                    return "p" + h.hexdigest()
                return _persistent_hash((self.identity, _typed_items(bound)))
            return (*self.identity, tuple(map(_memory_part, bound.values())))
        except _Unhashable as exc:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"opero: {self.name} received an argument that cannot be hashed ({exc}); "
                    "such calls run uncached",
                    RuntimeWarning,
                    stacklevel=4,
                )
            logger.info("%s: unhashable arguments, call runs uncached", self.name)
            return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _typed_items(bound: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple((k, type(v).__qualname__, v) for k, v in bound.items())


#: Exact types whose ``repr`` is deterministic across processes and runs (no hash seeds, no
#: addresses), so a persistent key can skip ``joblib.hash`` (~16 µs) for them.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _plain(value: Any) -> bool:
    cls = value.__class__
    if cls in _PLAIN:
        return True
    return cls is tuple and all(map(_plain, value))


def _persistent_hash(value: tuple[Any, ...]) -> str:
    """A stable key for disk/redis: blake2b of the repr for plain values, else ``joblib.hash``."""
    if _plain(value):
        import hashlib

        # "p" keeps this key space apart from joblib's hex digests.
        return "p" + hashlib.blake2b(repr(value).encode(), digest_size=16).hexdigest()
    return _content_hash(value)


def _content_hash(value: Any) -> str:
    import joblib

    try:
        return str(joblib.hash(value))
    except Exception as exc:  # pickling failed: a lock, a generator, an open socket...
        raise _Unhashable(f"{type(exc).__name__}: {exc}") from exc


def _source_hash(func: Callable[..., Any]) -> str:
    import hashlib

    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        # No source file (``python -c``, exec'd code): the bytecode alone would miss an edited
        # constant, so hash the code objects' bytecode, constants and names recursively.
        code = getattr(func, "__code__", None)
        source = _code_fingerprint(code) if code is not None else func.__qualname__
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _code_fingerprint(code: Any) -> str:
    consts = tuple(_code_fingerprint(c) if inspect.iscode(c) else repr(c) for c in code.co_consts)
    return repr((code.co_code, consts, code.co_names))


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


# Every live cache of this process, for clear_cache(namespace).
_caches: weakref.WeakSet[Any] = weakref.WeakSet()
#: Extra clearers registered by persistent backends (they also hold entries of functions
#: that this process never decorated). Each receives the namespace or None for all.
namespace_clearers: list[Callable[[str | None], None]] = []


def _clear_persistent(namespace: str | None) -> None:
    # Imported on use: the disk and redis modules stay out of ``import opero``.
    from ._backends import clear_persistent

    clear_persistent(namespace)


namespace_clearers.append(_clear_persistent)


def make_cache(func: Callable[..., Any], options: Options) -> tuple[KeyBuilder, CacheBackend] | None:
    """Build the key builder and backend that ``options`` ask for, or None without caching."""
    if not options.cache:
        return None
    backend: CacheBackend
    if options.cache_backend == "memory":
        max_size = int(options.cache_backend_config.get("max_size", 10_000))
        backend = MemoryCache(options.cache_namespace, max_size)
        builder = KeyBuilder(func, options, persistent=False)
    else:
        from ._backends import make_persistent_cache

        builder = KeyBuilder(func, options, persistent=True)
        backend = make_persistent_cache(func, options, builder)
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
    for clearer in list(namespace_clearers):
        clearer(namespace)
