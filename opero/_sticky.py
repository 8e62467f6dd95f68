"""Sticky fallback candidates: which ``arg_fallback`` values of one function are demoted.

A candidate (an API key, a mirror URL) that failed is tried last by later calls of the same
function until ``fallback_recheck`` seconds have passed: healthy candidates first, demoted
ones only when every healthy one failed in that round, so a demotion costs nothing when a
healthy candidate works and never loses a call when none does. After the recheck it is
healthy again (if it still fails, it is demoted again).

Candidates are never stored: only a keyed 8-byte BLAKE2b digest of their ``repr()`` (the key
is random, made once per record), so no API key reaches memory dumps of the table, a file or
a log line. In one process the table is a dict. When the function travels to process
workers (the record is pickled), the table moves to a small file that the parent and its
workers share: ``/dev/shm/opero-<uid>/sticky-<pid>-<token>`` (mode 0600 in a 0700 folder
owned by this user, opened with ``O_NOFOLLOW``, removed when the parent exits). If that
folder cannot be trusted, each process keeps its own table.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import stat
import struct
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Sticky", "no_candidates"]

_SLOT = struct.Struct("<8sd")  # digest, demoted at (CLOCK_MONOTONIC: one clock per host)
_SLOTS = 64
_SIZE = _SLOT.size * _SLOTS
_EMPTY = b"\0" * 8
_clock = time.monotonic
_created: list[str] = []
#: (function, parameter) pairs already told that their calls give no candidates
_told: set[tuple[str, str]] = set()
_told_lock = threading.Lock()
_log = logging.getLogger("opero")
#: a candidate (an argument value), kept as it is
T = TypeVar("T")


def _folder() -> str | None:
    """This user's private folder for shared state, or None when it cannot be trusted."""
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = os.path.join(base or tempfile.gettempdir(), f"opero-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # a symlink, or planted by someone else: never trusted
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
    try:
        _created.remove(path)
    except ValueError:
        pass


def _cleanup() -> None:
    for path in list(_created):
        _unlink(path)


atexit.register(_cleanup)


class Sticky:
    """The demoted candidates of one function (see the module docstring).

    Args:
        recheck: seconds after which a demoted candidate is healthy again.
    """

    def __init__(self, recheck: float, token: bytes | None = None, path: str | None = None) -> None:
        self.recheck = recheck
        self._token = token or os.urandom(16)
        self._path = path
        self._lock = threading.Lock()
        self._local: dict[bytes, float] = {}

    @property
    def path(self) -> str | None:
        """The file the table is shared through once it travelled to a worker, else None."""
        return self._path

    def __reduce__(self) -> tuple[object, ...]:
        # Travelling to a worker: share the table through a file from now on.
        return (Sticky, (self.recheck, self._token, self._share()))

    def digest(self, value: object) -> bytes:
        """The keyed digest a candidate is known by."""
        from hashlib import blake2b

        try:
            text = repr(value)
        except Exception:  # a candidate whose repr fails: known by identity in this process
            text = f"<id {id(value)}>"
        return blake2b(text.encode("utf-8", "replace"), digest_size=8, key=self._token).digest()

    # -- the table -------------------------------------------------------------------------

    def _share(self) -> str | None:
        with self._lock:
            if self._path is not None:
                return self._path
            folder = _folder()
            if folder is None:
                return None
            path = os.path.join(folder, f"sticky-{os.getpid()}-{os.urandom(8).hex()}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                return None
            try:
                os.write(fd, self._pack(self._local))
            finally:
                os.close(fd)
            _created.append(path)
            # a re-decorated function (a re-run cell) drops its old table's file with it
            weakref.finalize(self, _unlink, path)
            self._path = path
            return path

    @staticmethod
    def _pack(table: dict[bytes, float]) -> bytes:
        rows = sorted(table.items(), key=lambda kv: kv[1])[-_SLOTS:]  # keep the newest
        out = b"".join(_SLOT.pack(d, t) for d, t in rows)
        return out + b"\0" * (_SIZE - len(out))

    @staticmethod
    def _unpack(raw: bytes) -> dict[bytes, float]:
        table: dict[bytes, float] = {}
        for k in range(min(len(raw), _SIZE) // _SLOT.size):
            d, t = _SLOT.unpack_from(raw, k * _SLOT.size)
            if d != _EMPTY:
                table[d] = t
        return table

    def _open(self, path: str) -> int | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            os.close(fd)
            return None
        return fd

    def _update(self, digest: bytes | None, when: float) -> dict[bytes, float]:
        """Read the table; with ``digest``, set its demotion time to ``when`` first."""
        path = self._path
        if path is not None:
            fd = self._open(path)
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX if digest is not None else fcntl.LOCK_SH)
                    table = self._unpack(os.pread(fd, _SIZE, 0))
                    if digest is not None:
                        table[digest] = when
                        os.pwrite(fd, self._pack(table), 0)
                    return table
                finally:
                    os.close(fd)  # closing drops the lock
        with self._lock:
            if digest is not None:
                self._local[digest] = when
                if len(self._local) > _SLOTS:
                    del self._local[min(self._local, key=self._local.__getitem__)]
            return dict(self._local)

    # -- what the policy asks --------------------------------------------------------------

    def demote(self, value: object) -> None:
        """``value`` failed: later calls skip it for ``recheck`` seconds."""
        self._update(self.digest(value), _clock())

    def order(self, candidates: Sequence[T]) -> Sequence[T]:
        """The candidates a call walks: healthy ones first, demoted ones last.

        Both groups keep the caller's order, and the list or tuple type stays. Nothing is
        skipped: a demoted candidate is tried when every healthy one failed in that round,
        so a demotion never loses a call. ``candidates`` itself when nothing moves.
        """
        table = self._update(None, 0.0)
        if not table:
            return candidates
        now = _clock()
        healthy: list[T] = []
        demoted: list[T] = []
        for value in candidates:
            when = table.get(self.digest(value))
            fresh = when is None or now - when >= self.recheck
            (healthy if fresh else demoted).append(value)
        if not healthy or not demoted or all(a is b for a, b in zip(healthy, candidates)):
            return candidates  # every candidate in one group, or the demoted ones last already
        ordered = healthy + demoted
        return tuple(ordered) if isinstance(candidates, tuple) else ordered

    def start(self, candidates: Sequence[object]) -> int:
        """Where a new retry round starts in the list :meth:`order` gave: always 0.

        The healthy candidates are first already, and a later round must reach the demoted
        ones too, so a round never starts past them.
        """
        return 0

    def demoted(self, candidates: Sequence[object]) -> list[bool]:
        """For each candidate, whether it is demoted right now (for tests and the dashboard)."""
        table = self._update(None, 0.0)
        now = _clock()
        out = []
        for value in candidates:
            when = table.get(self.digest(value))
            out.append(when is not None and now - when < self.recheck)
        return out


def no_candidates(func_name: str, param: str) -> None:
    """Say once per function, at DEBUG, that a call of it gives ``arg_fallback`` nothing to rotate.

    For a parameter whose default is None: a list built inside the function (``if
    user_agent is None: user_agent = [...]``) is out of opero's sight, so every attempt gets
    the same value. The values themselves are never logged.
    """
    key = (func_name, param)
    if key in _told or not _log.isEnabledFor(logging.DEBUG):
        return  # told already, or nobody listens yet (then it is told when someone does)
    with _told_lock:
        if key in _told:
            return
        _told.add(key)
    _log.debug(
        "opero: %s: arg_fallback=%r has no candidates in this call (its default is None and the "
        "call passed no non-empty list or tuple), so every attempt uses the same value; put the "
        "candidates in the parameter's default, or pass them at the call (said once)",
        func_name,
        param,
    )
