"""The dashboard shows the pace: tokens used as a share of token_limit, slots against
max_concurrency, in the limit-use column, the "all columns" table and the saved snapshot."""

from __future__ import annotations

import re
import threading
import time
from collections import deque

from opero import opero, opmap
from opero.notebook import dashboard
from opero.notebook._hub import History


def _row(board: dashboard.Dashboard, name: str) -> dict[str, object]:
    return next(r for r in board.rows() if r["function"] == name)


def _history(stats: object, *samples: tuple[float, ...]) -> None:
    """Put a known history in the hub for ``stats`` (what the sampler would have seen)."""
    with dashboard.hub.lock:
        dashboard.hub.history[stats.name] = History(id(stats), deque(samples))  # type: ignore[attr-defined]


def test_token_use_chart_is_tokens_per_second_as_a_share_of_token_limit() -> None:
    """900 tokens in 1 s against token_limit=1000/s: the token chart reads 90 % on a 100 % scale."""

    @opero(token_limit="1000/s", tokens=lambda n: n)
    def spend(n: int) -> int:
        return n

    spend(10)
    _history(spend.stats, (0.0, 0, 0, 0, 0.0), (1.0, 1, 0, 1, 900.0))
    row = _row(dashboard.Dashboard(title="t"), spend.stats.name)
    chart = str(row["chart_limit"])
    assert 'class="opero-s-tokens"' in chart
    assert 'data-last="90"' in chart and 'data-top="100"' in chart
    assert "token use of 1,000/s: now 90.0 %" in chart  # the chart's own hover title
    assert row["token_use"] == 90.0
    assert "opero-s-limit" not in chart  # no rate_limit: no request chart


def test_rate_and_tokens_stack_in_the_limit_column() -> None:
    """With rate_limit and token_limit both charts sit in the one cell, one above the other."""

    @opero(rate_limit="100/s", token_limit="6000/min", tokens=lambda n: n)
    def both(n: int) -> int:
        return n

    both(5)
    _history(both.stats, (0.0, 0, 0, 0, 0.0), (1.0, 50, 0, 50, 25.0))
    chart = str(_row(dashboard.Dashboard(title="t"), both.stats.name)["chart_limit"])
    lines = re.findall(r'<div class="opero-chart-line"><svg[^>]*class="opero-spark"', chart)
    assert len(lines) == 2
    assert chart.index("opero-s-limit") < chart.index("opero-s-tokens")
    assert 'data-last="50"' in chart  # 50 attempts/s of 100/s
    assert 'data-last="25"' in chart  # 25 tokens/s of 6,000/min = 100/s


def test_slots_in_use_against_max_concurrency_while_a_map_runs() -> None:
    """A map of 8 threads at max_concurrency=3: the cell reads 3/3 slots while it runs, 0/3 after."""
    release = threading.Event()

    @opmap(workers=8, max_concurrency=3, progress=False)
    def hold(i: int) -> int:
        release.wait(10)
        return i

    runner = threading.Thread(target=hold, args=(range(6),))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while hold.stats["concurrency_in_flight"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        board = dashboard.Dashboard(title="t")
        during = _row(board, hold.stats.name)
        assert "3/3 slots" in str(during["chart_limit"])
        assert "concurrency in flight" in board.snapshot() and ">3/3</td>" in board.snapshot()
    finally:
        release.set()
        runner.join()
    after = _row(dashboard.Dashboard(title="t"), hold.stats.name)
    assert "0/3 slots" in str(after["chart_limit"])


def test_all_columns_and_snapshot_carry_tokens_and_slots() -> None:
    """All columns (and the snapshot) show tokens used of the budget, token limit, concurrency."""

    @opero(token_limit="1000/s", token_budget=5000, max_concurrency=4, tokens=lambda n: n)
    def metered(n: int) -> int:
        return n

    for n in (100, 200, 300):
        metered(n)
    assert metered.stats["tokens_used"] == 600
    board = dashboard.Dashboard(title="t")
    row = _row(board, metered.stats.name)
    full = dashboard.render_table_html([row], charts=False, more=True)
    assert '<td class="opero-tokens-used">600 of 5,000</td>' in full
    assert '<td class="opero-token-limit">1,000/s</td>' in full
    assert '<td class="opero-concurrency-in-flight">0/4</td>' in full
    default = dashboard.render_table_html([row])
    assert ">tokens used</th>" not in default and ">concurrency in flight</th>" not in default
    assert "opero-s-tokens" in default and "0/4 slots" in default  # in the limit-use column
    snapshot = board.snapshot()
    assert "600 of 5,000" in snapshot and "opero-s-tokens" in snapshot and "0/4 slots" in snapshot


def test_text_view_has_a_pace_line_and_unpaced_functions_have_none() -> None:
    """The text dashboard says tokens % of the limit and slots; a plain function gets '–'."""

    @opero(token_limit="1000/s", max_concurrency=2, tokens=lambda n: n)
    def paced(n: int) -> int:
        return n

    @opero
    def plain(n: int) -> int:
        return n

    paced(1)
    plain(1)
    _history(paced.stats, (0.0, 0, 0, 0, 0.0), (1.0, 1, 0, 1, 400.0))
    board = dashboard.Dashboard(title="t")
    text = board.text()
    assert "paced: tokens 40 % of 1,000/s · 0/2 slots" in text
    assert not any(line.startswith("plain:") for line in text.splitlines())
    assert _row(board, plain.stats.name)["chart_limit"] == '<span class="opero-muted">–</span>'
    assert dashboard.render_table_text([_row(board, paced.stats.name)], more=True).count("0/2") == 1


def test_the_sampler_records_tokens_used() -> None:
    """hub.sample() keeps each function's tokens used, so the chart follows real spend."""

    @opero(token_limit="100000/s", tokens=lambda n: n)
    def sampled(n: int) -> int:
        return n

    sampled(250)
    dashboard.hub.sample()
    sampled(750)
    dashboard.hub.sample()
    with dashboard.hub.lock:
        samples = list(dashboard.hub.history[sampled.stats.name].samples)
    assert [s[4] for s in samples[-2:]] == [250.0, 1000.0]
