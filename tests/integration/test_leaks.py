"""Nothing leaks per decoration (issue 11.5): descriptors and host-wide limiter files."""

from __future__ import annotations

from tests._fixtures_redis import run_python

# Re-decorating in a loop is what a re-run notebook cell or a factory does. Under a limit of
# 256 descriptors a leak of one per decoration crashes with EMFILE after ~250.
_REDECORATE = """
import gc, os, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from opero import opero, opmap, parts
from opero.stores import host

def fds():
    return len(os.listdir("/proc/self/fd"))

def files():
    return len([n for n in os.listdir(host.folder()) if n.startswith("fn-%d-" % os.getpid())])

def once(i):
    @opero(rate_limit=10_000)
    def f(x):
        return x + i

    @opmap(mode="thread", workers=2, rate_limit=10_000)
    def g(x):
        return x * i

    assert f(1) == 1 + i
    assert list(g([1, 2])) == [i, 2 * i]

once(0)
gc.collect()
fd0, files0 = fds(), files()
peak_fd, peak_files = fd0, files0
for i in range(500):
    once(i)
    peak_fd, peak_files = max(peak_fd, fds()), max(peak_files, files())
gc.collect()
print(fd0, fds(), peak_fd, files0, files(), peak_files)
"""


def test_500_redecorations_leak_no_descriptor_or_file() -> None:
    """500 re-decorations with rate_limit under RLIMIT_NOFILE=256: fds and files stay flat."""
    fd0, fd1, peak_fd, files0, files1, peak_files = map(int, run_python(_REDECORATE, timeout=120).split())
    assert fd1 <= fd0 + 2, (fd0, fd1)
    assert peak_fd <= fd0 + 20, (fd0, peak_fd)
    assert files1 == files0 == 0, (files0, files1)
    assert peak_files <= 4, peak_files


def test_function_budget_file_removed_when_function_is_collected() -> None:
    """Dropping a rate-limited function closes its descriptor and removes its file at once."""
    out = run_python(
        """
import gc, os
from opero import opero, parts

@opero(rate_limit=100)
def f():
    return 1

f()
store = parts(f).limiter.store
path, fd = store.path, store._handle.fd
assert os.path.exists(path) and os.fstat(fd)
del f, store
gc.collect()
try:
    os.fstat(fd)
    closed = False
except OSError:
    closed = True
print(os.path.exists(path), closed)
"""
    )
    assert out.split() == ["False", "True"]


def test_worker_copy_does_not_remove_the_owners_file() -> None:
    """A pickled copy (what a worker gets) shares the file and leaves it to its owner."""
    out = run_python(
        """
import gc, os, pickle
from opero import opero, parts

@opero(rate_limit=100)
def f():
    return 1

store = parts(f).limiter.store
copy = pickle.loads(pickle.dumps(store))
assert copy.path == store.path and copy._handle.fd != store._handle.fd
copy.reserve(0.01, 1)
del copy
gc.collect()
print(os.path.exists(store.path))
path = store.path
del f, store
gc.collect()
print(os.path.exists(path))
"""
    )
    assert out.split() == ["True", "False"]


def test_budgets_of_killed_processes_are_swept() -> None:
    """A process killed with SIGKILL leaves its budget file; the next process removes it."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    code = (
        "import time\nfrom opero import opero, parts\n"
        "@opero(rate_limit=10)\ndef f(): pass\nf()\n"
        "print(parts(f).limiter.store.path, flush=True)\ntime.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(path)  # nobody could clean up
    folder = os.path.dirname(path)
    record = os.path.join(folder, f"breaker-fn-{proc.pid}-f-1.rec")
    live = os.path.join(folder, f"fn-{os.getpid()}-mine-999.gcra")
    for planted in (record, live):
        with open(planted, "wb"):
            pass
    run_python("from opero.stores import host; host.folder()")
    assert not os.path.exists(path) and not os.path.exists(record)
    assert os.path.exists(live)  # this process is alive: its files stay
    os.unlink(live)
