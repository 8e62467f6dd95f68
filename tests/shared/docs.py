"""Helpers shared by tests/unit/test_docs.py and tests/integration/test_docs.py."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
