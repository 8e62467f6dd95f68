"""The live dashboard in a real browser: headless Chromium against Voila and JupyterLab.

Each test serves notebooks/dashboard_demo.ipynb: a loopback demo API, a 500-row frame whose
rows answer 200, 404 or 500, maps working in background threads for about 20 s (one of them
long enough to be stopped), and ``%opero dashboard``. The tests read what a user sees:

- Voila: the counts grow and a chart's SVG changes between two reads while the maps run;
  the error panel names 404 for the 404 rows and 500 for the 500 rows.
- JupyterLab in its dark theme: the same live checks, the stop button returns the partial
  results (the rest cancelled), the text is readable on the dark background, and once the
  work is idle a saved notebook reopened without a kernel shows the dashboard's snapshot,
  never "model not found".

Screenshots are kept under artifacts/browser/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

TABLE = ".opero-table"
#: the 500-row frame of the demo notebook: 404 when i % 10 == 3, 500 when i % 10 == 7
EXPECTED_STATUS = {3: "404", 7: "500"}


def fetch_row(page: Any, column: str) -> str | None:
    """The inner HTML of ``column`` in the ``fetch`` row of the first dashboard on the page."""
    return page.evaluate(  # type: ignore[no-any-return]
        """(column) => {
            for (const row of document.querySelectorAll('.opero-table tr.opero-row')) {
                const name = row.querySelector('.opero-function');
                if (name && (name.title || name.textContent).endsWith('.fetch')) {
                    const cell = row.querySelector('.opero-' + column);
                    return cell ? cell.innerHTML : null;
                }
            }
            return null;
        }""",
        column,
    )


def fetch_calls(page: Any) -> int | None:
    """The ``calls`` cell of the ``fetch`` row."""
    text = fetch_row(page, "calls")
    return None if text is None else int(text.replace(",", ""))


def wait_for(check: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout}s")


def check_live_dashboard(page: Any, artifacts: Path, name: str) -> None:
    """Counts grow and the throughput chart's SVG changes between two reads."""
    page.wait_for_selector(TABLE, timeout=90_000)
    first = wait_for(lambda: (fetch_calls(page) or 0) > 0 and fetch_calls(page), 60, "fetch calls above 0")
    chart_1 = wait_for(lambda: fetch_row(page, "chart-calls"), 10, "a calls chart")
    assert "<polyline" in chart_1
    page.locator(".opero-dashboard").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / f"{name}-first.png"), full_page=True)
    second = wait_for(lambda: (fetch_calls(page) or 0) > first and fetch_calls(page), 30, "more calls")
    chart_2 = wait_for(
        lambda: (c := fetch_row(page, "chart-calls")) != chart_1 and c, 10, "the chart to change"
    )
    points = re.findall(r'points="([^"]+)"', chart_2)
    assert points and len(points[0].split()) >= 2, chart_2
    print(f"{name}: fetch calls {first} -> {second}; chart changed")


def check_error_panel(page: Any) -> None:
    """The panel counts 50 404s and 50 500s and names each listed row's own status."""
    group = page.locator('.opero-error-group[data-function$=".status"]')
    group.wait_for(timeout=60_000)
    text = group.inner_text()
    assert "100 failed" in text and "HTTPError 404 ×50" in text and "HTTPError 500 ×50" in text, text
    assert "status.failures()" in text
    lines = group.locator(".opero-error")
    assert lines.count() >= 3
    for i in range(lines.count()):
        line = lines.nth(i)
        row = int(line.locator(".opero-where").inner_text().removeprefix("row "))
        expected = EXPECTED_STATUS[row % 10]
        assert f"HTTP Error {expected}" in line.locator(".opero-error-text").inner_text(), (
            row,
            line.inner_text(),
        )
    assert "Spread(" not in page.content()


def test_dashboard_in_voila(page: Any, voila_url: str, artifacts_dir: Path) -> None:
    """Voila renders the dashboard live (counts, a changing chart) and the right errors."""
    page.goto(voila_url, timeout=90_000)
    check_live_dashboard(page, artifacts_dir, "voila")
    check_error_panel(page)
    page.screenshot(path=str(artifacts_dir / "voila-errors.png"), full_page=True)


def luminance(css_color: str) -> float:
    """Relative luminance (0 black .. 1 white) of an ``rgb(...)``/``rgba(...)`` colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def run_all(page: Any) -> None:
    page.wait_for_selector('.jp-StatusBar-Widget:has-text("| Idle")', timeout=120_000)
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('.lm-Menu-item:not(.lm-mod-disabled):has-text("Run All Cells")')


def test_dashboard_in_dark_jupyterlab_stop_and_saved_snapshot(
    page: Any, dark_lab: Any, artifacts_dir: Path
) -> None:
    """Dark JupyterLab: live charts, right errors, stop returns partial results, saved snapshot."""
    page.goto(dark_lab.url, timeout=90_000)
    run_all(page)
    page.wait_for_selector(f".jp-OutputArea-output {TABLE}", timeout=90_000)
    check_live_dashboard(page, artifacts_dir, "jupyterlab-dark")
    check_error_panel(page)

    # The long crawl has a bar and a stop button in the dashboard: press it.
    crawl_row = page.locator(".opero-dashboard .widget-hbox", has_text="crawl #")
    crawl_row.first.wait_for(timeout=30_000)
    crawl_row.first.locator("button.opero-stop").click()
    finished = page.locator(".opero-finished", has_text="crawl #")
    finished.first.wait_for(timeout=30_000)
    summary = finished.first.inner_text()
    match = re.search(r"crawl #\d+: ([\d,]+)/1,500 · ([\d,]+) cancelled · [\d.,]+/s · stopped in", summary)
    assert match, summary
    done, cancelled = (int(g.replace(",", "")) for g in match.groups())
    assert 0 < done < 1500 and done + cancelled == 1500, summary

    # Dark theme: the dashboard's text is light on a dark output area.
    colours = page.evaluate(
        """() => {
            const d = document.querySelector('.jp-OutputArea-output .opero-d');
            const cell = document.querySelector('.jp-Notebook');
            return [getComputedStyle(d).color, getComputedStyle(cell).backgroundColor,
                    getComputedStyle(document.querySelector('.opero-table td')).color];
        }"""
    )
    text, background, cell_text = colours
    assert luminance(background) < 0.3, colours
    assert luminance(text) > 0.6 and luminance(cell_text) > 0.6, colours
    page.locator(".opero-dashboard").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "jupyterlab-dark-stopped.png"), full_page=True)

    # Idle: the display holds the static snapshot; save, shut the kernel down, reopen.
    page.wait_for_selector(".jp-RenderedHTMLCommon .opero-dashboard", timeout=60_000)
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)
    page.click('.lm-MenuBar-itemLabel:text-is("Kernel")')
    page.click('.lm-Menu-item:not(.lm-mod-disabled):has-text("Shut Down Kernel")')
    page.wait_for_timeout(1500)
    page.goto(dark_lab.url.replace("?reset", ""), timeout=90_000)
    page.wait_for_selector(".jp-OutputArea-output .opero-dashboard", timeout=60_000)
    page.wait_for_timeout(3000)  # give a widget renderer time to fail, if it were used
    body = page.inner_text("body")
    assert "model not found" not in body
    board = page.locator(".jp-OutputArea-output .opero-dashboard").first
    snapshot = board.inner_text()
    assert "fetch" in snapshot and "HTTPError 404 ×50" in snapshot, snapshot
    assert "crawl #1" in snapshot and "cancelled" in snapshot, snapshot
    board.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "jupyterlab-dark-reopened.png"), full_page=True)
