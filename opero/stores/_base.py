"""What every store shares: the ``MISS`` sentinel, the backend protocol, safe file names,
private folders and atomic writes.

A leaf: it imports nothing of opero's, so caches and limiter stores can both
build on it without tying each other together.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Protocol

__all__ = ["MISS", "CacheBackend", "atomic_write", "private_dirs", "safe_name", "unlink"]


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"

    def __reduce__(self) -> str:
        return "MISS"  # one sentinel per process, also after pickling


#: Returned by ``CacheBackend.get`` when there is no usable entry.
MISS: Any = _Miss()


class CacheBackend(Protocol):
    """What every cache backend provides; keys come from :class:`opero._keys.KeyBuilder`."""

    namespace: str

    def get(self, key: Hashable) -> Any:
        """Return the stored value or ``MISS`` (also for expired, corrupt or unreachable entries)."""

    def set(self, key: Hashable, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (None: forever); never raises on backend faults."""

    def clear(self) -> None:
        """Drop this function's entries."""


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(name: str) -> str:
    """A file name for ``name``: readable, and unique (a short hash when characters changed)."""
    cleaned = _UNSAFE.sub("_", name)
    if cleaned != name or cleaned.startswith("."):
        import hashlib

        cleaned = f"{cleaned.lstrip('.')[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return cleaned


def private_dirs(path: Path) -> None:
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


def atomic_write(folder: Path, path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a 0600 temporary file in ``folder`` and ``os.replace``.

    Readers never see half a file; ``os.replace`` swaps the directory entry, so a symlink
    planted at ``path`` is replaced, never followed.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        unlink(tmp)
        raise


def unlink(path: str | Path) -> None:
    """Remove a file, ignoring one that is already gone."""
    try:
        os.unlink(path)
    except OSError:
        pass
