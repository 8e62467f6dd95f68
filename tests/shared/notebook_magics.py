"""Helpers shared by tests/unit/test_notebook_magics.py and tests/integration/test_notebook_magics.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import IPython  # noqa: F401  (required: a dev dependency)
import pytest


@pytest.fixture(scope="module")
def shell() -> Any:
    """One in-process IPython shell with the extension loaded."""
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "opero")
    return ip


@pytest.fixture
def ip(shell: Any) -> Iterator[Any]:
    """The shell, with the names a test defines removed afterwards."""
    before = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)


def run(ip: Any, source: str) -> Any:
    """Run a cell and return its ExecutionResult."""
    return ip.run_cell(source, store_history=False)
