"""What every store shares: the ``MISS`` sentinel, the backend protocol, safe file names,
private folders and atomic writes.

A leaf: it imports nothing of opero's, so caches and limiter stores can both
build on it without tying each other together.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Hashable
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "MISS",
    "CacheBackend",
    "NotRegular",
    "atomic_write",
    "open_regular",
    "private_dirs",
    "redact",
    "redact_config",
    "read_regular",
    "real_dir",
    "safe_name",
    "unlink",
]


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"

    def __reduce__(self) -> str:
        return "MISS"  # one sentinel per process, also after pickling


#: Returned by ``CacheBackend.get`` when there is no usable entry.
MISS: Final = _Miss()


class CacheBackend(Protocol):
    """What every cache backend provides; keys come from :class:`opero._keys.KeyBuilder`."""

    namespace: str

    def get(self, key: Hashable) -> object:
        """Return the stored value or ``MISS`` (also for expired, corrupt or unreachable entries)."""

    def set(self, key: Hashable, value: object, ttl: float | None) -> None:
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
    import tempfile  # here: tempfile (with shutil, lzma, bz2) costs ~5 ms at `import opero`

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


class NotRegular(OSError):
    """The path holds a symbolic link, a FIFO, a device or a folder where a file should be."""


# Never follow a link at the last component; never block on a FIFO planted at the path.
_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_regular(path: str | Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open ``path`` only if it is (or ``os.O_CREAT`` makes it) a regular file; return the fd.

    Raises:
        FileNotFoundError: there is nothing at ``path`` (and no ``O_CREAT``).
        NotRegular: a symbolic link or any non-regular file is at ``path``.
        OSError: any other failure to open it.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        import errno

        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a link, a socket/FIFO, a dir
            raise NotRegular(exc.errno, f"not a regular file ({exc.strerror})", str(path)) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(0, "not a regular file", str(path))
    return fd


def read_regular(path: str | Path) -> bytes:
    """The bytes of the regular file at ``path`` (a link or a FIFO is refused, never followed).

    Raises:
        FileNotFoundError, NotRegular, OSError: as :func:`open_regular`.
    """
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        chunks = []
        while True:
            chunk = os.read(fd, max(size, 65536))
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def real_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory and not a symbolic link (``lstat``, never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


_CREDENTIALS = re.compile(r"(?P<scheme>\b(?:rediss?|unix)://)(?P<user>[^:@/\s]*)(?::[^@/\s]*)?@")


def redact(text: str) -> str:
    """``text`` with the credentials of every redis URL in it masked.

    ``redis://user:secret@host:6379/0`` becomes ``redis://user:***@host:6379/0`` and
    ``redis://:secret@host`` becomes ``redis://:***@host``: warnings, logs, reprs and errors
    never show a password.
    """
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def redact_config(config: object) -> object:
    """A copy of a ``cache_backend_config`` fit to print: password and URL credentials masked."""
    if not isinstance(config, dict):
        return config
    return {
        k: "***" if k == "password" and v else redact(v) if isinstance(v, str) else v
        for k, v in config.items()
    }
