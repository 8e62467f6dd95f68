"""Typed options and signatures, checked by the real type checkers on tests/typing_check.py.

The file marks every line a checker must reject with ``# type: ignore[<mypy code>]``:

- mypy (strict, ``--warn-unused-ignores``) must pass: each marked error really occurs
  (otherwise the ignore is unused) and nothing else is wrong (every ``assert_type`` holds);
- pyright (strict, ignore comments disabled) must report errors on exactly the marked lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tests" / "typing_check.py"
BIN = Path(sys.executable).parent
IGNORE = re.compile(r"#\s*type:\s*ignore\[([^\]]+)\]")


def _marked() -> dict[int, set[str]]:
    """Line number -> the mypy error codes that line must raise."""
    out: dict[int, set[str]] = {}
    for n, line in enumerate(CHECK.read_text().splitlines(), 1):
        m = IGNORE.search(line)
        if m:
            out[n] = {c.strip() for c in m[1].split(",")}
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a type checker from the repository root with this tree importable; never raises."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_expected_errors_are_there() -> None:
    """The check file covers misspelt names and wrong types for each entry point."""
    text = CHECK.read_text().splitlines()
    marked = _marked()
    lines = {text[n - 1].split("#")[0].strip() for n in marked}
    for expected in (
        "@opero(retires=2)",
        '@opero(retries="3")',
        '@opmap(workers="4")',
        'configure(cache_backend="s3")',
    ):
        assert expected in lines
    for covered in ("Client().lengths(", "frame.pipe(square", "square(series)", ".imap("):
        assert any(covered in line for line in text), covered


@pytest.mark.timeout(300)
def test_mypy_strict_finds_exactly_the_expected_errors() -> None:
    """mypy --strict --warn-unused-ignores: every marked error occurs, and no other."""
    proc = _run([sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores", str(CHECK)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found in 1 source file" in proc.stdout


@pytest.mark.timeout(300)
def test_mypy_reports_the_marked_lines_when_ignores_are_off(tmp_path: Path) -> None:
    """Without its ignore comments the file fails on exactly the marked lines, with those codes."""
    bare = tmp_path / "typing_check.py"
    bare.write_text(IGNORE.sub("", CHECK.read_text()))
    proc = _run([sys.executable, "-m", "mypy", "--strict", "--show-error-codes", str(bare)])
    found: dict[int, set[str]] = {}
    for line in proc.stdout.splitlines():
        # any path: mypy's incremental cache may replay an identical file's errors under the
        # path it had in an earlier run
        m = re.match(r".*typing_check\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            found.setdefault(int(m[1]), set()).add(m[2])
    assert found == _marked(), proc.stdout


@pytest.mark.timeout(300)
def test_pyright_reports_errors_on_exactly_the_marked_lines(tmp_path: Path) -> None:
    """pyright (strict, ignore comments off) errs on each marked line and nowhere else."""
    pyright = BIN / "pyright"
    assert pyright.exists(), "pyright is a dev dependency"
    config = tmp_path / "pyrightconfig.json"
    config.write_text(
        json.dumps(
            {
                "extraPaths": [str(ROOT)],
                "pythonVersion": "3.11",
                "typeCheckingMode": "strict",
                "enableTypeIgnoreComments": False,
            }
        )
    )
    proc = _run([str(pyright), "--pythonpath", sys.executable, "-p", str(config), "--outputjson", str(CHECK)])
    report = json.loads(proc.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    lines = {d["range"]["start"]["line"] + 1 for d in errors}
    assert report["summary"]["filesAnalyzed"] == 1
    assert lines == set(_marked()), json.dumps(errors, indent=1)[:4000]
    by_line = {d["range"]["start"]["line"] + 1: d["message"] for d in errors}
    retries_line = next(n for n in _marked() if 'retries="3"' in CHECK.read_text().splitlines()[n - 1])
    assert '"retries"' in by_line[retries_line] and '"int"' in by_line[retries_line]
