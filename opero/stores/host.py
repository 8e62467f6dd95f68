"""Host-wide limiter state (``rate_limit_backend="local"``): a locked file in ``/dev/shm``.

The file is guarded by ``fcntl.flock``.

The file holds the GCRA state ``(tat, last)`` as two float64 on ``CLOCK_MONOTONIC`` (one clock
for every process on a Linux host), then the limit it was created with ``(rate, burst)``, then
a table of the processes that use a scope (to tell a live conflicting rate from a stale one).

``flock`` excludes other open file descriptions, not threads sharing one, so a thread lock is
taken first; after a fork the child opens its own descriptor (an inherited one would share the
parent's lock and exclude nothing).

Names: a function's own budget is ``opero-<uid>-fn-<pid>-<name>-<n>``, private to the process
that decorated it and the workers it hands the (pickled) limiter to, and removed when that
process exits; a scope is ``opero-<uid>-scope-<name>``, shared by every process of this user
on this host, and left in place (a few bytes in RAM until reboot).
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import struct
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from .._errors import ConfigurationError
from .._limit import TransactStore, clock
from .._options import Options
from ._base import safe_name

__all__ = ["HostStore", "function_path", "limiter_store", "scope_path"]

_STATE = struct.Struct("<dd")  # tat, last
_LIMIT = struct.Struct("<dd")  # rate, burst
_PIDS = struct.Struct("<64i")  # processes using a scope (0 = free slot)
_LIMIT_AT = _STATE.size
_PIDS_AT = _LIMIT_AT + _LIMIT.size
_SIZE = _PIDS_AT + _PIDS.size
_counter = itertools.count(1)


def _folder() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def scope_path(scope: str) -> str:
    """The file of a host-wide ``rate_limit_scope``: named from the scope alone."""
    return os.path.join(_folder(), f"opero-{os.getuid()}-scope-{safe_name(scope)}.gcra")


def function_path(name: str) -> str:
    """A new file for one function's own budget: this process's pid, the name and a counter."""
    return os.path.join(
        _folder(), f"opero-{os.getuid()}-fn-{os.getpid()}-{safe_name(name)}-{next(_counter)}.gcra"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HostStore(TransactStore):
    """GCRA state in a file shared by every process on this host that opens ``path``.

    Args:
        path: the state file (see :func:`scope_path`, :func:`function_path`).
        rate: starts per second, recorded in the file.
        burst: burst size, recorded in the file.
        scoped: a scope: check that live users of the file agree on ``rate``/``burst``.
        owner: this process created a function budget and removes its file at exit.

    Raises:
        ConfigurationError: a scope is in use by a live process with another rate or burst.
    """

    __slots__ = ("_fd", "_lock", "_pid", "burst", "path", "rate", "scoped")

    def __init__(self, path: str, rate: float, burst: int, scoped: bool, owner: bool = False) -> None:
        super().__init__()
        self.path = path
        self.rate = float(rate)
        self.burst = int(burst)
        self.scoped = scoped
        self._fd = -1
        self._pid = 0
        self._lock = threading.Lock()
        self._open(register=scoped, reset=owner)
        if owner:
            _owned.append(path)

    def __reduce__(self) -> tuple[Any, ...]:
        # The copy opens the same file: another process on this host shares the budget.
        return (HostStore, (self.path, self.rate, self.burst, self.scoped))

    def _open(self, register: bool, reset: bool = False) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._setup(fd, register, reset)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._pid = fd, os.getpid()

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
            os.pwrite(fd, _STATE.pack(0.0, float("-inf")), 0)
        if register:
            live = [p for p in pids if p]
            live = [*live[-63:], os.getpid()]
            pids = live + [0] * (64 - len(live))
        os.pwrite(fd, _LIMIT.pack(self.rate, float(self.burst)) + _PIDS.pack(*pids), _LIMIT_AT)

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last)`` under the thread lock and the file lock."""
        if self._pid != os.getpid():
            self._reopen()
        with self._lock:
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                tat, last = _STATE.unpack(os.pread(fd, _STATE.size, 0))
                result, tat, last = update(clock(), tat, last)
                os.pwrite(fd, _STATE.pack(tat, last), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return result

    def _reopen(self) -> None:
        # A forked child: the inherited descriptor shares the parent's flock, so open our own.
        inherited = self._fd
        self._lock = threading.Lock()
        self._open(register=False)
        try:
            os.close(inherited)  # closing our copy leaves the parent's descriptor and lock alone
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"<HostStore {self.path} {self.rate:g}/s burst {self.burst}>"


# Function budgets this process created; removed at exit (workers never remove them).
_owned: list[str] = []
_creator = os.getpid()


@atexit.register
def _cleanup() -> None:
    if os.getpid() != _creator:
        return
    for path in _owned:
        try:
            os.unlink(path)
        except OSError:
            pass


def limiter_store(options: Options, name: str, scoped: bool) -> HostStore:
    """A scope's file (shared by name on this host) or a function's own (removed at exit)."""
    rate = options.start_rate
    assert rate is not None
    if scoped:
        return HostStore(scope_path(name), rate, options.rate_burst, scoped=True)
    return HostStore(function_path(name), rate, options.rate_burst, scoped=False, owner=True)
