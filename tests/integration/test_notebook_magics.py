"""%opero / %%opero in an in-process IPython shell: option parsing, cell cache, dashboard."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import IPython  # noqa: F401  (required: a dev dependency)
import pytest

from tests.shared.notebook_magics import run


def test_clear_cache_drops_cell_entries(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """%opero clear-cache empties the cell cache, so the cell runs again."""
    cell = "%%opero cache=True cache_namespace='cells-test'\nvalue = 5\nprint('ran')"
    run(ip, cell)
    run(ip, cell)
    assert "cell skipped" in capsys.readouterr().out
    run(ip, "%opero clear-cache cells-test")
    run(ip, cell)
    out = capsys.readouterr()
    assert "cell skipped" not in out.out.split("ran")[0] and "ran" in out.out


def test_import_opero_stays_light() -> None:
    """Importing opero imports neither IPython nor ipywidgets (they load with %load_ext)."""
    code = "import sys, opero; print(sorted(m for m in ('IPython', 'ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
