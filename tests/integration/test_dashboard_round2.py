"""The dashboard, round 2: it fits, names cells well, explains errors and waits; stop in the cell."""

from __future__ import annotations

import os
import queue
import re
import time
from pathlib import Path
from typing import Any

import pytest

from opero import opero, opmap
from opero._failures import failure_logs
from opero._progress import Failure, FailureLog, MapProgress
from opero.notebook import dashboard
from opero.notebook._html import sparkline
from opero.notebook._hub import History
from opero.notebook._tables import short_name, totals


class ApiError(Exception):
    """A stand-in for an HTTP library's error: carries its status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP Error {status}")
        self.status = status


def test_cell_names_are_cut_from_the_end_not_split_at_dots() -> None:
    """A %%opero cell's name keeps its start; a dotted function name shows its last part."""
    cell = "%%opero records = [json.load(urllib.request.urlopen(u)) for u in urls]"
    shown = short_name(cell)
    assert shown.startswith("%%opero records = [json.load(")
    assert shown.endswith("…") and len(shown) == dashboard.NAME_WIDTH
    assert short_name("mymodule.fetch_page") == "fetch_page"
    assert short_name("tests.test_x.test_y.<locals>.fetch") == "fetch"


def test_panel_counts_recovered_and_permanent_per_status_and_says_item_or_row() -> None:
    """HTTP 500s that a retry fixed read as recovered, 404s as permanent; list items by position."""
    seen: dict[int, int] = {}

    @opmap(workers=4, retries=2, min_delay=0.001, max_delay=0.002, progress=False)
    def fetch(i: int) -> int:
        seen[i] = seen.get(i, 0) + 1
        if i % 25 == 0:
            raise ApiError(404)
        if i % 5 == 0 and seen[i] == 1:
            raise ApiError(500)
        return i

    items = list(range(5000, 5200))
    fetch(items)
    (log,) = [log for log in failure_logs() if log.name == fetch.stats.name]
    rows = {status: (rec, perm) for status, rec, perm in log.recovered(dict(fetch.stats.attempt_errors))}
    permanent_404 = sum(1 for i in items if i % 25 == 0)
    recovered_500 = sum(1 for i in items if i % 5 == 0 and i % 25)
    assert rows[404][1] == permanent_404 == 8
    assert rows[500] == (recovered_500, 0), rows
    html = dashboard.render_errors_html([log])
    assert f"HTTP 500: {recovered_500:,} recovered, 0 permanent" in html
    assert "item 175" in html  # 5175 sits at position 175 of the list
    frame = fetch.failures()
    assert set(frame["value"]) == {i for i in items if i % 25 == 0}
    assert all("ApiError" in tb and "raise ApiError(404)" in tb for tb in frame["traceback"])


def test_dataframe_rows_read_as_rows() -> None:
    """A failed DataFrame row is named by its index label: "row 275"."""
    record = Failure("f", "275", "HTTPError", "gone", 1, time.time(), "f #1", 404, 275, True)
    assert record.where == "row 275"
    assert Failure("f", "5275", "E", "m", 1, 0.0, "f #1", None, 5275).where == "item 5,275"


def test_charts_carry_scale_and_hover_values() -> None:
    """A sparkline writes its top value with its unit and a <title> per sample."""
    svg = sparkline([0.0, 5.0, 12.5], "opero-s-calls", step=0.5, what="calls")
    assert ">12.5/s</text>" in svg
    assert svg.count("<title>") == 4  # the chart's own and one per sample
    assert "<title>-1.0 s: 0.00/s</title>" in svg or "<title>-1.0 s: 0/s</title>" in svg
    assert "<title>0.0 s: 12.5/s</title>" in svg
    limit = sparkline([50.0, 100.0], "opero-s-limit", top=100.0, unit=" %")
    # the 100 % line sits below the label, not on the chart's top border
    assert '<line class="opero-s-top" x1="0" y1="8"' in limit and ">100 %</text>" in limit


def test_failures_chart_shares_the_calls_scale() -> None:
    """One failure a second beside 100 calls a second is drawn low, not at full height."""
    board = dashboard.Dashboard(title="t")

    @opero
    def busy() -> int:
        return 1

    hub = dashboard.hub
    with hub.lock:
        hub.history[busy.stats.name] = History(
            id(busy.stats), __import__("collections").deque([(0.0, 0, 0, 0), (1.0, 100, 1, 100)])
        )
    busy()
    row = next(r for r in board.rows() if r["function"] == busy.stats.name)
    assert 'data-top="100"' in row["chart_failures"], row["chart_failures"]


def test_adaptive_rate_gets_a_limit_chart() -> None:
    """rate_limit="auto" has a limit-use chart against its current rate."""

    @opero(rate_limit="auto", rate_start=20)
    def auto() -> int:
        return 1

    auto()
    assert auto.stats.budget == 20.0
    board = dashboard.Dashboard(title="t")
    row = next(r for r in board.rows() if r["function"] == auto.stats.name)
    assert "opero-s-limit" in row["chart_limit"]


def test_hint_when_workers_mostly_wait_on_the_rate_limit() -> None:
    """8 workers behind a 10/s limit for 5 ms calls: the hint says most time waits, fewer would do."""

    @opmap(workers=8, rate_limit=10, progress=False)
    def paced(i: int) -> int:
        time.sleep(0.005)
        return i

    import threading

    runner = threading.Thread(target=paced, args=(range(40),))
    runner.start()
    time.sleep(2.5)
    running = [
        m for m in dashboard.Dashboard(title="t").maps() if m.name == paced.stats.name and not m.finished
    ]
    hint = dashboard.worker_hint(running[0], paced.stats) if running else None
    runner.join()
    assert hint is not None, "no hint"
    share, enough = re.match(
        r"8 workers, (\d+) % of their time waiting for the 10/s limit: (\d+) would do", hint
    ).groups()  # type: ignore[union-attr]
    assert int(share) >= 70 and 1 <= int(enough) <= 3, hint


def test_table_default_columns_fit_and_latency_shows() -> None:
    """The default table has latency and no lifetime columns; the toggle's table has them all."""
    compact = dashboard.render_table_html([])
    assert "latency p50" in compact and "recent throughput" in compact
    assert "cache hit rate" not in compact
    full = dashboard.render_table_html([], more=True)
    assert "cache hit rate" in full and "latency p95" in full


def test_snapshot_and_live_share_the_layout() -> None:
    """The saved snapshot holds the same top (title, table, hints) and tail as the live widget."""
    board = dashboard.Dashboard(title="layout")
    rows = board.rows()
    board.rows = lambda: rows  # type: ignore[method-assign]  # one moment for both views
    snapshot = board.snapshot()
    assert board._top_html(rows, more=False) in snapshot
    assert board._tail_html() in snapshot
    assert '<details class="opero-more"><summary>all columns</summary>' in snapshot


def test_progress_line_shows_elapsed_while_running() -> None:
    """A running map's line says how long it has run, like tqdm."""
    p = MapProgress("m.f", 10, False, lambda: 0)
    p.started -= 12.0
    assert "12s elapsed" in p.summary()
    p.close()
    assert "elapsed" not in p.summary()


def test_failure_log_recovered_ignores_non_http() -> None:
    """Errors without an HTTP status are not listed per status."""
    log = FailureLog("x")
    log.add("1", ValueError("bad"), "x #1")
    assert log.recovered({None: 3}) == []


# -- the stop button in a real kernel ---------------------------------------------------------

_SETUP = """
import time
from opero import opmap, Cancelled

@opmap(workers=2)
def slow(x):
    time.sleep(0.05)
    return x
"""


def _kernel() -> Any:
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p
    )
    return start_new_kernel(kernel_name="python3", env=env)


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_stop_button_reaches_a_map_running_in_the_cell() -> None:
    """A click on the bar's stop button ends a map in the cell; its results hold Cancelled for the rest."""
    km, kc = _kernel()
    try:
        kc.execute_interactive(_SETUP, timeout=60)
        began = time.monotonic()
        msg_id = kc.execute("results = slow(list(range(400)))")  # 400 x 50 ms / 2 workers = 10 s
        after_id = kc.execute("print('queued cell ran', len(results))")
        button = _stop_button(kc, 20.0)
        time.sleep(0.5)
        kc.session.send(
            kc.shell_channel.socket,
            kc.session.msg(
                "comm_msg", {"comm_id": button, "data": {"method": "custom", "content": {"event": "click"}}}
            ),
        )
        _wait_reply(kc, msg_id, 30.0)
        took = time.monotonic() - began
        printed = _wait_stream(kc, after_id, 30.0)
        out: list[str] = []
        kc.execute_interactive(
            "print(sum(isinstance(v, int) for v in results), sum(isinstance(v, Cancelled) for v in results))",
            output_hook=lambda m: (
                out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
            ),
            timeout=30,
        )
        done, cancelled = map(int, "".join(out).split())
        assert took < 6.0, took
        assert done + cancelled == 400 and 10 <= done <= 300 and cancelled >= 100, (done, cancelled)
        assert "queued cell ran 400" in printed
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _stop_button(kc: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            state = content.get("data", {}).get("state", {})
            if state.get("_model_name") == "ButtonModel" and state.get("description") == "stop":
                return str(content["comm_id"])
    raise AssertionError("no stop button appeared")


def _wait_reply(kc: Any, msg_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = kc.get_shell_msg(timeout=0.5)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            assert reply["content"]["status"] == "ok", reply["content"]
            return
    raise AssertionError("the map's cell did not finish")


def _wait_stream(kc: Any, msg_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return text
    return text


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_dashboard_side_opens_a_sidecar_panel() -> None:
    """%opero dashboard --side puts the dashboard in a sidecar widget and leaves a note in the cell."""
    km, kc = _kernel()
    try:
        messages: list[Any] = []
        side = "%load_ext opero\n%opero dashboard --side"
        kc.execute_interactive(side, output_hook=messages.append, timeout=60)
        models = [
            m["content"]["data"]["state"].get("_model_name")
            for m in messages
            if m["msg_type"] == "comm_open" and "state" in m["content"].get("data", {})
        ]
        assert "SidecarModel" in models, models
        notes = [
            str(m["content"]["data"].get("text/plain"))
            for m in messages
            if m["msg_type"] == "display_data" and "opero-note" in str(m["content"]["data"].get("text/html"))
        ]
        assert notes == ["opero dashboard: opened in a side panel (JupyterLab)"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_panel_total_matches_stats_after_cancelled_items() -> None:
    """Items cut by an interrupt are listed as cancelled, apart from the failures stats counts."""
    from opero import Cancelled

    log = FailureLog("m.cut")
    for i in range(3):
        log.add(str(i), ValueError("bad"), "cut #1", i)
    log.add("3", Cancelled("cut #1: interrupted while this item ran"), "cut #1", 3)
    assert totals(log) == "3 failed, 1 cancelled"
    assert "3 failed, 1 cancelled (ValueError ×3, Cancelled ×1)" in dashboard.render_errors_html([log])
