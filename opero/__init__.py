"""opero: resilient, parallel calls to slow, flaky, rate-limited things, notebook first.

``@opero`` makes one call resilient (retries, fallbacks, timeout, cache, rate limit);
``@opmap`` maps such a function over many items in parallel without letting one bad item
kill the run. ``%load_ext opero`` adds cell magics and a live dashboard in Jupyter.
"""

from __future__ import annotations

from typing import Any

from ._decorator import opero
from ._errors import (
    AllFailedError,
    BudgetExhausted,
    Cancelled,
    CircuitOpenError,
    ConfigurationError,
    OperoError,
    WorkerLostError,
)
from ._map import opmap
from ._options import configure
from ._pace import charge, observe
from ._telemetry import configure_logging, stats
from ._testing import testing
from ._threads import run
from .stores import clear_cache

__all__ = [
    "AllFailedError",
    "BudgetExhausted",
    "Cancelled",
    "CircuitOpenError",
    "ConfigurationError",
    "OperoError",
    "WorkerLostError",
    "__version__",
    "charge",
    "clear_cache",
    "configure",
    "configure_logging",
    "opero",
    "observe",
    "opmap",
    "run",
    "stats",
    "testing",
]


def __getattr__(name: str) -> Any:
    # Resolved on first use: importlib.metadata is slow to import.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("opero")
        except PackageNotFoundError:
            return "0.0.0+unknown"
    raise AttributeError(f"module 'opero' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext opero``: register the ``%opero``/``%%opero`` magics."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext opero``."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)
