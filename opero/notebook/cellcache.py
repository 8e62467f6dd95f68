"""The cell cache of ``%%opero cache=True``: skip a cell whose source and inputs are unchanged.

A cell's *inputs* are the names it reads before assigning them (its free variables), looked
up in the user namespace; its *outputs* are the names it binds at the top level. The key is
``joblib.hash`` of the cell's source and its inputs' values. An entry holds the outputs
(modules by name, everything else pickled with cloudpickle), the text the cell printed and
its last expression's value, so a hit restores all three, also after a kernel restart.

The analysis is static and errs on the side of more inputs (a spurious input only costs a
miss, a missed one would restore stale values). Names read inside functions, lambdas and
comprehensions of the cell count as inputs unless the cell binds them itself.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import io
import os
import pickle
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from .._errors import ConfigurationError
from .._telemetry import logger

__all__ = [
    "CellEntry",
    "CellNames",
    "DiskCellStore",
    "MemoryCellStore",
    "Uncacheable",
    "analyse",
    "cache_root",
    "capture_outputs",
    "cell_key",
    "clear_cells",
    "make_store",
    "restore",
]

#: Bumped when the entry layout changes: old entries then simply miss.
FORMAT = 1


class Uncacheable(Exception):
    """This run of the cell cannot be cached; the message is the one-line note shown."""


# -- static analysis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CellNames:
    """What a cell reads and binds at the top level.

    Attributes:
        inputs: names read before the cell assigns them, in order of first read.
        outputs: names the cell binds (assigns, imports, defines or deletes).
        star_import: the cell runs ``from x import *``: its outputs cannot be known.
        imports: dotted modules the cell imports (``import urllib.request`` binds only
            ``urllib``; a restore must import the submodule too).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    star_import: bool = False
    imports: tuple[str, ...] = ()


def _target_names(node: ast.AST) -> Iterable[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            yield sub.id


def _scope_reads(node: ast.AST) -> tuple[set[str], set[str], set[str]]:
    """Names read, bound and declared ``global`` anywhere inside a nested scope's body."""
    reads: set[str] = set()
    binds: set[str] = set()
    globals_: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (reads if isinstance(sub.ctx, ast.Load) else binds).add(sub.id)
        elif isinstance(sub, ast.arg):
            binds.add(sub.arg)
        elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and sub is not node:
            binds.add(sub.name)
        elif isinstance(sub, ast.Import | ast.ImportFrom):
            binds.update((a.asname or a.name).split(".")[0] for a in sub.names)
        elif isinstance(sub, ast.Global):
            globals_.update(sub.names)
    return reads, binds, globals_


class _Scanner(ast.NodeVisitor):
    """Walks the top level in evaluation order; nested scopes are summarised, not entered."""

    def __init__(self) -> None:
        self.inputs: dict[str, None] = {}
        self.outputs: dict[str, None] = {}
        self.deferred: dict[str, None] = {}  # read by nested scopes, at call time
        self.star = False
        self.imports: dict[str, None] = {}

    def load(self, name: str) -> None:
        if name not in self.outputs and name not in self.inputs:
            self.inputs[name] = None

    def store(self, name: str) -> None:
        self.outputs.setdefault(name, None)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.load(node.id)
        else:  # Store and Del both change the binding the cell leaves behind
            self.store(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
            self.store(node.target.id)
        else:
            self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.annotation)
        if node.value is not None or not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.visit(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.store(alias.asname or alias.name.split(".")[0])
            self.imports.setdefault(alias.name, None)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.star = True
            else:
                self.store(alias.asname or alias.name)

    def _nested(self, node: ast.AST) -> None:
        reads, binds, globals_ = _scope_reads(node)
        for name in reads - binds:
            self.deferred.setdefault(name, None)
        for name in globals_:
            self.store(name)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults):
            if expr is not None:
                self.visit(expr)
        self._nested(node)
        self.store(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(expr)
        self._nested(node)
        self.store(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in (*node.args.defaults, *node.args.kw_defaults):
            if expr is not None:
                self.visit(expr)
        self._nested(node)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        # The first iterable is evaluated in the cell's scope, the rest in the comprehension's.
        self.visit(node.generators[0].iter)
        self._nested(node)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self.store(name)


def analyse(tree: ast.Module) -> CellNames:
    """Find a cell's inputs (read before bound) and outputs (bound at top level).

    Args:
        tree: the parsed cell (after IPython's input transformations).
    """
    scanner = _Scanner()
    for stmt in tree.body:
        scanner.visit(stmt)
    inputs = dict(scanner.inputs)
    for name in scanner.deferred:
        if name not in scanner.outputs:
            inputs.setdefault(name, None)
    return CellNames(tuple(inputs), tuple(scanner.outputs), scanner.star, tuple(scanner.imports))


# -- keys ----------------------------------------------------------------------------------------


#: A hashable stand-in for an input's value: ("module", name), ("code", name, hash), ("value", hash).
Fingerprint = tuple[str, ...]

#: How an output name is kept: ("module", its name), ("value", pickled bytes) or ("deleted",).
NameSpec = tuple[str | bytes, ...]


def _callable_fingerprint(value: Callable[..., object]) -> str:
    """Functions and classes defined in the notebook are hashed by their source code."""
    target = inspect.unwrap(value)
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        import cloudpickle

        try:
            source = repr(cloudpickle.dumps(target))
        except Exception:
            source = getattr(target, "__qualname__", repr(type(target)))
    return hashlib.sha256(source.encode()).hexdigest()


def value_fingerprint(name: str, value: object) -> Fingerprint:
    """A hashable stand-in for an input's value (raises :class:`Uncacheable`)."""
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    if isinstance(value, types.FunctionType | type) and getattr(value, "__module__", None) == "__main__":
        return ("code", getattr(value, "__qualname__", name), _callable_fingerprint(value))
    if callable(value) and hasattr(value, "__wrapped__") and getattr(value, "__module__", None) == "__main__":
        # an @opero function of the notebook: its body is what matters
        return ("code", getattr(value, "__qualname__", name), _callable_fingerprint(value))
    import joblib

    try:
        return ("value", str(joblib.hash(value)))
    except Exception as exc:
        raise Uncacheable(
            f"input {name!r} ({type(value).__name__}) cannot be hashed ({type(exc).__name__})"
        ) from exc


_ABSENT: Fingerprint = ("absent",)


def input_fingerprints(
    names: CellNames, user_ns: Mapping[str, object], hidden: Iterable[str] = ()
) -> list[tuple[str, Fingerprint]]:
    """Fingerprints of the cell's inputs as they are now in ``user_ns``."""
    hidden = set(hidden)
    out: list[tuple[str, Fingerprint]] = []
    for name in names.inputs:
        if name in hidden:
            out.append((name, ("hidden",)))
        elif name in user_ns:
            out.append((name, value_fingerprint(name, user_ns[name])))
        else:
            out.append((name, _ABSENT))  # a builtin or not defined yet
    return out


def cell_key(source: str, namespace: str, fingerprints: list[tuple[str, Fingerprint]]) -> str:
    """The cache key of a cell run: its source and its inputs' fingerprints."""
    import joblib

    return str(joblib.hash((FORMAT, namespace, source, fingerprints)))


# -- entries ---------------------------------------------------------------------------------


@dataclass
class CellEntry:
    """What a cell run left behind, ready to be restored.

    Attributes:
        names: name -> ``("module", module_name)``, ``("value", pickled bytes)`` or
            ``("deleted",)``.
        stdout: the text the cell printed.
        result: the pickled value of the cell's last expression, or None.
        created: ``time.time()`` when stored.
        elapsed: seconds the cell took to run.
        imports: dotted module names to import before the names are bound.
    """

    names: dict[str, NameSpec] = field(default_factory=dict)
    stdout: str = ""
    result: bytes | None = None
    created: float = 0.0
    elapsed: float = 0.0
    imports: tuple[str, ...] = ()

    def dumps(self) -> bytes:
        """Serialise (the values inside are already pickled)."""
        return pickle.dumps(
            {
                "format": FORMAT,
                "names": self.names,
                "stdout": self.stdout,
                "result": self.result,
                "created": self.created,
                "elapsed": self.elapsed,
                "imports": self.imports,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def loads(cls, data: bytes) -> CellEntry | None:
        """Deserialise; None for an entry of another format."""
        raw = pickle.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            return None
        return cls(
            raw["names"], raw["stdout"], raw["result"], raw["created"], raw["elapsed"], raw.get("imports", ())
        )


def _pickle(value: object) -> bytes:
    import cloudpickle

    return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def capture_outputs(
    names: CellNames, user_ns: Mapping[str, object], stdout: str, result: object, elapsed: float
) -> CellEntry:
    """Pickle what the cell bound; raises :class:`Uncacheable` naming the first bad name."""
    entry = CellEntry(stdout=stdout, created=time.time(), elapsed=elapsed, imports=names.imports)
    for name in names.outputs:
        if name not in user_ns:
            entry.names[name] = ("deleted",)
            continue
        value = user_ns[name]
        if isinstance(value, types.ModuleType):
            entry.names[name] = ("module", value.__name__)
            continue
        try:
            entry.names[name] = ("value", _pickle(value))
        except Exception as exc:
            raise Uncacheable(
                f"{name!r} ({type(value).__name__}) cannot be pickled ({type(exc).__name__})"
            ) from exc
    if result is not None:
        try:
            entry.result = _pickle(result)
        except Exception as exc:
            raise Uncacheable(
                f"the cell's result ({type(result).__name__}) cannot be pickled ({type(exc).__name__})"
            ) from exc
    return entry


def _rebind(value: object, user_ns: dict[str, object]) -> object:
    # cloudpickle gives a notebook function a private globals dict; rebind it to the user
    # namespace so it sees later changes of the globals it reads, as a re-run cell would.
    if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
        fresh = types.FunctionType(
            value.__code__, user_ns, value.__name__, value.__defaults__, value.__closure__
        )
        fresh.__kwdefaults__ = value.__kwdefaults__
        fresh.__qualname__ = value.__qualname__
        fresh.__doc__ = value.__doc__
        fresh.__annotations__ = value.__annotations__
        fresh.__dict__.update(value.__dict__)
        return fresh
    return value


def restore(entry: CellEntry, user_ns: dict[str, object]) -> object:
    """Put the entry's names back into ``user_ns`` and return the cell's result.

    Everything is unpickled first, so a failure (a class that changed, a module that is
    gone) leaves the namespace untouched and the caller runs the cell instead.
    """
    import cloudpickle

    for module in entry.imports:
        importlib.import_module(module)
    values: dict[str, object] = {}
    deleted: list[str] = []
    for name, spec in entry.names.items():
        match spec:
            case ("module", str(module)):
                values[name] = importlib.import_module(module)
            case ("value", bytes(data)):
                values[name] = _rebind(cloudpickle.loads(data), user_ns)
            case _:
                deleted.append(name)
    result = cloudpickle.loads(entry.result) if entry.result is not None else None
    user_ns.update(values)
    for name in deleted:
        user_ns.pop(name, None)
    return result


# -- stores --------------------------------------------------------------------------------


class CellStore(Protocol):
    """Where cell entries live; both methods swallow backend faults (a miss, never a crash)."""

    namespace: str

    def get(self, key: str) -> bytes | None:
        """The stored bytes, or None."""

    def set(self, key: str, data: bytes) -> None:
        """Store bytes under ``key``."""


_memory: dict[str, dict[str, bytes]] = {}
_memory_lock = threading.Lock()


class MemoryCellStore:
    """Entries kept in this kernel only (``cache_backend="memory"``)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def get(self, key: str) -> bytes | None:
        """The stored bytes, or None."""
        with _memory_lock:
            return _memory.get(self.namespace, {}).get(key)

    def set(self, key: str, data: bytes) -> None:
        """Store bytes under ``key``."""
        with _memory_lock:
            _memory.setdefault(self.namespace, {})[key] = data


def cache_root() -> Path:
    """``OPERO_CACHE_DIR``, or the user cache directory (read at each use: tests change it)."""
    env = os.environ.get("OPERO_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("opero"))


class DiskCellStore:
    """Entries in files under ``<cache dir>/cells/<namespace>/entries/``, one per key.

    The files are the persistent cache's own (:mod:`opero.stores.disk`): the signed entry
    format of :mod:`opero.stores._signed` (with ``OPERO_CACHE_SECRET`` set, an HMAC-SHA256
    checked on the raw bytes before anything is unpickled), folders 0700 and files 0600,
    atomic writes, and nothing in the folder followed. No memory tier: a cell's outputs can
    be large, and this kernel already holds them.
    """

    def __init__(self, namespace: str, location: str | os.PathLike[str] | None = None) -> None:
        from ..stores.disk import DiskCache

        self.namespace = namespace
        root = Path(location) if location is not None else cache_root()
        self._cache = DiskCache(root / "cells", namespace, "entries", max_memory=0)
        self.folder = self._cache.folder

    def get(self, key: str) -> bytes | None:
        """The stored payload, or None (missing, unreadable or with a bad signature)."""
        from ..stores import MISS

        value = self._cache.get(key)
        if value is MISS or not isinstance(value, bytes):
            return None
        return value

    def set(self, key: str, data: bytes) -> None:
        """Write atomically so a reader never sees half an entry (faults only log)."""
        self._cache.set(key, data, None)

    def clear(self) -> None:
        """Drop this namespace's cell entries."""
        self._cache.clear()


def make_store(backend: str, namespace: str, config: Mapping[str, object]) -> CellStore:
    """The store for a cell's ``cache_backend`` ("disk" or "memory")."""
    if backend == "memory":
        return MemoryCellStore(namespace)
    location = config.get("location")
    if location is not None and not isinstance(location, (str, os.PathLike)):
        raise ConfigurationError(f"cache_backend_config location must be a path, got {location!r}")
    return DiskCellStore(namespace, location)


def load_entry(store: CellStore, key: str, ttl: float | Callable[[], float] | None) -> CellEntry | None:
    """The entry under ``key`` if present, readable and not expired."""
    data = store.get(key)
    if data is None:
        return None
    try:
        entry = CellEntry.loads(data)
    except Exception as exc:  # a corrupt entry is a miss, never a crash
        logger.warning("opero cell cache: unreadable entry %s (%s); treated as a miss", key, exc)
        return None
    if entry is None:
        return None
    limit = float(ttl()) if callable(ttl) else ttl
    if limit is not None and time.time() - entry.created > limit:
        return None
    return entry


def clear_cells(namespace: str | None = None) -> None:
    """Drop cell entries of ``namespace`` (all when None), in memory and on disk."""
    import shutil

    with _memory_lock:
        if namespace is None:
            _memory.clear()
        else:
            _memory.pop(namespace, None)
    base = cache_root() / "cells"
    if namespace is not None:
        DiskCellStore(namespace).clear()
        return
    from ..stores._base import real_dir

    try:
        folders = [p for p in base.iterdir() if real_dir(p)]
    except OSError:
        return
    for folder in folders:  # entries/ only: the folders' generation files stay valid
        shutil.rmtree(folder / "entries", ignore_errors=True)


class Tee(io.TextIOBase):
    """A stdout that writes through to the real one and keeps a copy of the text."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.buffer_ = io.StringIO()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:  # type: ignore[override]
        """Write to both."""
        with self._lock:
            self.buffer_.write(text)
        self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        """Flush the real stream."""
        self.stream.flush()

    def getvalue(self) -> str:
        """The text written so far."""
        with self._lock:
            return self.buffer_.getvalue()

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)
