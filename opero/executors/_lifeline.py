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
from typing import Any

__all__ = ["guard", "life_fd", "spawn"]

_PR_SET_PDEATHSIG = 1

# -- parent side -----------------------------------------------------------------------------

_lock = threading.Lock()
_state: dict[str, Any] = {}  # pid, the spawner's queue, the life pipe (per process: fork-safe)


def _setup() -> dict[str, Any]:
    with _lock:
        if _state.get("pid") != os.getpid():
            read, write = os.pipe()  # the parent never writes: its death is the message
            jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
            threading.Thread(target=_spawner, args=(jobs,), name="opero-spawner", daemon=True).start()
            _state.update(pid=os.getpid(), jobs=jobs, life=(read, write))
        return _state


def life_fd() -> int:
    """The read end of this process's life pipe, for a worker to inherit and watch."""
    fd: int = _setup()["life"][0]
    return fd


def _spawner(jobs: queue.SimpleQueue[Any]) -> None:
    while True:
        argv, kwargs, box, done = jobs.get()
        try:
            box.append((True, subprocess.Popen(argv, **kwargs)))
        except BaseException as exc:  # handed to the caller
            box.append((False, exc))
        done.set()


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **kwargs)``, started from this process's spawner thread."""
    box: list[tuple[bool, Any]] = []
    done = threading.Event()
    _setup()["jobs"].put((argv, kwargs, box, done))
    done.wait()
    ok, value = box[0]
    if not ok:
        raise value
    proc: subprocess.Popen[bytes] = value
    return proc


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
