"""opmap streaming: imap, lazy generators, bounded memory."""

from __future__ import annotations

from opero import opmap


def test_map_over_a_generator_returns_every_result() -> None:
    """A generator input gives the same list as a list input."""

    @opmap(mode="process", workers=2, progress=False)
    def inc(x: int) -> int:
        return x + 1

    assert inc(x for x in range(1000)) == list(range(1, 1001))
