"""A plain thread map over a list hands its lanes slices of the list (spans), not pairs."""

from __future__ import annotations

import opero
from opero import opmap
from opero.executors._chunks import ListSource, Span, run_consecutive


def _flaky(x: int) -> int:
    if x % 997 == 5:
        raise ValueError(f"bad {x}")
    return x * 2


def test_list_map_keeps_failures_in_place() -> None:
    """20,000 items: every result at its index, each failure is its own exception there."""
    fn = opmap(mode="thread", retries=0, progress=False, workers=4)(_flaky)
    items = list(range(20_000))
    out = fn(items)
    assert len(out) == 20_000
    bad = [i for i, v in enumerate(out) if isinstance(v, BaseException)]
    assert bad == [i for i in items if i % 997 == 5]
    assert isinstance(out[5], opero.AllFailedError) and repr(out[5].__cause__) == "ValueError('bad 5')"
    assert all(out[i] == 2 * i for i in items if i % 997 != 5)
    assert fn.stats.calls == 20_000  # type: ignore[attr-defined]
    assert fn.stats.failures == len(bad)  # type: ignore[attr-defined]


def test_list_source_spans_cover_the_list_once() -> None:
    """Spans are consecutive slices; iterating a span gives the (index, item) pairs."""
    src = ListSource(list("abcdefg"))
    first, second, rest = src.span(3), src.span(3), src.span(3)
    assert (first.start, first.items, second.start, second.items) == (0, ["a", "b", "c"], 3, ["d", "e", "f"])
    assert (rest.start, rest.items, src.taken) == (6, ["g"], 7)
    assert list(second) == [(3, "d"), (4, "e"), (5, "f")]
    assert not src.span(3)


def test_span_through_the_policy_retries_and_counts() -> None:
    """A span's failing item goes through the plan's retries; the rest run in one map()."""
    seen: dict[int, int] = {}

    @opero.opero(retries=2)
    def once_bad(x: int) -> int:
        seen[x] = seen.get(x, 0) + 1
        if x == 3 and seen[x] == 1:
            raise RuntimeError("first try")
        return x + 100

    run = run_consecutive(once_bad._opero_plan, Span(10, [1, 2, 3, 4]))  # type: ignore[attr-defined]
    assert list(run) == [(10 + i, True, 101 + i, None) for i in range(4)]
    assert seen == {1: 1, 2: 1, 3: 2, 4: 1}
