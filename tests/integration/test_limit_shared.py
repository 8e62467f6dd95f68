"""Machine-wide rate limits (issue 3): threads, worker processes and host-wide scopes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import opero
from opero import ConfigurationError
from opero._limit import Limiter
from opero.stores.host import HostStore, function_path, scope_path
from tests._fixtures_redis import run_python
from tests._spacing import assert_exact_spacing

ROOT = str(Path(__file__).resolve().parents[2])


def _spawn(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


WORKER = """
import pickle, sys, threading, time
limiter = pickle.load(open(sys.argv[1], "rb"))
limiter.store.grant_log = []  # a recorder of this process: logs do not travel by pickle
def run():
    for _ in range(4):
        limiter.acquire()
threads = [threading.Thread(target=run) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(map(repr, limiter.store.grant_log)))
"""


def test_pickled_limiter_shares_budget_with_worker_processes(tmp_path: Path) -> None:
    """A process and two worker processes (4 threads each) with a pickled copy share one budget."""
    store = HostStore(function_path("test-procs"), 40, 1, scoped=False, owner=True)
    limiter = Limiter("test-procs", 40, 1, store)
    path = tmp_path / "limiter.pkl"
    path.write_bytes(pickle.dumps(limiter))
    store.grant_log = stamps = []
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path)],
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for _ in range(8):
        limiter.acquire()
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    for out in outs:
        stamps.extend(map(float, out.split()))
    # CLOCK_MONOTONIC is one clock for every process of the host: the logs merge.
    assert_exact_spacing(stamps, 40, count=8 + 2 * 16)


def test_unrelated_processes_do_not_share_a_function_budget() -> None:
    """Two processes decorating the same function get separate budgets (own files, own pace)."""
    start_at = time.monotonic() + 3  # both begin together, whenever each one got started
    code = f"""
import time
from opero import opero, parts
@opero(rate_limit=2)
def hit():
    pass
store = parts(hit).limiter.store
store.grant_log = []
time.sleep(max(0.0, {start_at!r} - time.monotonic()))
for _ in range(3):
    hit()
print(store.path, *store.grant_log)
"""
    procs = [_spawn(code) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0][0] != outs[1][0]  # the decorating pid is part of the budget's name
    grants = [[float(t) for t in out[1:]] for out in outs]
    for own in grants:  # each alone: 3 starts 0.5 s apart
        assert_exact_spacing(own, 2, count=3)
    # One shared budget would need 5 intervals (2.5 s) for the 6 starts of both.
    both = sorted(grants[0] + grants[1])
    assert both[-1] - both[0] < 2.5


def test_two_processes_naming_one_scope_share_it() -> None:
    """Two processes naming the same rate_limit_scope draw on one host-wide budget."""
    scope = f"test-{uuid.uuid4().hex}"
    code = f"""
import threading, time
from opero import opero, parts
@opero(rate_limit=30, rate_limit_scope={scope!r})
def hit():
    pass
store = parts(hit).limiter.store
store.grant_log = []
threads = [threading.Thread(target=lambda: [hit() for _ in range(4)]) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(map(repr, store.grant_log)))
"""
    procs = [_spawn(code) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    stamps = [float(x) for out in outs for x in out.split()]
    assert_exact_spacing(stamps, 30, count=24)
    os.unlink(scope_path(scope))


def test_scope_with_other_rate_in_live_process_is_rejected() -> None:
    """A scope in use by a live process with another rate raises ConfigurationError; stale ones yield."""
    scope = f"test-{uuid.uuid4().hex}"
    holder = _spawn(
        f"""
import sys, time
from opero import opero
@opero(rate_limit=10, rate_limit_scope={scope!r})
def hit():
    pass
hit()
print("ready", flush=True)
time.sleep(30)
"""
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(ConfigurationError, match=r"rate_limit=10\b.*got rate_limit=20"):

            @opero.opero(rate_limit=20, rate_limit_scope=scope)
            def other() -> None:
                pass
    finally:
        holder.kill()
        holder.wait()

    @opero.opero(rate_limit=20, rate_limit_scope=scope)
    def after() -> None:
        pass

    after()  # the holder is gone: the new rate takes the scope over
    os.unlink(scope_path(scope))


def test_function_budget_file_removed_at_exit() -> None:
    """A function budget's /dev/shm file goes when its process exits; a scope's file stays."""
    scope = f"test-{uuid.uuid4().hex}"
    out = run_python(
        f"""
from opero import opero, parts
@opero(rate_limit=10)
def f(): pass
@opero(rate_limit=10, rate_limit_scope={scope!r})
def g(): pass
print(parts(f).limiter.store.path, parts(g).limiter.store.path)
"""
    )
    fn_path, scope_path = out.split()
    assert "/fn-" in fn_path and not os.path.exists(fn_path)
    assert os.path.exists(scope_path)
    os.unlink(scope_path)
