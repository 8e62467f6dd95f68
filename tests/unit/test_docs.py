"""The documentation builds with ``mkdocs build --strict`` and every example in it runs.

Each ```python block of docs/**/*.md and README.md runs as its own script in a fresh
interpreter (a fresh namespace, so every block must be self-contained). Redis URLs in a
block are pointed at the test's own redis-server. A block may opt out only with
``<!-- no-run -->`` on the line right before it, for code that needs the internet; opted-out
blocks are not collected (no skipped tests), and ``test_docs_have_examples`` counts them.
"""

from __future__ import annotations

from tests.shared.docs import DOCS, EXAMPLES, ROOT


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
