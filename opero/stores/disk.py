"""``cache_backend="disk"``: a persistent cache in files, with a memory tier in front.

Layout: ``<location>/<namespace>/<function>/<key>.pkl``, one entry per file in the format of
:mod:`opero.stores._signed` (optionally HMAC-signed, expiry in the header), written to a temporary
file and ``os.replace``-d into place so readers never see half an entry. Folders are created
with mode 0700 and files with 0600: a cache holds pickles, which run code when loaded.

Why not ``joblib.Memory``'s own store: it unpickles its files itself, before opero could check
a signature, and it spends ~80 µs per hit on metadata. opero keeps joblib's ideas
(``joblib.hash`` content keys, a folder per function, validation at read time) and reads the
bytes itself. See docs/backends.md.

The memory tier keeps values this process has read or written. A tier hit is only served
when the entry's file is still the same file (inode and mtime, one ``stat``) and has not
expired, so a ``clear_cache`` from another process, a rewrite or a deletion is seen at once.

Nothing in the cache folder is followed: entries, markers and generation files are opened
with ``O_NOFOLLOW | O_NONBLOCK`` and must be regular files, and the namespace and function
folders must be real folders (``lstat``). A symbolic link, a FIFO or a device planted at an
entry's path is a miss (logged), never a hang, and never makes opero read or write elsewhere.
"""

from __future__ import annotations

import mmap
import os
import shutil
import stat
import threading
import time
from collections.abc import Hashable
from pathlib import Path

from .._keys import KeyBuilder
from .._options import Options
from .._telemetry import logger
from ._base import (
    MISS,
    NotRegular,
    atomic_write,
    open_regular,
    private_dirs,
    read_regular,
    real_dir,
    safe_name,
    unlink,
)
from ._signed import decode, encode

__all__ = ["DiskCache", "cache_location", "clear_namespace", "make_cache"]

#: Marks a folder as an opero namespace, so clearing "everything" never touches other files.
MARKER = ".opero-namespace"
#: Prefix of the per-namespace generation files (kept across clears, see _Generation).
GENERATION = ".opero-gen-"


def cache_location(options: Options) -> Path:
    """``cache_backend_config["location"]``, else ``OPERO_CACHE_DIR``, else the user cache dir."""
    location = options.cache_backend_config.get("location") or os.environ.get("OPERO_CACHE_DIR")
    if not location:
        import platformdirs

        location = platformdirs.user_cache_dir("opero")
    return Path(location).expanduser()


class _Generation:
    """An 8-byte token in a memory-mapped file, changed by every clear of a namespace.

    Memory tiers remember the token with each value and serve it only while the token is
    unchanged: a clear in any process invalidates every tier without a syscall per hit
    (reading the mapping costs ~0.1 µs; a ``stat`` of the entry would cost ~2 µs).
    """

    __slots__ = ("_map",)

    def __init__(self, path: Path) -> None:
        try:
            fd = open_regular(path, os.O_RDWR | os.O_CREAT)
        except NotRegular:
            # Planted (a link would make every clear write through it): remove the entry
            # itself, never its target, and start a fresh token file in its place.
            logger.warning("opero cache: %s is not a regular file; replaced", path)
            os.unlink(path)
            fd = open_regular(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            if os.fstat(fd).st_uid != os.getuid():
                raise NotRegular(0, "owned by another user", str(path))
            if os.fstat(fd).st_size < 8:
                os.pwrite(fd, os.urandom(8), 0)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def value(self) -> bytes:
        """The current token."""
        return self._map[:8]

    def bump(self) -> None:
        """Invalidate every memory tier of this namespace, in every process."""
        self._map[:8] = os.urandom(8)


_generations: dict[Path, _Generation | None] = {}


def _generation(location: Path, namespace: str) -> _Generation | None:
    path = location / f"{GENERATION}{safe_name(namespace)}"
    with _locations_lock:
        if path not in _generations:
            try:
                private_dirs(location)
                _generations[path] = _Generation(path)
            except (OSError, ValueError) as exc:  # no mmap here: run without the memory tier
                logger.info("opero cache: no memory tier for %s (%s)", path, exc)
                _generations[path] = None
        return _generations[path]


class DiskCache:
    """The disk cache of one function.

    Args:
        location: root folder of the cache.
        namespace: the function's ``cache_namespace``.
        func_name: the function's qualified name (its folder).
        max_memory: entries kept in the memory tier.
    """

    __slots__ = (
        "__weakref__",
        "_args",
        "_gen",
        "_lock",
        "_max",
        "_ready",
        "_root",
        "_tier",
        "folder",
        "namespace",
    )

    def __init__(self, location: Path, namespace: str, func_name: str, max_memory: int = 10_000) -> None:
        self.namespace = namespace
        self._args = (location, namespace, func_name, max_memory)
        self._root = location / safe_name(namespace)
        self.folder = self._root / safe_name(func_name)
        # key -> (value, expires, generation); insertion-ordered, oldest evicted first.
        self._tier: dict[Hashable, tuple[object, float, bytes]] = {}
        self._max = max_memory
        self._lock = threading.Lock()
        self._ready = False
        _register(location)
        self._gen = _generation(location, namespace)

    def __reduce__(self) -> tuple[object, ...]:
        # A worker process gets the same folder and an empty memory tier of its own.
        return (DiskCache, self._args)

    def _path(self, key: Hashable) -> str:
        return f"{self.folder}/{key}.pkl"

    def get(self, key: Hashable) -> object:
        """The stored value, or ``MISS`` (absent, expired, corrupt or unreadable)."""
        hit = self._tier.get(key)
        now = time.time()
        if hit is not None:
            # Served from memory only while no clear happened anywhere and it has not expired.
            if self._gen is not None and hit[2] == self._gen.value() and (not hit[1] or now < hit[1]):
                return hit[0]
            self._forget(key)
        gen = self._gen.value() if self._gen is not None else b""
        path = self._path(key)
        if not self._folders_real():
            return MISS
        try:
            raw = read_regular(path)
        except FileNotFoundError:
            return MISS
        except OSError as exc:  # NotRegular included: a link or a FIFO is a miss, not a hang
            logger.warning("opero cache: cannot read %s (%s), treated as a miss", path, exc)
            return MISS
        value, expires = decode(raw, now, path)
        if value is MISS:
            if expires != 0.0:  # expired (>0) or corrupt (-1): it would never be served again
                unlink(path)
            return MISS
        self._remember(key, value, expires, gen)
        return value

    def set(self, key: Hashable, value: object, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds; an unpicklable value or a disk error only logs."""
        expires = time.time() + ttl if ttl is not None else 0.0
        gen = self._gen.value() if self._gen is not None else b""
        try:
            data = encode(value, expires)
        except Exception as exc:
            logger.warning(
                "opero cache: cannot pickle a result of %s (%s); not stored", self.folder.name, exc
            )
            return
        path = self._path(key)
        try:
            if not self._ready or not real_dir(self.folder):
                private_dirs(self.folder)
                if not self._folders_real():
                    raise NotRegular(0, "a cache folder is a symbolic link or not a folder", str(self.folder))
                os.close(open_regular(self._root / MARKER, os.O_WRONLY | os.O_CREAT))
                self._ready = True
            atomic_write(self.folder, path, data)
        except OSError as exc:
            self._ready = False  # the folder may have been removed by a clear elsewhere
            logger.warning("opero cache: cannot write %s (%s); not stored", path, exc)
            return
        self._remember(key, value, expires, gen)

    def _folders_real(self) -> bool:
        # A link at the namespace or function folder would read and write entries elsewhere.
        # Two lstat calls, on the file-reading path only (memory-tier hits skip them).
        for folder in (self._root, self.folder):
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                return False
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                logger.warning("opero cache: %s is not a real folder (a link?); not used", folder)
                return False
        return True

    def clear(self) -> None:
        """Drop this function's entries (every version of its source), here and on disk."""
        if self._gen is not None:
            self._gen.bump()
        with self._lock:
            self._tier.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._ready = False

    def _remember(self, key: Hashable, value: object, expires: float, gen: bytes) -> None:
        if self._gen is None:
            return
        with self._lock:
            self._tier[key] = (value, expires, gen)
            while len(self._tier) > self._max:
                del self._tier[next(iter(self._tier))]

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            self._tier.pop(key, None)

    def __repr__(self) -> str:
        return f"<DiskCache {self.namespace!r} at {str(self.folder)!r}, {len(self._tier)} in memory>"


# Every cache root this process used; clear_cache(namespace) empties them (through
# stores.clear_persistent), also entries of functions this process never decorated.
_locations: set[Path] = set()
_locations_lock = threading.Lock()


def _register(location: Path) -> None:
    with _locations_lock:
        _locations.add(location)


def clear_namespace(namespace: str | None) -> None:
    """Delete ``namespace`` (None: every opero namespace) under each known cache root.

    The roots are those this process used plus the current default (``OPERO_CACHE_DIR`` or
    the user cache dir), so ``opero.clear_cache()`` in a fresh kernel empties the disk cache.
    """
    with _locations_lock:
        roots = set(_locations)
    roots.add(cache_location(Options()))
    for root in roots:
        if namespace is not None:
            folders = [root / safe_name(namespace)]
            gens = [root / f"{GENERATION}{safe_name(namespace)}"]
        else:
            try:
                folders = [p for p in root.iterdir() if real_dir(p)]
            except OSError:
                continue
            gens = list(root.glob(f"{GENERATION}*"))
        for path in gens:  # first: no tier may serve an entry once its file is gone
            if os.path.lexists(path):
                try:
                    gen = _generations.get(path) or _Generation(path)
                except OSError as exc:
                    logger.warning("opero cache: cannot use %s (%s)", path, exc)
                    continue
                gen.bump()
        for folder in folders:
            # rmtree never follows links inside; the folder itself must be real and marked.
            if real_dir(folder) and os.path.isfile(folder / MARKER) and not os.path.islink(folder / MARKER):
                shutil.rmtree(folder, ignore_errors=True)


def make_cache(options: Options, builder: KeyBuilder) -> DiskCache:
    """The disk cache of one function: a folder named after its qualified name."""
    max_memory = int(options.cache_backend_config.get("max_size", 10_000))
    return DiskCache(cache_location(options), options.cache_namespace, builder.name, max_memory)
