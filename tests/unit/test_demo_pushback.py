"""The demo API's pushback modes (429 above the limit on every endpoint, an outage window)
and the ``make demo`` runs built on them (issue 13.5)."""

from __future__ import annotations

import pytest

from opero.demo import DemoServer


def test_burst_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="burst"):
        DemoServer(rate_limit=5, burst=0.5)
