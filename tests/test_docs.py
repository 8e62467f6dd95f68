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
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.DOTALL | re.MULTILINE
)
NO_RUN = "<!-- no-run -->"


def markdown_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def code_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, runnable)`` for each ```python block of ``path``."""
    text = path.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        runnable = not (before and before[-1].strip() == NO_RUN)
        code = textwrap.dedent("\n".join(line for line in m["code"].splitlines()))
        blocks.append((text.count("\n", 0, m.start()) + 1, code, runnable))
    return blocks


EXAMPLES = [
    pytest.param(code, runnable, id=f"{path.relative_to(ROOT)}:{line}")
    for path in markdown_files()
    if path.exists()
    for line, code, runnable in code_blocks(path)
]


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


def test_every_page_is_in_the_nav() -> None:
    """Every page under docs/ is reachable from mkdocs.yml's nav."""
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert str(page.relative_to(DOCS)) in nav, page


def test_docs_have_examples() -> None:
    """The README and the guides carry runnable examples, and opt-outs are rare."""
    assert len(EXAMPLES) >= 30
    skipped = [p for p in EXAMPLES if not p.values[1]]
    assert len(skipped) <= 3


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
