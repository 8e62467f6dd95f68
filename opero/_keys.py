"""Cache keys: the function's identity and its arguments bound by name.

A key has two parts: the function's identity and its arguments bound by name with defaults
applied. The memory backend takes a fast path for hashable arguments (typed, like
``lru_cache(typed=True)``) and falls back to ``joblib.hash`` (content hashing: lists, dicts,
numpy arrays, DataFrames). Persistent backends (disk, redis) always hash by content and add
a hash of the function's source, so editing the function misses, and what the function closes
over (:meth:`KeyBuilder.environment`), so two closures from one factory never share entries.

Big ``str``/``bytes`` arguments skip the ``repr`` fast path (a 32 MB ``bytes`` has a 128 MB
repr): they are hashed once, by ``joblib.hash``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Hashable, Mapping
from types import CellType, CodeType

from ._options import Options
from ._telemetry import logger

__all__ = ["ArgumentBinder", "KeyBuilder", "callable_name"]


class ArgumentBinder:
    """Binds a call's arguments to parameter names with defaults applied, fast when simple."""

    __slots__ = ("defaults", "names", "signature", "simple")

    def __init__(self, func: Callable[..., object]) -> None:
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        self.names = tuple(p.name for p in params)
        self.defaults = tuple(p.default for p in params)
        # Only positional-or-keyword parameters: a positional call binds by zip.
        self.simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)

    def bind(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> dict[str, object]:
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


def _memory_part(value: object) -> tuple[object, ...]:
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

    def __init__(self, func: Callable[..., object], options: Options, persistent: bool = False) -> None:
        self.binder = ArgumentBinder(func)
        self.custom = options.cache_key
        self.persistent = persistent
        func = getattr(func, "__opero_target__", func)  # a generator materialised by @opero
        self.name = callable_name(func)
        self.identity: tuple[str, ...] = (self.name,)
        self._env = _Environment(func) if persistent else None
        if persistent:
            import hashlib

            self.identity = (self.name, _source_hash(_code_target(func)))
            # blake2b state primed with the identity; copied per call for plain arguments.
            self._seed = hashlib.blake2b(repr(self.identity).encode(), digest_size=16)
        self._warned = False
        #: Calls with exactly this many positional arguments (and no keywords) may build their
        #: memory key straight from ``args``: ``(args, tuple(map(type, args)))``, the same key
        #: :meth:`key` builds after binding. -1 when binding can change the values.
        self.memory_arity = (
            len(self.binder.names) if self.binder.simple and self.custom is None and not persistent else -1
        )

    def key(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> Hashable | None:
        """The key of this call, or None when its arguments cannot be hashed (call uncached)."""
        try:
            bound = self.binder.bind(args, kwargs)
        except TypeError:
            return None  # a wrong call: let the function raise its own TypeError
        try:
            env = self._env() if self._env is not None else ()
            if self.custom is not None:
                part: object = self.custom(**bound)
                if self.persistent:
                    return _persistent_hash((self.identity, env, "custom", part))
                return (*self.identity, "custom", part if _hashable(part) else _content_hash(part))
            if self.persistent:
                # env is plain and small by construction (see _Environment.__call__).
                if all(map(_small_plain, bound.values())):
                    # repr of these types is already typed (1, 1.0, True, '1', b'1' differ).
                    h = self._seed.copy()
                    h.update(repr((env, tuple(bound.items())) if env else tuple(bound.items())).encode())
                    return "p" + h.hexdigest()
                return _persistent_hash((self.identity, env, _typed_items(bound)))
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
            self._uncached(exc)
            return None

    def _uncached(self, exc: _Unhashable) -> None:
        """Say (a warning once, then a log line per call) that an unhashable call runs uncached."""
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"opero: {self.name} received an argument that cannot be hashed ({exc}); "
                "such calls run uncached",
                RuntimeWarning,
                stacklevel=5,  # the caller of the decorated function (one frame deeper than key)
            )
        logger.info("%s: unhashable arguments, call runs uncached", self.name)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _typed_items(bound: Mapping[str, object]) -> tuple[tuple[str, str, object], ...]:
    return tuple((k, type(v).__qualname__, v) for k, v in bound.items())


#: Exact types whose ``repr`` is deterministic across processes and runs (no hash seeds, no
#: addresses), so a persistent key can skip ``joblib.hash`` (~16 µs) for them.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


#: Above this length a str/bytes is hashed by joblib.hash (once), not through its repr.
_BIG = 4096


def _small_plain(value: object) -> bool:
    # isinstance, not a class test: the same answer once the exact class is in _PLAIN, and
    # it tells the type checker that len() applies
    return value.__class__ in _PLAIN and (not isinstance(value, (str, bytes)) or len(value) <= _BIG)


def _plain(value: object, small: bool = True) -> bool:
    if value.__class__ in _PLAIN:
        return not small or not isinstance(value, (str, bytes)) or len(value) <= _BIG
    if type(value) is not tuple:
        return False
    for v in value:  # noqa: SIM110 (a loop, not all(<genexpr>): it runs for every persistent key)
        if not _plain(v, small):
            return False
    return True


def _env_value(value: object) -> object:
    # Plain and small as it is; a big str/bytes or a tuple holding one by its content hash.
    return value if _plain(value) else ("content", _content_hash(value))


def _persistent_hash(value: tuple[object, ...]) -> str:
    """A stable key for disk/redis: blake2b of the repr for small plain values, else ``joblib.hash``."""
    if _plain(value):
        import hashlib

        # "p" keeps this key space apart from joblib's hex digests.
        return "p" + hashlib.blake2b(repr(value).encode(), digest_size=16).hexdigest()
    return _content_hash(value)


def _content_hash(value: object) -> str:
    import joblib

    try:
        return str(joblib.hash(value))
    except Exception as exc:  # pickling failed: a lock, a generator, an open socket...
        raise _Unhashable(f"{type(exc).__name__}: {exc}") from exc


def callable_name(func: object) -> str:
    """``module.qualname`` of anything callable: a function, a ``functools.partial`` (named
    after the function it wraps) or an object with ``__call__`` (named after its class)."""
    import functools

    if isinstance(func, functools.partial):
        return f"{callable_name(func.func)}.partial"
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):
        cls = type(func)
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"{getattr(func, '__module__', None) or '__main__'}.{qualname}"


def _code_target(func: Callable[..., object]) -> Callable[..., object]:
    """The function whose source identifies ``func`` (a partial's function, an object's __call__)."""
    import functools

    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func):
        return func
    return type(func).__call__ if callable(func) else func


class _Environment:
    """What a function closes over, for persistent keys (decided in docs/decisions.md).

    - closure cells holding plain values (numbers, strings, bytes, None, tuples of them) are
      read at each call; other cell values (lists, dicts, arrays, objects, functions) are
      fingerprinted once, at decoration (by content, functions by name and their own cells),
      so a closure over a list it appends to, a client or a lock still caches;
    - globals the code reads (``co_names`` of the function and its nested code, found in
      ``func.__globals__``) whose value is plain, read at each call; modules, functions,
      classes and other objects are left out (code, or state opero cannot hash cheaply);
    - names the function itself assigns (``global x; x += 1``, ``nonlocal``) are left out:
      they change at every call and would make every call a miss;
    - a ``functools.partial``'s bound arguments, a bound method's object and a callable
      object's state, fingerprinted at decoration.
    """

    __slots__ = ("cells", "fixed", "globals", "names")

    def __init__(self, func: object) -> None:
        import functools

        fixed: list[tuple[str, object]] = []
        while isinstance(func, functools.partial):
            fixed.append(("partial", _by_content((func.args, tuple(sorted(func.keywords.items()))))))
            func = func.func
        if inspect.ismethod(func):
            fixed.append(("self", _by_content(func.__self__)))
            func = func.__func__
        elif not inspect.isfunction(func) and callable(func) and not inspect.isbuiltin(func):
            fixed.append(("self", _by_content(func)))  # a callable object: its state
            func = type(func).__call__
        func = getattr(func, "__func__", func)
        code = getattr(func, "__code__", None)
        stored = _stored_names(code) if code is not None else set()
        cells: list[tuple[str, CellType]] = []
        closure = getattr(func, "__closure__", None) or ()
        pairs = zip(code.co_freevars, closure, strict=False) if code is not None else ()
        for name, cell in pairs:
            if name in stored:
                continue
            try:
                value = cell.cell_contents
            except ValueError:  # empty at decoration (assigned later in the enclosing scope)
                cells.append((name, cell))
                continue
            if _plain(value, small=False):
                cells.append((name, cell))
            else:
                fixed.append((name, _cell_value(value, 0)))
        self.fixed = tuple(fixed)
        self.cells = tuple(cells)
        self.globals: Mapping[str, object] = getattr(func, "__globals__", {})
        self.names = tuple(sorted(_global_names(code) - stored)) if code is not None else ()

    def __call__(self) -> tuple[object, ...]:
        """The environment's values now (a tuple: empty when the function closes over nothing)."""
        if not self.cells and not self.names:
            return self.fixed
        out = list(self.fixed)
        for name, cell in self.cells:
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if _plain(value, small=False):
                out.append((name, _env_value(value)))
            else:  # rebound to an object since decoration: by its type (cheap, stable)
                out.append((name, ("object", callable_name(type(value)))))
        g = self.globals
        for name in self.names:
            value = g.get(name, _ABSENT)
            if value is not _ABSENT and _plain(value, small=False):
                out.append((name, _env_value(value)))
        return tuple(out)


def _stored_names(code: CodeType) -> set[str]:
    """Globals and cells the code (or its nested code) assigns or deletes."""
    import dis

    names: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL", "STORE_DEREF", "DELETE_DEREF"):
            names.add(str(ins.argval))
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _stored_names(const)
    return names


_ABSENT = object()


def _global_names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):  # nested functions, lambdas, comprehensions
            names |= _global_names(const)
    return names


def _cell_value(value: object, depth: int) -> object:
    if _plain(value, small=False):
        return _env_value(value)
    if callable(value) and hasattr(value, "_opero_plan"):  # a decorated function: its name
        return ("function", callable_name(value))
    if inspect.isfunction(value):
        if depth >= 3:  # a function closing over itself (recursion): its name is enough
            return ("function", callable_name(value))
        cells = value.__closure__ or ()
        inner = []
        for name, cell in zip(value.__code__.co_freevars, cells, strict=False):
            try:
                inner.append((name, _cell_value(cell.cell_contents, depth + 1)))
            except ValueError:
                continue
        return ("function", callable_name(value), tuple(inner))
    if inspect.ismodule(value):
        return ("module", value.__name__)
    if isinstance(value, type):
        return ("class", callable_name(value))
    return _by_content(value)


def _by_content(value: object) -> object:
    # Lists, dicts, arrays, frames, objects: by content, like arguments. Something that
    # cannot be pickled (a client, a lock) is identified by its type, so the call still caches.
    if _plain(value):
        return value
    try:
        return ("content", _content_hash(value))
    except _Unhashable:
        return ("object", callable_name(type(value)))


def _source_hash(func: Callable[..., object]) -> str:
    import hashlib

    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        # No source file (``python -c``, exec'd code): the bytecode alone would miss an edited
        # constant, so hash the code objects' bytecode, constants and names recursively.
        code = getattr(func, "__code__", None)
        source = _code_fingerprint(code) if code is not None else func.__qualname__
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _code_fingerprint(code: CodeType) -> str:
    consts = tuple(_code_fingerprint(c) if inspect.iscode(c) else repr(c) for c in code.co_consts)
    return repr((code.co_code, consts, code.co_names))
