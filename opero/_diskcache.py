"""``cache_backend="disk"``: a persistent cache in files, with a memory tier in front.

Layout: ``<location>/<namespace>/<function>/<key>.pkl``, one entry per file in the format of
:mod:`opero._entry` (optionally HMAC-signed, expiry in the header), written to a temporary
file and ``os.replace``-d into place so readers never see half an entry. Folders are created
with mode 0700 and files with 0600: a cache holds pickles, which run code when loaded.

Why not ``joblib.Memory``'s own store: it unpickles its files itself, before opero could check
a signature (SPEC §4), and it spends ~80 µs per hit on metadata. opero keeps joblib's ideas
(``joblib.hash`` content keys, a folder per function, validation at read time) and reads the
bytes itself. See docs/backends.md.

The memory tier keeps values this process has read or written. A tier hit is only served
when the entry's file is still the same file (inode and mtime, one ``stat``) and has not
expired, so a ``clear_cache`` from another process, a rewrite or a deletion is seen at once.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from ._cache import MISS, namespace_clearers
from ._entry import decode, encode
from ._options import Options
from ._telemetry import logger

__all__ = ["DiskCache", "cache_location", "safe_name"]

#: Marks a folder as an opero namespace, so clearing "everything" never touches other files.
MARKER = ".opero-namespace"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def cache_location(options: Options) -> Path:
    """``cache_backend_config["location"]``, else ``OPERO_CACHE_DIR``, else the user cache dir."""
    location = options.cache_backend_config.get("location") or os.environ.get("OPERO_CACHE_DIR")
    if not location:
        import platformdirs

        location = platformdirs.user_cache_dir("opero")
    return Path(location).expanduser()


def safe_name(name: str) -> str:
    """A file name for ``name``: readable, and unique (a short hash when characters changed)."""
    cleaned = _UNSAFE.sub("_", name)
    if cleaned != name or cleaned.startswith("."):
        import hashlib

        cleaned = f"{cleaned.lstrip('.')[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return cleaned


def _private_dirs(path: Path) -> None:
    """Create ``path`` and missing parents with mode 0700 (chmod: the umask may strip bits)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(p, 0o700)


class DiskCache:
    """The disk cache of one function.

    Args:
        location: root folder of the cache.
        namespace: the function's ``cache_namespace``.
        func_name: the function's qualified name (its folder).
        max_memory: entries kept in the memory tier.
    """

    __slots__ = ("namespace", "folder", "_root", "_tier", "_max", "_lock", "_ready", "__weakref__")

    def __init__(self, location: Path, namespace: str, func_name: str, max_memory: int = 10_000) -> None:
        self.namespace = namespace
        self._root = location / safe_name(namespace)
        self.folder = self._root / safe_name(func_name)
        # key -> (value, expires, st_ino, st_mtime_ns, st_size): the file a value came from.
        self._tier: OrderedDict[Hashable, tuple[Any, float, int, int, int]] = OrderedDict()
        self._max = max_memory
        self._lock = threading.Lock()
        self._ready = False
        _register(location)

    def _path(self, key: Hashable) -> str:
        return f"{self.folder}/{key}.pkl"

    def get(self, key: Hashable) -> Any:
        """The stored value, or ``MISS`` (absent, expired, corrupt or unreadable)."""
        path = self._path(key)
        try:
            st = os.stat(path)
        except OSError:
            self._forget(key)
            return MISS
        now = time.time()
        with self._lock:
            hit = self._tier.get(key)
        if hit is not None and hit[2:] == (st.st_ino, st.st_mtime_ns, st.st_size):
            if not hit[1] or now < hit[1]:
                return hit[0]
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            logger.warning("opero cache: cannot read %s (%s), treated as a miss", path, exc)
            return MISS
        value, expires = decode(raw, now, path)
        if value is MISS:
            self._forget(key)
            if expires != 0.0:  # expired (>0) or corrupt (-1): it would never be served again
                _unlink(path)
            return MISS
        self._remember(key, value, expires, st)
        return value

    def set(self, key: Hashable, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds; an unpicklable value or a disk error only logs."""
        expires = time.time() + ttl if ttl is not None else 0.0
        try:
            data = encode(value, expires)
        except Exception as exc:
            logger.warning(
                "opero cache: cannot pickle a result of %s (%s); not stored", self.folder.name, exc
            )
            return
        path = self._path(key)
        try:
            if not self._ready:
                _private_dirs(self.folder)
                (self._root / MARKER).touch(mode=0o600)
                self._ready = True
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                _unlink(tmp)
                raise
            st = os.stat(path)
        except OSError as exc:
            self._ready = False  # the folder may have been removed by a clear elsewhere
            logger.warning("opero cache: cannot write %s (%s); not stored", path, exc)
            return
        self._remember(key, value, expires, st)

    def clear(self) -> None:
        """Drop this function's entries (every version of its source), here and on disk."""
        with self._lock:
            self._tier.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._ready = False

    def _remember(self, key: Hashable, value: Any, expires: float, st: os.stat_result) -> None:
        with self._lock:
            self._tier[key] = (value, expires, st.st_ino, st.st_mtime_ns, st.st_size)
            self._tier.move_to_end(key)
            while len(self._tier) > self._max:
                self._tier.popitem(last=False)

    def _forget(self, key: Hashable) -> None:
        if key in self._tier:
            with self._lock:
                self._tier.pop(key, None)

    def __repr__(self) -> str:
        return f"<DiskCache namespace={self.namespace!r} folder={str(self.folder)!r} in memory={len(self._tier)}>"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# Every cache root this process used; clear_cache(namespace) empties them, also entries of
# functions that this process never decorated (written by other processes or runs).
_locations: set[Path] = set()
_locations_lock = threading.Lock()


def _register(location: Path) -> None:
    with _locations_lock:
        if not _locations:
            namespace_clearers.append(clear_namespace)
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
        else:
            try:
                folders = [p for p in root.iterdir() if (p / MARKER).exists()]
            except OSError:
                continue
        for folder in folders:
            if (folder / MARKER).exists():
                shutil.rmtree(folder, ignore_errors=True)
