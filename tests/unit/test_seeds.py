"""The seed guides' bookkeeping, without running them: every ```python block is collected by
the integration suite (tests/integration/test_seeds.py runs each one in a subprocess), the
prelude shadows nothing a block defines, and only syntax templates are left out."""

from __future__ import annotations

import re

import pytest

from tests.shared.seeds import PRELUDE, SEED_BLOCKS, block, python_blocks, seed_files


def test_every_seed_block_is_covered() -> None:
    """Each ```python block of each guide has an entry here: none is silently left out."""
    found = {(p.stem, i) for p in seed_files() for i in range(len(python_blocks(p)))}
    assert found == set(SEED_BLOCKS)


def test_prelude_shadows_nothing_a_block_defines() -> None:
    """The prelude only adds names a block uses without defining; it never replaces the guide's."""
    prelude_names = set(re.findall(r"^(?:def|class|async def) (\w+)", PRELUDE, re.MULTILINE))
    for path in seed_files():
        for code in python_blocks(path):
            defined = set(re.findall(r"^\s*(?:def|class|async def) (\w+)", code, re.MULTILINE))
            assert not (prelude_names & defined) - {"expensive_operation", "process_item"}, path.name


def test_only_templates_are_left_out() -> None:
    """The one seed block not run is a syntax template, not Python: it does not compile."""
    left_out = [key for key, seed in SEED_BLOCKS.items() if seed.skip]
    assert len(left_out) == 1
    for guide, index in left_out:
        with pytest.raises(SyntaxError):
            compile(block(guide, index), f"{guide}-{index}", "exec")
