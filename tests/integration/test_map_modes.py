"""opmap: modes, results, ordering, options, methods, cache and telemetry (sync functions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
