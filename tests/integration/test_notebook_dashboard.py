"""The dashboard's numbers, failure panel, bars and stop, against real maps (no mocks).

These run in the test process (ipywidgets models work without a front end); the same
widgets are driven in a real kernel and a real browser in test_notebook_kernel.py and
test_browser.py.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest

from opero import opero, opmap
from opero._errors import AllFailedError, Cancelled
from opero._failures import failure_logs
from opero._progress import MapProgress, maps
from opero.notebook import dashboard


class NotFound(Exception):
    """Stands for an HTTP 404 (the browser test uses real urllib HTTPErrors)."""


class ServerError(Exception):
    """Stands for an HTTP 500."""


def test_failures_name_each_rows_own_error_and_index() -> None:
    """fn.failures() lists every failed DataFrame row by its index with its own final error."""
    import pandas as pd

    @opmap(mode="thread", workers=8, retries=1, min_delay=0.001, progress=False)
    def lookup(code: int) -> int:
        if code == 404:
            raise NotFound(f"HTTP Error 404: {code}")
        if code == 500:
            raise ServerError("HTTP Error 500")
        return code

    codes = [404 if i % 7 == 0 else 500 if i % 11 == 0 else 200 for i in range(500)]
    frame = pd.DataFrame({"code": codes}, index=[f"r{i}" for i in range(500)])
    out = lookup(frame, "code")
    failures = lookup.failures()
    expected_404 = {f"r{i}" for i in range(500) if codes[i] == 404}
    expected_500 = {f"r{i}" for i in range(500) if codes[i] == 500}
    assert len(failures) == len(expected_404) + len(expected_500) == int(out["lookup_error"].notna().sum())
    by_type = failures.groupby("error_type")["item"].apply(set).to_dict()
    assert by_type == {"NotFound": expected_404, "ServerError": expected_500}
    assert set(failures["attempts"]) == {2}
    assert list(failures.columns) == [
        "item", "error_type", "status", "message", "attempts", "time", "call",
        "position", "row", "value", "traceback",
    ]  # fmt: skip

    # this function's log only: earlier tests' functions keep theirs in the same registry
    html = dashboard.render_errors_html([log for log in failure_logs() if log.name == lookup.stats.name])
    assert "HTTPError 404" not in html
    assert f"NotFound ×{len(expected_404)}" in html and f"ServerError ×{len(expected_500)}" in html
    assert "lookup.failures()" in html
    assert "Spread(" not in html


def test_panel_never_mismatches_reused_error_objects() -> None:
    """Items failing with distinct errors each keep their own, even when ids get reused."""

    @opmap(mode="thread", workers=4, retries=0, progress=False)
    def flaky(i: int) -> int:
        raise (NotFound if i % 2 else ServerError)(f"item {i}")

    flaky(range(200))
    frame = flaky.failures()
    for item, etype, message in zip(frame["item"], frame["error_type"], frame["message"]):
        i = int(item)
        assert message == f"item {i}"
        assert etype == ("NotFound" if i % 2 else "ServerError")


def test_rate_is_recent_not_lifetime_and_idle_drops_to_zero() -> None:
    """calls/s covers the last seconds: one quick call does not read as thousands per second."""

    @opero
    def once() -> int:
        return 1

    board = dashboard.Dashboard(title="t")
    once()
    row = next(r for r in board.rows() if r["function"] == once.stats.name)  # not another test's
    assert 0.0 < row["recent_throughput"] <= 1.0
    # lifetime throughput (as_dict) would be 1 call over ~0 s
    assert once.stats.recent_throughput(time.time() + 6.0) == 0.0


def test_throttled_time_is_wall_clock() -> None:
    """Eight threads waiting for one rate limit count the wall-clock time once."""

    @opmap(mode="thread", workers=8, rate_limit=40, progress=False, retries=0)
    def limited(i: int) -> int:
        return i

    began = time.monotonic()
    limited(range(40))
    elapsed = time.monotonic() - began
    stats = limited.stats
    assert stats.rate_wait_seconds > stats.rate_wait_wall
    assert 0.3 < stats.rate_wait_wall <= elapsed + 0.05
    assert stats.budget == 40.0


def test_map_state_rate_eta_label_and_in_flight() -> None:
    """Each run has its own number; an exception marks it interrupted, not done."""

    @opmap(mode="thread", workers=2, progress=False, retries=0)
    def slow(i: int) -> int:
        time.sleep(0.02)
        if i == -1:
            raise KeyboardInterrupt
        return i

    slow(range(4))
    seen: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            running = [m for m in maps() if m.name.endswith("slow") and not m.finished]
            if running and running[0].done >= 4:
                m = running[0]
                seen.update(in_flight=m.in_flight, rate=m.rate(), eta=m.eta(), label=m.label)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    slow(range(40))
    watcher.join()
    assert seen["label"].endswith("slow #2")
    assert 1 <= seen["in_flight"] <= 40
    assert seen["rate"] and seen["rate"] > 0 and seen["eta"] is not None
    with pytest.raises(KeyboardInterrupt):
        slow([1, -1, 2])
    last = [m for m in maps() if m.name.endswith("slow")][-1]
    assert last.state == "interrupted" and last.label.endswith("slow #3")
    assert "interrupted" in last.summary()


def test_stop_returns_partial_results_with_cancelled_markers() -> None:
    """stop() (the dashboard's button) cancels the rest; unstarted items hold Cancelled."""

    @opmap(mode="thread", workers=2, progress=False, retries=0)
    def crawl(i: int) -> int:
        time.sleep(0.01)
        return i

    def press_stop() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in maps():
                if m.name.endswith("crawl") and not m.finished and m.done >= 10:
                    m.stop()
                    return
            time.sleep(0.005)

    presser = threading.Thread(target=press_stop)
    presser.start()
    out = crawl(range(2000))
    presser.join()
    assert len(out) == 2000
    done = [v for v in out if not isinstance(v, BaseException)]
    cancelled = [v for v in out if isinstance(v, Cancelled)]
    assert 10 <= len(done) < 500 and len(done) + len(cancelled) == 2000
    assert all(out[i] == i for i in range(2000) if not isinstance(out[i], Cancelled))
    run = [m for m in maps() if m.name.endswith("crawl")][-1]
    assert run.state == "stopped" and run.cancelled == len(cancelled)
    assert not run.background, "a map in the main thread: its button cannot be clicked in time"


def test_dashboard_stop_button_only_for_maps_a_click_can_reach() -> None:
    """A map collected in a background thread gets a live stop button; a main-thread one not."""
    import ipywidgets  # noqa: F401  (required: a dev dependency)

    release = threading.Event()

    @opmap(mode="thread", workers=2, progress=False, retries=0)
    def hold(i: int) -> int:
        release.wait(10)
        return i

    board = dashboard.Dashboard(title="t")
    board.widget
    got: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: got.update(out=hold(range(50))))
    worker.start()
    try:
        wait_until = time.monotonic() + 5
        while not [m for m in board.maps() if m.name.endswith("hold") and not m.finished and m.taken >= 2]:
            assert time.monotonic() < wait_until
            time.sleep(0.01)
        board.refresh(force=True)
        (label, button, _), *_ = board._bars
        assert "hold #" in label.value and not button.disabled
        button.click()  # what the front end's click does
    finally:
        release.set()
        worker.join(10)
    out = got["out"]
    assert any(isinstance(v, Cancelled) for v in out) and isinstance(out[0], int)
    assert [m for m in maps() if m.name.endswith("hold")][-1].state == "stopped"


def test_bar_html_shows_failed_in_proportion() -> None:
    """1 % failed paints 1 % of the bar red, not all of it."""
    from opero.notebook._html import bar_html

    p = MapProgress("m.f", 100, False, lambda: 0)
    p.advance(100, 1)
    p.close()
    html = bar_html(p)
    assert 'class="opero-bar-ok" style="left:0;width:99.00%"' in html
    assert 'class="opero-bar-fail" style="left:99.00%;width:1.00%"' in html
    assert 'data-state="done"' in html


@pytest.mark.parametrize("stderr_tty", [False, True])
def test_progress_auto_and_text_bar_interval(stderr_tty: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """progress="auto" draws nothing off a terminal; True draws a bar redrawn every ~10 s there."""
    from opero import _progress

    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: stderr_tty)
    auto = MapProgress("m.auto", 3, "auto", lambda: 0)
    assert (auto._bar is not None) == stderr_tty
    auto.close()
    shown = MapProgress("m.on", 3, {"file": io.StringIO()}, lambda: 0)
    bar = shown._bar.bar
    assert bar.mininterval == (0.1 if stderr_tty else 10.0)
    shown.close()


def test_progress_accepts_a_tqdm_class() -> None:
    """progress=<a tqdm class> draws with that class."""
    from tqdm import tqdm

    made = []

    class Mine(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()
            made.append(self)
            super().__init__(*args, **kwargs)

    p = MapProgress("m.cls", 5, Mine, lambda: 0)
    p.advance(5, 0)
    p.close()
    assert len(made) == 1 and made[0].n == 5


def test_workers_minus_one_means_every_cpu() -> None:
    """workers=-1 follows joblib: every CPU this process may use."""
    import os

    @opmap(mode="thread", workers=-1, progress=False)
    def ident(i: int) -> int:
        return i

    call = ident._engine._call((), [1, 2], (), {})
    assert call.workers == (os.cpu_count() or 1)


def test_failures_are_bounded() -> None:
    """The failure log keeps the last MAX_FAILURES and counts all."""
    from opero._progress import FailureLog

    log = FailureLog("m.f", limit=50)
    for i in range(120):
        log.add(str(i), AllFailedError("m.f", [ValueError(str(i))]), "f #1")
    assert log.total == 120 and len(log.records) == 50 and log.records[0].item == "70"
    assert log.by_type == {"ValueError": 120}


def test_http_errors_in_results_pickle_and_hash(demo_server: Any, tmp_path: Any) -> None:
    """urllib HTTPErrors kept in an enriched frame pickle, hash, save and load faithfully."""
    import pickle
    import urllib.request

    import joblib
    import pandas as pd

    from opero._errors import RemoteError

    @opmap(mode="thread", workers=8, retries=0, progress=False)
    def status(code: int) -> int:
        with urllib.request.urlopen(f"{demo_server.url}/status/{code}", timeout=5) as resp:
            return int(resp.status)

    frame = pd.DataFrame({"code": [200, 404, 500, 200, 404] * 10})
    out = status(frame, "code")
    wrapped = out["status_error"].dropna()
    assert len(wrapped) == 30
    assert all(isinstance(e, AllFailedError) for e in wrapped)
    errors = [e.errors[-1] for e in wrapped]
    first = errors[0]
    assert isinstance(first, RemoteError) and first.type_name == "urllib.error.HTTPError"
    assert [e.status for e in errors] == [404, 500, 404] * 10
    assert all(e.headers and "Content-Type" in e.headers for e in errors)
    assert "HTTP Error 404" in str(first)
    assert "Traceback" in first.traceback_text
    back = pickle.loads(pickle.dumps(out))
    assert [e.errors[-1].status for e in back["status_error"].dropna()] == [404, 500, 404] * 10
    # hashing works and is stable; after a round trip the errors' content hashes the same
    # (whole-frame bytes may differ once `distributed` has taught pickle to carry tracebacks)
    assert joblib.hash(out) == joblib.hash(out)
    content = [(type(e).__name__, str(e), e.errors[-1].status) for e in wrapped]
    assert joblib.hash(content) == joblib.hash(
        [(type(e).__name__, str(e), e.errors[-1].status) for e in back["status_error"].dropna()]
    )
    path = tmp_path / "enriched.pkl"
    out.to_pickle(path)
    assert list(pd.read_pickle(path)["status_error"].notna()) == list(out["status_error"].notna())
    failures = status.failures()
    assert set(failures["error_type"]) == {"HTTPError"}
    assert failures["status"].value_counts().to_dict() == {404: 20, 500: 10}
    assert sorted(set(failures["message"])) == [
        "HTTP Error 404: Not Found",
        "HTTP Error 500: Internal Server Error",
    ]


def _slow_square(i: int) -> int:
    time.sleep(0.02)
    return i * i


def test_in_flight_is_real_in_process_mode() -> None:
    """Items in worker processes count as in flight, in the map and in the dashboard's row."""
    squares = opmap(mode="process", workers=2, progress=False, retries=0)(_slow_square)
    board = dashboard.Dashboard(title="t")
    seen: list[tuple[int, int]] = []

    def watch() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(seen) < 5:
            running = [m for m in maps() if m.name.endswith("_slow_square") and not m.finished]
            if running and running[0].done > 0:
                row = next(r for r in board.rows() if r["function"].endswith("_slow_square"))
                seen.append((running[0].in_flight, row["in_flight"]))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out = squares(range(200))
    watcher.join()
    assert out == [i * i for i in range(200)]
    assert seen and all(m >= 1 and r >= 1 for m, r in seen), seen
    assert squares.stats.in_flight == 0


def test_a_running_map_keeps_its_row_and_stop_button() -> None:
    """Rows don't shift as other maps come and go: a button always stops the map it shows."""
    import ipywidgets  # noqa: F401  (required: a dev dependency)

    from opero.notebook.dashboard import Dashboard

    board = Dashboard()
    assert board.widget is not None  # builds the widgets
    a, b, c = (MapProgress(f"m.{n}", 10, False, lambda: 0) for n in "abc")
    for m in (a, b, c):
        m.background = True
    board._update_bars([a, b])
    board._update_bars([b])  # a finished: b keeps the second row, the first is hidden
    assert board._bar_maps == [None, b]
    board._update_bars([b, c])  # c takes the free first row; b stays where it was
    assert board._bar_maps == [c, b]
    board._stop_slot(1)
    assert b.stop_requested and not c.stop_requested
    for m in (a, b, c):
        m.close()
