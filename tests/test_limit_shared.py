"""Machine-wide rate limits (issue 3): threads, worker processes and host-wide scopes."""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import opero
from opero import ConfigurationError
from opero.stores.host import scope_path
from tests._fixtures_redis import run_python

ROOT = str(Path(__file__).resolve().parent.parent)


def _check_spacing(stamps: list[float], rate: float) -> None:
    stamps = sorted(stamps)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / rate - 0.001, min(gaps)
    # No 100 ms window holds more starts than the spacing allows (burst 1).
    allowed = int(0.1 * rate) + 1
    worst = max(sum(1 for t in stamps if s <= t < s + 0.1) for s in stamps)
    assert worst <= allowed, worst


def _spawn(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def test_eight_threads_share_a_function_budget() -> None:
    """Eight threads calling one rate_limit=50 function start 1/50 s apart, 40 calls in ~0.78 s."""
    stamps: list[float] = []

    @opero.opero(rate_limit=50)
    def hit() -> None:
        stamps.append(time.monotonic())

    began = time.monotonic()
    threads = [threading.Thread(target=lambda: [hit() for _ in range(5)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    assert len(stamps) == 40
    _check_spacing(stamps, 50)
    assert 0.78 <= elapsed < 0.78 * 3


WORKER = """
import pickle, sys, threading, time
limiter = pickle.load(open(sys.argv[1], "rb"))
stamps = []
lock = threading.Lock()
def run():
    for _ in range(4):
        limiter.acquire()
        with lock:
            stamps.append(time.monotonic())
threads = [threading.Thread(target=run) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(map(repr, stamps)))
"""


def test_pickled_limiter_shares_budget_with_worker_processes(tmp_path: Path) -> None:
    """The decorating process and two worker processes (4 threads each) share one budget."""
    stamps: list[float] = []

    @opero.opero(rate_limit=40)
    def hit() -> None:
        stamps.append(time.monotonic())

    limiter = hit._opero_plan.limiter  # type: ignore[attr-defined]
    path = tmp_path / "limiter.pkl"
    path.write_bytes(pickle.dumps(limiter))
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
        hit()
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    for out in outs:
        stamps.extend(map(float, out.split()))
    assert len(stamps) == 8 + 2 * 16
    _check_spacing(stamps, 40)


def test_unrelated_processes_do_not_share_a_function_budget() -> None:
    """Two processes decorating the same function get separate budgets (own files, own pace)."""
    code = """
import time
from opero import opero
@opero(rate_limit=5)
def hit():
    return time.monotonic()
stamps = [hit() for _ in range(3)]
print(hit._opero_plan.limiter.store.path, stamps[-1] - stamps[0])
"""
    procs = [_spawn(code) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert outs[0][0] != outs[1][0]  # the decorating pid is part of the budget's name
    for _, span in outs:  # each alone: 3 starts 0.2 s apart
        assert 0.4 - 0.002 <= float(span) < 0.4 * 3


def test_two_processes_naming_one_scope_share_it() -> None:
    """Two processes naming the same rate_limit_scope draw on one host-wide budget."""
    scope = f"test-{uuid.uuid4().hex}"
    code = f"""
import threading, time
from opero import opero
stamps = []
@opero(rate_limit=30, rate_limit_scope={scope!r})
def hit():
    stamps.append(time.monotonic())
threads = [threading.Thread(target=lambda: [hit() for _ in range(4)]) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(map(repr, stamps)))
"""
    procs = [_spawn(code) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    stamps = [float(x) for out in outs for x in out.split()]
    assert len(stamps) == 24
    _check_spacing(stamps, 30)
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
from opero import opero
@opero(rate_limit=10)
def f(): pass
@opero(rate_limit=10, rate_limit_scope={scope!r})
def g(): pass
print(f._opero_plan.limiter.store.path, g._opero_plan.limiter.store.path)
"""
    )
    fn_path, scope_path = out.split()
    assert "-fn-" in fn_path and not os.path.exists(fn_path)
    assert os.path.exists(scope_path)
    os.unlink(scope_path)


def test_testing_mode_bypasses_shared_limits() -> None:
    """opero.testing() skips rate-limit waits also for machine-wide limiters."""

    @opero.opero(rate_limit=1)
    def f() -> int:
        return 1

    began = time.monotonic()
    with opero.testing():
        assert sum(f() for _ in range(20)) == 20
    assert time.monotonic() - began < 0.5
