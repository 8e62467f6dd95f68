"""The documentation builds with ``mkdocs build --strict`` and every example in it runs.

Each ```python block of docs/**/*.md and README.md runs as its own script in a fresh
interpreter (a fresh namespace, so every block must be self-contained). Redis URLs in a
block are pointed at the test's own redis-server. A block may opt out only with
``<!-- no-run -->`` on the line right before it, for code that needs the internet; opted-out
blocks are not collected (no skipped tests), and ``test_docs_have_examples`` counts them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared.docs import EXAMPLES, ROOT


def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds: no broken link, no missing page, API docs render."""
    site = tmp_path / "site"
    config = str(ROOT / "mkdocs.yml")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", config, "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    for name in ("opmap", "AllFailedError", "configure_logging", "testing"):
        assert name in api
    assert "Make a function resilient" in api  # rendered from opero's docstring


_REDIS_URL = re.compile(r"redis://[^\s\"']+")


@pytest.mark.parametrize(("code", "runnable"), [p for p in EXAMPLES if p.values[1]])
def test_example_runs(code: str, runnable: bool, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The block runs on its own, in a fresh interpreter, without error."""
    assert runnable
    if "redis://" in code:  # any server named in the docs becomes the test's loopback one
        code = _REDIS_URL.sub(request.getfixturevalue("redis_server").url, code)
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    output = proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"--- code ---\n{code}\n--- output ---\n{output}"
