"""Tests for the loopback demo API in ``opero.demo`` (talks only to 127.0.0.1)."""

from __future__ import annotations

import hashlib
import re

import pytest

from opero.demo import (
    DemoServer,
    first_attempt_fails,
)


def test_item_flakiness_rule_matches_documented_hash() -> None:
    """first_attempt_fails is sha256(f"{seed}:item:{id}")[:8] / 2**32 < fail_rate."""
    for item_id in ("1", "2", "abc", "42"):
        digest = hashlib.sha256(f"7:item:{item_id}".encode()).hexdigest()
        expected = int(digest[:8], 16) / 2**32 < 0.3
        assert first_attempt_fails(item_id, seed=7, fail_rate=0.3) is expected
    assert not first_attempt_fails("1", fail_rate=0.0)
    assert first_attempt_fails("1", fail_rate=1.0)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_non_loopback_host_refused(host: str) -> None:
    """Any host other than 127.0.0.1 raises ValueError."""
    with pytest.raises(ValueError, match=re.escape("127.0.0.1")):
        DemoServer(host=host)
