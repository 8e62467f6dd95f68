"""opero: resilient, parallel calls to slow, flaky, rate-limited things, notebook first.

``@opero`` makes one call resilient (retries, fallbacks, timeout, cache, rate limit);
``@opmap`` maps such a function over many items in parallel without letting one bad item
kill the run. ``%load_ext opero`` adds cell magics and a live dashboard in Jupyter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _errors
from ._decorator import opero
from ._errors import (  # noqa: F401  (public through _errors.__all__, below)
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
from ._parts import parts
from ._telemetry import configure_logging, stats
from ._testing import testing
from ._threads import run
from .stores import clear_cache

if TYPE_CHECKING:
    from .notebook._shell import ExtensionShell

    __version__: str  # resolved lazily by __getattr__ below

__all__ = [
    "__version__",
    "charge",
    "clear_cache",
    "configure",
    "configure_logging",
    "opero",
    "observe",
    "opmap",
    "parts",
    "run",
    "stats",
    "testing",
]
# The exceptions: their names are listed once, in _errors.__all__, less the two that
# only opero's executors use.
__all__ += _errors.__all__
__all__.remove("RemoteError")
__all__.remove("portable")


def __getattr__(name: str) -> str:
    # Resolved on first use: importlib.metadata is slow to import.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("opero")
        except PackageNotFoundError:
            return "0.0.0+unknown"
    raise AttributeError(f"module 'opero' has no attribute {name!r}")


def load_ipython_extension(ipython: ExtensionShell) -> None:
    """``%load_ext opero``: register the ``%opero``/``%%opero`` magics."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: ExtensionShell) -> None:
    """``%unload_ext opero``."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)
