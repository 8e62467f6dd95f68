"""opmap streaming: imap, lazy generators, bounded memory."""

from __future__ import annotations

import itertools
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from opero import ConfigurationError, opmap


def test_imap_streams_in_input_order_from_a_generator() -> None:
    """imap yields results in input order while the generator is still being consumed."""
    pulled = []

    def gen() -> Iterator[int]:
        for i in range(50_000):
            pulled.append(i)
            yield i

    @opmap(workers=4, progress=False)
    def double(x: int) -> int:
        return 2 * x

    stream = double.imap(gen())
    first = list(itertools.islice(stream, 10))
    assert first == [2 * i for i in range(10)]
    assert len(pulled) < 50_000  # the input is read lazily, not up front
    stream.close()


def test_imap_unordered_yields_fast_items_first() -> None:
    """imap with ordered=False yields in completion order."""

    @opmap(workers=4, ordered=False, progress=False)
    def nap(x: float) -> float:
        time.sleep(x)
        return x

    assert list(nap.imap([0.2, 0.0, 0.1])) == [0.0, 0.1, 0.2]


@pytest.mark.timeout(60)
def test_imap_memory_stays_bounded() -> None:
    """100,000 items of 2 KB stream through imap with under 60 MB peak (tracemalloc)."""

    def blobs() -> Iterator[bytes]:
        for i in range(100_000):
            yield i.to_bytes(4, "little") * 512

    @opmap(workers=4, progress=False)
    def echo(blob: bytes) -> bytes:
        return blob

    tracemalloc.start()
    try:
        count = 0
        for out in echo.imap(blobs()):
            count += len(out) == 2048
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 60 * 2**20, f"peak {peak / 2**20:.1f} MB"


def test_imap_refuses_str() -> None:
    """imap refuses a str just like the map."""
    fn = opmap(progress=False)(lambda x: x)
    with pytest.raises(ConfigurationError):
        list(fn.imap("abc"))
