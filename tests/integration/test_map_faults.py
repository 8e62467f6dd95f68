"""opmap faults: dead workers, Ctrl-C, resumable maps, rate limits across process workers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from opero import AllFailedError, WorkerLostError, opmap

ROOT = Path(__file__).resolve().parents[2]


def test_killed_worker_fails_only_its_items_and_they_retry(tmp_path: Path) -> None:
    """A worker SIGKILLed while holding item 5 costs that item one WorkerLostError attempt."""
    marker = tmp_path / "killed"

    @opmap(mode="process", workers=2, retries=2, progress=False)
    def work(x: int) -> tuple[int, int]:
        if x == 5 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)
        return x * 10, os.getpid()

    out = work(range(12))
    assert [v for v, _ in out] == [x * 10 for x in range(12)]
    assert marker.exists()
    assert work.stats.retries >= 1
    assert work.stats.failures == 0


def test_item_whose_every_attempt_kills_its_worker_gets_all_failed_error() -> None:
    """When all of an item's attempts die with their worker: AllFailedError of WorkerLostErrors."""

    @opmap(mode="process", workers=2, retries=1, progress=False)
    def deadly(x: int) -> int:
        if x == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    out = deadly(range(4))
    assert out[0] == 0 and out[1] == 1 and out[3] == 3
    err = out[2]
    assert isinstance(err, AllFailedError)
    assert len(err.errors) == 2
    assert all(isinstance(e, WorkerLostError) for e in err.errors)
    assert "SIGKILL" in str(err.errors[0])
    assert deadly.stats.failures == 1


def _worker_pids(mark: str) -> list[int]:
    """Live pids of opero pool workers whose environment carries ``mark``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"executors._worker" in cmd and mark.encode() in env:
            found.append(int(entry))
    return found


def _lines(log: Path, kind: str) -> set[int]:
    if not log.exists():
        return set()
    return {int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith(kind)}


@pytest.mark.timeout(60)
def test_ctrl_c_stops_promptly_and_rerun_resumes(tmp_path: Path) -> None:
    """SIGINT stops a process map within 2 s, leaves no worker, and a rerun recomputes only the rest."""
    mark = f"OPERO_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "OPERO_CACHE_DIR": str(tmp_path / "cache"), "OPERO_TEST_MARK": mark}
    script = str(ROOT / "tests/_map_scripts/resumable.py")
    first = tmp_path / "first.log"
    proc = subprocess.Popen(
        [sys.executable, script, str(first)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while len(_lines(first, "done")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _worker_pids(mark), "the map should be running on pool workers"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode != 0
    time.sleep(0.2)
    assert _worker_pids(mark) == []
    done_first = _lines(first, "done")
    assert 3 <= len(done_first) < 12

    second = tmp_path / "second.log"
    rerun = subprocess.run(
        [sys.executable, script, str(second)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    recomputed = _lines(second, "start")
    assert recomputed | done_first == set(range(12))
    # an item finishing in the instant of the interrupt may not have reached the cache
    assert len(recomputed & done_first) <= 2
    assert len(recomputed) < 12


def test_timeout_per_attempt_in_process_mode() -> None:
    """timeout= also bounds each attempt inside process workers."""

    @opmap(mode="process", workers=2, timeout=0.2, retries=0, progress=False)
    def nap(x: float) -> float:
        time.sleep(x)
        return x

    out = nap([0.0, 2.0])
    assert out[0] == 0.0
    assert isinstance(out[1], AllFailedError)
    assert isinstance(out[1].errors[0], TimeoutError)


def test_rate_limit_is_shared_by_process_workers() -> None:
    """Two process workers at rate_limit=20 start attempts at least 50 ms apart in total."""

    @opmap(mode="process", workers=2, rate_limit=20, progress=False)
    def stamp(_: int) -> float:
        return time.monotonic()

    stamp(range(2))  # warm the workers so their start-up does not hide the spacing
    times = sorted(stamp(range(12)))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 0.002
    assert stamp.stats.rate_waits >= 5
