"""``import opero`` is light and exposes exactly the public API ."""

from __future__ import annotations

import opero

PUBLIC = {
    "opero",
    "opmap",
    "OperoError",
    "AllFailedError",
    "ConfigurationError",
    "WorkerLostError",
    "CircuitOpenError",
    "Cancelled",
    "BudgetExhausted",
    "charge",
    "observe",
    "configure_logging",
    "configure",
    "clear_cache",
    "stats",
    "run",
    "testing",
    "parts",
    "__version__",
}


def test_public_names() -> None:
    """__all__ is the SPEC's list; every name resolves."""
    assert set(opero.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(opero, name) is not None
    assert opero.__version__.count(".") >= 2
