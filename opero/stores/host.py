"""Host-wide limiter state (``rate_limit_backend="local"``): a locked file in a private folder.

**Where.** Every file lives in ``/dev/shm/opero-<uid>/`` (the temporary directory when
``/dev/shm`` is missing), a folder of this user with mode 0700. The folder is checked before
use (a real directory, not a link, owned by this user, mode 0700) and files are opened with
``O_NOFOLLOW`` and checked too (a regular file owned by this user). A folder or file planted
by another user is never trusted: opero warns once and uses a private folder or file of its
own instead, so calls are still limited (a scope is then shared by this process and its
workers only, not by the whole host).

**What.** The file holds the GCRA state ``(tat, last)`` as two float64 on
``CLOCK_MONOTONIC`` (one clock for every process on a Linux host), then the limit it was
created with ``(rate, burst)``, then a table of the processes that use a scope (to tell a
live conflicting rate from a stale one). It is guarded by ``fcntl.flock``, which excludes
other open file descriptions, not threads sharing one, so a thread lock is taken first; after
a fork the child opens its own descriptor (an inherited one would share the parent's lock and
exclude nothing).

**How long.** A function's own budget is ``fn-<pid>-<name>-<n>.gcra``, private to the process
that decorated it and the workers it hands the (pickled) limiter to. Its descriptor is closed
and its file removed when the store is garbage-collected (the decorated function is gone) or
the process exits, so re-decorating in a loop or a re-run notebook cell leaks nothing; a
worker that still has it open keeps using the same budget until it closes it. A scope is
``scope-<name>.gcra``, shared by every process of this user on this host; its descriptor is
closed with its last limiter, and its file (a few hundred bytes in RAM) stays until reboot
so that processes starting later find the same budget.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable

from .._errors import ConfigurationError
from .._limit import RING, RecordOp, TransactStore, clock
from .._options import Options
from .._telemetry import logger
from ._base import safe_name

__all__ = [
    "HostRecord",
    "HostSlots",
    "HostStore",
    "folder",
    "function_path",
    "limiter_store",
    "record_path",
    "record_store",
    "scope_path",
    "slots_store",
]

_STATE = struct.Struct("<dd")  # tat, last
_LIMIT = struct.Struct("<dd")  # rate, burst
_PIDS = struct.Struct("<64i")  # processes using a scope (0 = free slot)
_LIMIT_AT = _STATE.size
_PIDS_AT = _LIMIT_AT + _LIMIT.size
_SIZE = _PIDS_AT + _PIDS.size
# With rate_burst > 1: a ring of the latest start times (the 1-second window), after the rest:
# count and head, then RING float64 slots (written only when used, so burst-1 files stay small).
_RING_HEAD = struct.Struct("<dd")
_RING_AT = _SIZE + _RING_HEAD.size
_F64 = struct.Struct("<d")
_counter = itertools.count(1)

#: Where the per-user folder is made; tests point it elsewhere (in a subprocess).
BASE = "/dev/shm"
# O_NONBLOCK: a FIFO planted at the path must not hang the open (it is then refused).
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

_folder_lock = threading.Lock()
_folder_cache: tuple[int, str, str] | None = None  # (pid, base, folder)


def _warn(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _private(path: str) -> str | None:
    """Why ``path`` is not a private folder of this user (None: it is, and usable)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not {os.getuid()}"
    if stat.S_IMODE(st.st_mode) != 0o700:
        try:  # ours: tighten it (a umask or an old version may have left it wider)
            os.chmod(path, 0o700, follow_symlinks=False)
        except OSError:
            return f"has mode {stat.S_IMODE(st.st_mode):o}, not 700"
    return None


def folder() -> str:
    """This user's folder for host-wide limiter files, checked (and created) once per process."""
    global _folder_cache
    base = BASE if os.path.isdir(BASE) and os.access(BASE, os.W_OK) else tempfile.gettempdir()
    cached = _folder_cache
    if cached is not None and cached[0] == os.getpid() and cached[1] == base:
        return cached[2]
    with _folder_lock:
        path = os.path.join(base, f"opero-{os.getuid()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            logger.info("opero: cannot create %s (%s)", path, exc)
        problem = _private(path)
        if problem is not None:
            # Never trust it: another user could read, stall or reset every budget in it.
            fallback = tempfile.mkdtemp(prefix=f"opero-{os.getuid()}-private-", dir=base)  # 0700
            _temporary.append(fallback)
            _warn(
                f"opero: {path} {problem}; it is not trusted. Rate-limit files go to the private "
                f"folder {fallback} instead (a rate_limit_scope is then shared only by this "
                "process and its workers)."
            )
            path = fallback
        _folder_cache = (os.getpid(), base, path)
        _sweep(path, base)
        return path


#: Per-process files in the folder: budgets ``fn-<pid>-…``, records ``<kind>-fn-<pid>-…``
#: and replacements for planted files ``private-<pid>-…``.
_PER_PROCESS = re.compile(r"^(?:[a-z]+-)?(?:fn|private)-(\d+)-.*\.(?:gcra|rec)$")


def _sweep(path: str, base: str) -> None:
    """Remove per-process files left by processes that died without cleaning up (SIGKILL).

    Once per process. Only this user's regular files of :data:`_PER_PROCESS` (and the
    ``opero-<uid>-fn-<pid>-...`` files of older versions in ``base``) whose process is gone;
    a worker still holding one keeps its descriptor and budget (unlinking frees the name).
    """
    uid = os.getuid()
    old = re.compile(rf"^opero-{uid}-fn-(\d+)-.*\.gcra$")
    for folder_, pattern in ((path, _PER_PROCESS), (base, old)):
        try:
            names = os.listdir(folder_)
        except OSError:
            continue
        for name in names:
            match = pattern.match(name)
            if match is None or _alive(int(match[1])):
                continue
            full = os.path.join(folder_, name)
            try:
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                    os.unlink(full)
            except OSError:
                pass


# Private folders made because the shared one was not trusted: removed at exit.
_temporary: list[str] = []


def scope_path(scope: str) -> str:
    """The file of a host-wide ``rate_limit_scope``: named from the scope alone."""
    return os.path.join(folder(), f"scope-{safe_name(scope)}.gcra")


def function_path(name: str) -> str:
    """A new file for one function's own budget: this process's pid, the name and a counter."""
    return os.path.join(folder(), f"fn-{os.getpid()}-{safe_name(name)}-{next(_counter)}.gcra")


def record_path(kind: str, name: str, scoped: bool) -> str:
    """The file of a shared record (``kind``: "aimd", "breaker") of a scope or of one function."""
    if scoped:
        return os.path.join(folder(), f"{kind}-scope-{safe_name(name)}.rec")
    return os.path.join(folder(), f"{kind}-fn-{os.getpid()}-{safe_name(name)}-{next(_counter)}.rec")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _untrusted(fd: int) -> str | None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not {os.getuid()}"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):o}, not 600"
    return None


def _open_checked(path: str, create: bool) -> tuple[int, bool]:
    """Open ``path`` without following links; return ``(fd, created)``.

    Raises:
        FileNotFoundError: it does not exist and ``create`` is False.
        PermissionError: it exists but is not a regular 0600 file of this user.
    """
    try:
        fd = os.open(path, _OPEN)
        created = False
    except FileNotFoundError:
        if not create:
            raise
        try:
            fd = os.open(path, _OPEN | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:  # another process created it just now
            fd = os.open(path, _OPEN)
            created = False
    except OSError as exc:  # ELOOP: a symbolic link; ENXIO/EACCES: something else planted
        raise PermissionError(f"{path} cannot be opened safely ({type(exc).__name__}: {exc})") from exc
    problem = _untrusted(fd)
    if problem is not None:
        os.close(fd)
        raise PermissionError(f"{path} {problem}")
    return fd, created


class _Handle:
    """The descriptor of one store, closed (and an owned file removed) when the store dies."""

    __slots__ = ("fd", "owner_pid", "path", "pid")

    def __init__(self) -> None:
        self.fd = -1
        self.pid = 0
        self.path = ""
        self.owner_pid = 0  # the process that removes the file, 0: nobody (a scope)

    def close_fd(self) -> None:
        """Close the descriptor only; a forked child drops the inherited one this way (it
        shares the parent's flock) and leaves the file to its owner (``owner_pid``)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        self.close_fd()
        if self.owner_pid and self.owner_pid == os.getpid():
            self.owner_pid = 0
            try:
                os.unlink(self.path)
            except OSError:
                pass


class HostStore(TransactStore):
    """GCRA state in a file shared by every process on this host that opens ``path``.

    Args:
        path: the state file (see :func:`scope_path`, :func:`function_path`).
        rate: starts per second, recorded in the file.
        burst: burst size, recorded in the file.
        scoped: a scope: check that live users of the file agree on ``rate``/``burst``.
        owner: this process created a function budget and removes its file when done.

    Raises:
        ConfigurationError: a scope is in use by a live process with another rate or burst.
    """

    __slots__ = ("__weakref__", "_handle", "_lock", "burst", "path", "rate", "scoped")

    def __init__(self, path: str, rate: float, burst: int, scoped: bool, owner: bool = False) -> None:
        super().__init__()
        self.path = path
        self.rate = float(rate)
        self.burst = int(burst)
        self.scoped = scoped
        self._lock = threading.Lock()
        self._handle = _Handle()
        weakref.finalize(self, self._handle.close)
        self._open(register=scoped, reset=owner, owner=owner)

    def __reduce__(self) -> tuple[object, ...]:
        # The copy opens the same file: another process on this host shares the budget.
        return (HostStore, (self.path, self.rate, self.burst, self.scoped))

    def _open(self, register: bool, reset: bool = False, owner: bool = False) -> None:
        handle = self._handle
        # A copy of a function budget (a worker) joins the owner's file and never creates it:
        # only when the owner is already gone does it make (and later remove) its own.
        create = self.scoped or owner
        try:
            try:
                fd, created = _open_checked(self.path, create=create)
            except FileNotFoundError:
                fd, created = _open_checked(self.path, create=True)
                owner = reset = True
        except PermissionError as exc:
            fd, created = self._replace(str(exc))
            owner = reset = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._setup(fd, register, reset or created)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            if created:
                _unlink(self.path)
            raise
        handle.fd, handle.pid, handle.path = fd, os.getpid(), self.path
        if owner:
            handle.owner_pid = os.getpid()

    def _replace(self, problem: str) -> tuple[int, bool]:
        # Never trust a planted file (it could stall every call or reset the budget): use a
        # new private file in our folder; workers get its path through pickling.
        name = f"private-{os.getpid()}-{next(_counter)}-{os.path.basename(self.path)}"
        fresh = os.path.join(folder(), name)
        _warn(
            f"opero: rate-limit file {problem}; it is not trusted. This process limits through "
            f"the private file {fresh} instead (shared with its workers, not the whole host)."
        )
        self.path = fresh
        return _open_checked(fresh, create=True)

    def _setup(self, fd: int, register: bool, reset: bool) -> None:
        raw = os.pread(fd, _SIZE, 0)
        pids = [0] * 64
        if len(raw) == _SIZE and not reset:
            rate, burst = _LIMIT.unpack_from(raw, _LIMIT_AT)
            pids = list(_PIDS.unpack_from(raw, _PIDS_AT))
            live = [p for p in pids if p and _alive(p)]
            if (rate, burst) == (self.rate, float(self.burst)):
                if not register or os.getpid() in live:
                    return
                pids = live + [0] * (64 - len(live))
            elif self.scoped and [p for p in live if p != os.getpid()]:
                raise ConfigurationError(
                    f"rate_limit_scope {os.path.basename(self.path)} is in use by process(es) "
                    f"{sorted(set(live))} with rate_limit={rate:g}, rate_burst={burst:g}; got "
                    f"rate_limit={self.rate:g}, rate_burst={self.burst}. Functions sharing a scope "
                    "must give the same rate."
                )
            else:  # the old users are gone: the new limit takes over, state starts afresh
                raw = b""
                pids = [0] * 64
        if len(raw) != _SIZE or reset:
            os.ftruncate(fd, _SIZE)  # drops an old start-time ring too
            os.pwrite(fd, _STATE.pack(0.0, float("-inf")), 0)
        if register:
            live = [p for p in pids if p]
            live = [*live[-63:], os.getpid()]
            pids = live + [0] * (64 - len(live))
        os.pwrite(fd, _LIMIT.pack(self.rate, float(self.burst)) + _PIDS.pack(*pids), _LIMIT_AT)

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last)`` under the thread lock and the file lock."""
        if self._handle.pid != os.getpid():
            self._reopen()
        with self._lock:
            fd = self._handle.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                tat, last = _STATE.unpack(os.pread(fd, _STATE.size, 0))
                result, tat, last = update(clock(), tat, last)
                os.pwrite(fd, _STATE.pack(tat, last), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return result

    def _ring_oldest(self, n: int) -> float:
        fd = self._handle.fd
        raw = os.pread(fd, _RING_HEAD.size, _SIZE)
        count, head = _RING_HEAD.unpack(raw) if len(raw) == _RING_HEAD.size else (0.0, 0.0)
        if count < n:
            return float("-inf")
        slot = (int(head) - n) % RING
        return float(_F64.unpack(os.pread(fd, 8, _RING_AT + 8 * slot))[0])

    def _ring_push(self, when: float) -> None:
        fd = self._handle.fd
        raw = os.pread(fd, _RING_HEAD.size, _SIZE)
        count, head = _RING_HEAD.unpack(raw) if len(raw) == _RING_HEAD.size else (0.0, 0.0)
        os.pwrite(fd, _F64.pack(when), _RING_AT + 8 * int(head))
        os.pwrite(fd, _RING_HEAD.pack(min(count + 1, RING), float((int(head) + 1) % RING)), _SIZE)

    def _reopen(self) -> None:
        # A forked child: the inherited descriptor shares the parent's flock, so open our own.
        # Closing our copy leaves the parent's descriptor and lock alone; the parent removes
        # the file (owner_pid is the parent's pid), never the child.
        self._lock = threading.Lock()
        self._handle.close_fd()
        self._open(register=False)

    def close(self) -> None:
        """Close the descriptor now (and remove the file of an owned function budget)."""
        self._handle.close()

    def __repr__(self) -> str:
        return f"<HostStore {self.path} {self.rate:g}/s burst {self.burst}>"


class HostRecord:
    """A shared record (adaptive rate, breaker: a few float64) in a file under ``flock``.

    Every process of this host that opens ``path`` shares it; a file of another length (an
    older layout, another breaker size) is reset to ``initial``. The file is opened and
    checked like a budget file (no links, this user's, 0600); a function's own record is
    removed when its owner is done with it (see :class:`HostStore`).

    Args:
        path: the file (see :func:`record_path`).
        initial: the values of a fresh record.
        owner: this process created a function's record and removes its file when done.
    """

    __slots__ = ("__weakref__", "_handle", "_lock", "_struct", "initial", "path")

    def __init__(self, path: str, initial: list[float], owner: bool = False) -> None:
        self.path = path
        self.initial = list(initial)
        self._struct = struct.Struct(f"<{len(initial)}d")
        self._lock = threading.Lock()
        self._handle = _Handle()
        weakref.finalize(self, self._handle.close)
        self._open(owner)

    def __reduce__(self) -> tuple[object, ...]:
        return (HostRecord, (self.path, self.initial))

    def _open(self, owner: bool) -> None:
        try:
            try:
                fd, created = _open_checked(self.path, create=owner or "-scope-" in self.path)
            except FileNotFoundError:  # a worker whose owner is gone: its own, fresh one
                fd, created = _open_checked(self.path, create=True)
                owner = True
        except PermissionError as exc:
            fresh = os.path.join(
                folder(), f"private-{os.getpid()}-{next(_counter)}-{os.path.basename(self.path)}"
            )
            _warn(f"opero: state file {exc}; it is not trusted. Using the private file {fresh} instead.")
            self.path = fresh
            fd, created = _open_checked(fresh, create=True)
            owner = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if created or len(os.pread(fd, self._struct.size + 1, 0)) != self._struct.size:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, self._struct.pack(*self.initial), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        handle = self._handle
        handle.fd, handle.pid, handle.path = fd, os.getpid(), self.path
        if owner:
            handle.owner_pid = os.getpid()

    def apply(self, name: str, op: RecordOp, *args: float) -> object:
        """Run ``op(now, values, *args)`` under the thread lock and the file lock."""
        handle = self._handle
        if handle.pid != os.getpid():
            # A forked child: the inherited descriptor shares the parent's flock.
            self._lock = threading.Lock()
            handle.close_fd()
            self._open(owner=False)
        size = self._struct.size
        with self._lock:
            fd = handle.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                values = list(self._struct.unpack(os.pread(fd, size, 0)))
                result = op(clock(), values, *args)
                os.pwrite(fd, self._struct.pack(*values), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return result

    async def apply_async(self, name: str, op: RecordOp, *args: float) -> object:
        """:meth:`apply` (microseconds under a lock: no need to leave the loop)."""
        return self.apply(name, op, *args)

    def close(self) -> None:
        """Close the descriptor now (and remove the file of an owned function record)."""
        self._handle.close()

    def __repr__(self) -> str:
        return f"<HostRecord {self.path}>"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_creator = os.getpid()


@atexit.register
def _cleanup_temporary() -> None:
    # Function budgets still alive at exit are removed by their finalizers (weakref.finalize
    # runs at exit too); here only the private folders made instead of an untrusted one.
    if os.getpid() == _creator:
        for path in _temporary:
            shutil.rmtree(path, ignore_errors=True)


class HostSlots:
    """``max_concurrency`` slots shared by every process of this host: one locked file each.

    An attempt holds a slot while it holds ``flock`` on that slot's file through a descriptor
    of its own (a fresh open per acquisition: ``flock`` excludes other open file
    descriptions, so threads of one process exclude each other too, and a forked child
    inherits nothing it could confuse). The kernel drops the lock when its holder dies, so a
    slot held by a killed worker is free at once.

    Args:
        base: the slot files' path without the slot number (see :func:`slot_base`).
        limit: how many slots (``max_concurrency``).
        owner: this process made a function's slots and removes the files when done.
    """

    __slots__ = ("__weakref__", "_next", "base", "limit")

    def __init__(self, base: str, limit: int, owner: bool = False) -> None:
        self.base = base
        self.limit = int(limit)
        self._next = itertools.count()
        paths = [self.path(i) for i in range(self.limit)]
        for path in paths:
            os.close(_open_checked(path, create=True)[0])
        if owner:
            weakref.finalize(self, _unlink_all, paths, os.getpid())

    def __reduce__(self) -> tuple[object, ...]:
        return (HostSlots, (self.base, self.limit))

    def path(self, i: int) -> str:
        """The file of slot ``i``."""
        return f"{self.base}.{i}.rec"

    def try_acquire(self) -> int | None:
        """Take a free slot without waiting: return its descriptor (for :meth:`release`), or None."""
        start = next(self._next)  # spread the first try over the slots
        for k in range(self.limit):
            fd = self.try_one((start + k) % self.limit)
            if fd is not None:
                return fd
        return None

    def release(self, held: int) -> None:
        """Give a slot back (closing its descriptor drops the lock)."""
        try:
            os.close(held)
        except OSError:
            pass

    def in_use(self) -> int:
        """How many slots are held now (a snapshot, for stats)."""
        busy = 0
        for i in range(self.limit):
            fd = self.try_one(i)
            if fd is None:
                busy += 1
            else:
                os.close(fd)
        return busy

    def try_one(self, i: int) -> int | None:
        """Slot ``i``'s locked descriptor, or None when it is held (or unusable)."""
        try:
            fd, _ = _open_checked(self.path(i), create=True)
        except (PermissionError, FileNotFoundError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def __repr__(self) -> str:
        return f"<HostSlots {self.base} x{self.limit}>"


def _unlink_all(paths: list[str], pid: int) -> None:
    if os.getpid() == pid:
        for path in paths:
            _unlink(path)


def slot_base(name: str, scoped: bool) -> str:
    """Where a scope's (by name) or a function's own concurrency slots live."""
    if scoped:
        return os.path.join(folder(), f"slots-scope-{safe_name(name)}")
    return os.path.join(folder(), f"slots-fn-{os.getpid()}-{safe_name(name)}-{next(_counter)}")


def slots_store(options: Options, name: str, scoped: bool) -> HostSlots:
    """``max_concurrency`` slots on this host: a scope's (shared by name) or a function's own."""
    limit = options.max_concurrency
    assert limit is not None
    return HostSlots(slot_base(name, scoped), limit, owner=not scoped)


def limiter_store(options: Options, name: str, scoped: bool) -> HostStore:
    """A scope's file (shared by name on this host) or a function's own (removed when done)."""
    rate = options.start_rate
    assert rate is not None
    if scoped:
        return HostStore(scope_path(name), rate, options.rate_burst, scoped=True)
    return HostStore(function_path(name), rate, options.rate_burst, scoped=False, owner=True)


def record_store(options: Options, kind: str, name: str, scoped: bool, initial: list[float]) -> HostRecord:
    """A record shared on this host: a scope's (by name) or a function's own (removed when done)."""
    return HostRecord(record_path(kind, name, scoped), initial, owner=not scoped)
