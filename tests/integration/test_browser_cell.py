"""The notebook, round 2, in a real browser: JupyterLab with headless Chromium.

One notebook runs, with Run All: ``%opero dashboard``, then a rate-limited map in the cell
itself (4 workers, 20/s), then a slow map in the cell itself whose stop button is clicked.
The test reads what a user sees:

- while the rate-limited map runs, the dashboard's row once a second: its throttled time
  grows with the wait (it is not stale), its recent calls/s follows the calls counted on
  screen and stays at the limit, and the final row equals the function's own ``fn.stats``;
- the table fits a 1,000 px output area (its right edge inside the output);
- the stop button of a map running in the cell itself stops it: the map returns its partial
  results (the rest ``Cancelled``), and the queued cell after it runs.

Screenshots are kept under artifacts/browser/.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_browser import run_all, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]

NOTEBOOK = "round2.ipynb"
CELLS = [
    "%load_ext opero\nimport time\nfrom opero import opmap, Cancelled",
    "%opero dashboard",
    "@opmap(workers=4, rate_limit=20)\n"
    "def paced(i):\n"
    "    time.sleep(0.01)\n"
    "    return i\n\n"
    "paced_results = paced(list(range(240)))  # 12 s at 20/s",
    's = paced.stats\nprint("PACED_STATS", s["calls"], s["rate_waits"], round(s["rate_wait_wall"], 1))',
    "@opmap(workers=2)\n"
    "def slow(x):\n"
    "    time.sleep(0.05)\n"
    "    return x\n\n"
    "stopped = slow(list(range(600)))  # 15 s unless stopped",
    "done = sum(isinstance(v, int) for v in stopped)\n"
    'print("PARTIAL_RESULTS", done, sum(isinstance(v, Cancelled) for v in stopped))',
]


def write_notebook(root: Path) -> None:
    """The test notebook, in the Lab's root folder."""
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in CELLS
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / NOTEBOOK).write_text(json.dumps(nb))


def row_of(page: Any, name: str) -> dict[str, str] | None:
    """The text of every cell of function ``name``'s dashboard row, by column."""
    return page.evaluate(  # type: ignore[no-any-return]
        """(name) => {
            for (const row of document.querySelectorAll('.opero-table tr.opero-row')) {
                const f = row.querySelector('.opero-function');
                if (f && f.textContent === name) {
                    const out = {};
                    for (const td of row.querySelectorAll('td')) {
                        out[td.className.split(' ')[0]] = td.textContent;
                    }
                    return out;
                }
            }
            return null;
        }""",
        name,
    )


def seconds(text: str) -> float:
    """``0.42s``, ``4.5s``, ``12s``, ``1m05s`` as seconds."""
    m = re.fullmatch(r"(?:(\d+)m)?([\d.]+)s", text.strip())
    assert m, text
    return 60 * int(m.group(1) or 0) + float(m.group(2))


def throttled(row: dict[str, str]) -> float:
    """The wall-clock seconds in the ``rate waits`` cell: ``123 (4.5s)``."""
    m = re.search(r"\(([^)]+)\)", row["opero-rate-waits"])
    return seconds(m.group(1)) if m else 0.0


def number(text: str) -> float:
    return float(text.replace(",", "").removesuffix("/s"))


def read_live(page: Any, artifacts: Path) -> list[tuple[float, int, float, float]]:
    """(time, calls, recent calls/s, throttled s) of the ``paced`` row once a second while it runs."""
    wait_for(lambda: (r := row_of(page, "paced")) and int(number(r["opero-calls"])) > 0, 90, "paced calls")
    readings = []
    while True:
        row = row_of(page, "paced")
        assert row is not None
        calls = int(number(row["opero-calls"]))
        readings.append((time.monotonic(), calls, number(row["opero-recent-throughput"]), throttled(row)))
        if len(readings) == 4:
            page.screenshot(path=str(artifacts / "lab-cell-live.png"), full_page=True)
        if calls >= 240 or len(readings) > 60:
            return readings
        time.sleep(1.0)


def check_live_numbers(readings: list[tuple[float, int, float, float]]) -> None:
    """Throttled time grows with the wait; recent calls/s matches the calls counted on screen."""
    running = [r for r in readings if r[1] < 230]
    assert len(running) >= 6, readings
    # 4 workers behind a 20/s limit: some call waits at almost every moment, so the wall-clock
    # throttled time grows about a second per second (at least half of that, on a loaded box)
    grown = running[-1][3] - running[1][3]
    span = running[-1][0] - running[1][0]
    assert grown >= 0.5 * span - 1.0, readings
    assert all(b[3] >= a[3] for a, b in itertools.pairwise(running)), readings
    # recent calls/s (over 5 s) against the counts read on screen over the same 5 s
    for i in range(5, len(running)):
        t0, c0, _, _ = running[i - 5]
        t1, c1, recent, _ = running[i]
        counted = (c1 - c0) / (t1 - t0)
        assert counted <= 22.0, readings  # the limit holds
        assert abs(recent - counted) <= 6.0, (i, recent, counted, readings)


def check_width(page: Any) -> dict[str, float]:
    """The table's right edge stays inside the output area, and it is at most 1,000 px wide."""
    box = page.evaluate(
        """() => {
            const t = document.querySelector('.jp-OutputArea-output .opero-table');
            const out = t.closest('.jp-OutputArea-output');
            const d = t.closest('.opero-d');
            const a = t.getBoundingClientRect(), o = out.getBoundingClientRect();
            return {width: a.width, right: a.right, outRight: o.right, outWidth: o.width,
                    scroll: d.scrollWidth - d.clientWidth};
        }"""
    )
    assert box["width"] <= 1000, box
    assert box["right"] <= box["outRight"] + 0.5 and box["scroll"] <= 1, box
    return box  # type: ignore[no-any-return]


def test_live_numbers_width_and_stop_in_the_cell(page: Any, light_lab: Any, artifacts_dir: Path) -> None:
    """Live numbers at 1 Hz, a table that fits, and a stop click on a map run in the cell."""
    write_notebook(light_lab.root)
    page.goto(f"{light_lab.base}/lab/tree/{NOTEBOOK}?reset", timeout=90_000)
    run_all(page)
    page.wait_for_selector(".jp-OutputArea-output .opero-table", timeout=90_000)

    readings = read_live(page, artifacts_dir)
    check_live_numbers(readings)
    print("paced, once a second (t, calls, calls/s, throttled s):", readings)

    # the function's own counts, printed by the next cell, equal the dashboard's final row
    own = page.locator(".jp-OutputArea-output", has_text="PACED_STATS").first
    own.wait_for(timeout=60_000)
    _, calls, waits, wall = own.inner_text().split()[:4]
    assert int(calls) == 240
    final = wait_for(
        lambda: (r := row_of(page, "paced")) and r["opero-calls"] == "240" and r, 30, "the final paced row"
    )
    assert final["opero-rate-waits"].startswith(f"{int(waits):,} ("), (final, waits)
    assert abs(throttled(final) - float(wall)) <= 1.0, (final, wall)
    box = check_width(page)
    print("table box:", box)

    # the map in the cell itself: its bar's stop button stops it; the queued cell then runs
    bar = page.locator(".opero-map-bar", has_text="slow #1")
    bar.first.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    stop = bar.first.locator("button.opero-stop")
    assert stop.is_enabled()
    bar.first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "lab-cell-before-stop.png"), full_page=True)
    clicked = time.monotonic()
    stop.click()
    partial = page.locator(".jp-OutputArea-output", has_text="PARTIAL_RESULTS").first
    partial.wait_for(timeout=60_000)
    took = time.monotonic() - clicked
    _, done, cancelled = partial.inner_text().split()[:3]
    assert int(done) + int(cancelled) == 600 and 10 <= int(done) < 560, (done, cancelled)
    assert took < 10.0, took
    partial.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "lab-cell-stopped.png"), full_page=True)
    print(f"stopped: {done} done, {cancelled} cancelled, {took:.1f} s after the click")
