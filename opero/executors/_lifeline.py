"""Pool workers never outlive their parent, however it dies (SIGTERM, SIGKILL, SIGHUP).

Two guards, because the parent may get no chance to run any code:

- on Linux the worker asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), then checks that the parent is still the one that started
  it (it may have died before the request). The kernel sends that signal when the *thread*
  that started the worker ends, so workers are started from one long-lived thread of the
  parent, never from the thread of a map (an awaited map runs in a short-lived one);
- everywhere, a watchdog thread in the worker blocks on a pipe whose only writer is the
  parent: when the parent dies the kernel closes it, the read returns, the worker exits at
  once (between two items is not soon enough: an item may run for minutes).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["guard", "life_fd", "spawn"]

_PR_SET_PDEATHSIG = 1

# -- parent side -----------------------------------------------------------------------------


@dataclass
class _Spawn:
    """One request to the spawner thread (``start`` a worker), and its answer."""

    start: Callable[[], subprocess.Popen[bytes]]
    done: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Life:
    """This process's spawner and life pipe (per process: a forked child makes its own)."""

    pid: int
    jobs: queue.SimpleQueue[_Spawn]
    #: (read, write): the parent never writes, its death is the message
    pipe: tuple[int, int]


_lock = threading.Lock()
_state: _Life | None = None  # this process's (a forked child replaces its parent's)


def _setup() -> _Life:
    global _state
    with _lock:
        if _state is None or _state.pid != os.getpid():
            jobs: queue.SimpleQueue[_Spawn] = queue.SimpleQueue()
            threading.Thread(target=_spawner, args=(jobs,), name="opero-spawner", daemon=True).start()
            _state = _Life(os.getpid(), jobs, os.pipe())
        return _state


def life_fd() -> int:
    """The read end of this process's life pipe, for a worker to inherit and watch."""
    return _setup().pipe[0]


def _spawner(jobs: queue.SimpleQueue[_Spawn]) -> None:
    while True:
        job = jobs.get()
        try:
            job.proc = job.start()
        except BaseException as exc:  # handed to the caller
            job.error = exc
        job.done.set()


def spawn(
    argv: list[str], *, pass_fds: tuple[int, ...], env: dict[str, str], stdin: int
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, ...)``, started from this process's spawner thread."""
    job = _Spawn(lambda: subprocess.Popen(argv, pass_fds=pass_fds, env=env, stdin=stdin))
    _setup().jobs.put(job)
    job.done.wait()
    if job.error is not None:
        raise job.error
    assert job.proc is not None
    return job.proc


# -- worker side -----------------------------------------------------------------------------


def guard(parent: int, life: int) -> None:
    """Make this worker die with ``parent`` (its pid) whose life pipe it reads on ``life``."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent died before the request above: too late
        os._exit(0)
    threading.Thread(target=_watch, args=(life,), name="opero-parent-watch", daemon=True).start()


def _watch(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os._exit(0)
