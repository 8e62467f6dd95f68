"""opmap: modes, results, ordering, options, methods, cache and telemetry (sync functions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import opero
from opero import AllFailedError, opmap
from opero._telemetry import subscribe
from tests.shared.map_modes import _square_or_fail

ROOT = Path(__file__).resolve().parents[2]


def test_function_defined_in_main_runs_in_process_mode() -> None:
    """A script's own (__main__) function maps in process mode (cloudpickle by value)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/_map_scripts/main_process.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["values"] == [3 * x for x in range(20)]
    assert out["me"] not in out["pids"]


MODES = ["thread", "process", "async", "async_process"]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_returns_results_in_input_order_with_failures_in_place(mode: str) -> None:
    """Every mode returns one slot per input in order; the bad item holds its AllFailedError."""
    fn = opmap(mode=mode, workers=2, retries=1, min_delay=0.01, progress=False)(_square_or_fail)
    out = fn(range(8))
    assert out[:3] == [0, 1, 4]
    assert out[4:] == [16, 25, 36, 49]
    assert isinstance(out[3], AllFailedError)
    assert len(out[3].errors) == 2
    assert fn.stats.failures == 1
    assert fn.stats.successes == 7
    assert fn.stats.retries == 1


def test_extra_args_and_kwargs_reach_every_call() -> None:
    """fn(items, *args, **kwargs) calls func(item, *args, **kwargs)."""

    @opmap(mode="process", workers=2, progress=False)
    def fn(x: int, y: int, *, z: int = 0) -> int:
        return x + y + z

    assert fn([1, 2, 3], 10, z=100) == [111, 112, 113]


def test_process_mode_uses_worker_processes() -> None:
    """mode='process' runs items outside the parent process, in up to `workers` processes."""

    @opmap(mode="process", workers=2, progress=False)
    def pid(_: int) -> int:
        time.sleep(0.02)
        return os.getpid()

    pids = set(pid(range(20)))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_parent_cache_hits_are_not_dispatched_to_workers(tmp_path: Path) -> None:
    """In process mode cache lookups happen in the parent and results land in its cache."""
    log = tmp_path / "calls"

    @opmap(mode="process", workers=2, cache=True, progress=False)
    def record(x: int) -> int:
        with open(log, "a") as f:
            f.write(f"{x}\n")
        return x + 1

    assert record(range(6)) == list(range(1, 7))
    assert record(range(8)) == list(range(1, 9))
    assert sorted(int(v) for v in log.read_text().split()) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert record.stats.cache_hits == 6


def test_worker_retries_and_events_reach_the_parent(tmp_path: Path) -> None:
    """Retries in process workers appear in the parent's fn.stats, opero.stats() and events."""
    seen: list[str] = []
    unsubscribe = subscribe(lambda e: seen.append(e.kind), kinds={"retry", "item_failed"})

    @opmap(mode="process", workers=2, retries=2, min_delay=0.01, progress=False)
    def flaky(x: int) -> int:
        marker = tmp_path / f"m{x}"
        if x % 2 and not marker.exists():
            marker.touch()
            raise ConnectionError("first attempt fails")
        if x == 4:
            raise KeyError("always")
        return x

    try:
        out = flaky(range(8))
    finally:
        unsubscribe()
    assert [v for i, v in enumerate(out) if i != 4] == [0, 1, 2, 3, 5, 6, 7]
    assert isinstance(out[4], AllFailedError)
    # 4 odd items retried once; item 4 retried twice
    assert flaky.stats.retries == 6
    assert flaky.stats.calls == 8
    assert seen.count("retry") == 6
    assert seen.count("item_failed") == 1
    frame = opero.stats()
    assert frame.loc[flaky.stats.name, "retries"] == 6


class Scaler:
    """Holds a factor; its opmap'd methods map over items after self."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @opmap(mode="process", workers=2, progress=False)
    def scale(self, x: int) -> int:
        return x * self.factor

    @opmap(progress=False)
    @classmethod
    def name_of(cls, x: int) -> str:
        return f"{cls.__name__}{x}"

    @opmap(progress=False)
    @staticmethod
    def neg(x: int) -> int:
        return -x


def test_methods_take_items_after_self() -> None:
    """Instance, class and static methods: items are the first argument after self/cls."""
    s = Scaler(3)
    assert s.scale([1, 2]) == [3, 6]
    assert list(s.scale.imap([4])) == [12]
    assert Scaler.name_of([1]) == ["Scaler1"]
    assert s.neg([1, 2]) == [-1, -2]
