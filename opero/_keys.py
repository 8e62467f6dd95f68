"""Cache keys: the function's identity and its arguments bound by name.

A key has two parts: the function's identity and its arguments bound by name with defaults
applied. The memory backend takes a fast path for hashable arguments (typed, like
``lru_cache(typed=True)``) and falls back to ``joblib.hash`` (content hashing: lists, dicts,
numpy arrays, DataFrames). Persistent backends (disk, redis) always hash by content and add
a hash of the function's source, so editing the function misses.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ._options import Options
from ._telemetry import logger

__all__ = ["ArgumentBinder", "KeyBuilder"]


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
        #: Calls with exactly this many positional arguments (and no keywords) may build their
        #: memory key straight from ``args``: ``(args, tuple(map(type, args)))``, the same key
        #: :meth:`key` builds after binding. -1 when binding can change the values.
        self.memory_arity = (
            len(self.binder.names) if self.binder.simple and self.custom is None and not persistent else -1
        )

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
            # Memory keys live in this function's own cache: no identity part. Typed values
            # (f(1), f(1.0), f(True) differ): hashable arguments key as (values, types),
            # exactly what the fast path of Plan.call_sync builds from a positional call.
            values = tuple(bound.values())
            try:
                hash(values)
            except TypeError:
                return ("#", tuple(map(_memory_part, values)))
            return (values, tuple(map(type, values)))
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
