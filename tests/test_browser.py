"""The live dashboard in a real browser: headless Chromium against Voila and JupyterLab.

Each test serves notebooks/dashboard_demo.ipynb (a loopback demo API, an opmap working in a
background thread, ``%opero dashboard``), waits for the dashboard to render, reads the
function's call count twice while the map runs and checks it grew: the update is live.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

TABLE = ".opero-table"


def fetch_calls(page: Any) -> int | None:
    """The ``calls`` cell of the ``fetch`` row of the first dashboard on the page."""
    text = page.evaluate(
        """() => {
            for (const row of document.querySelectorAll('.opero-table tr.opero-row')) {
                const name = row.querySelector('.opero-function');
                if (name && name.textContent.includes('fetch')) {
                    return row.querySelector('.opero-calls').textContent;
                }
            }
            return null;
        }"""
    )
    return None if text is None else int(text.replace(",", ""))


def wait_for_calls(page: Any, above: int, timeout: float) -> int:
    """Wait until the fetch row shows more than ``above`` calls; return the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = fetch_calls(page)
        if calls is not None and calls > above:
            return calls
        time.sleep(0.2)
    raise AssertionError(f"the dashboard's fetch calls did not exceed {above} within {timeout}s")


def check_live_dashboard(page: Any, artifacts: Path, name: str) -> None:
    """The dashboard renders and its counts grow between two reads."""
    page.wait_for_selector(TABLE, timeout=90_000)
    first = wait_for_calls(page, 0, 60)
    page.screenshot(path=str(artifacts / f"{name}-first.png"), full_page=True)
    second = wait_for_calls(page, first, 30)
    page.screenshot(path=str(artifacts / f"{name}-second.png"), full_page=True)
    assert second > first
    bars = page.locator(".widget-hprogress .progress-bar")
    print(f"{name}: fetch calls {first} -> {second}; progress bars: {bars.count()}")


def test_dashboard_updates_live_in_voila(page: Any, voila_url: str, artifacts_dir: Path) -> None:
    """Voila renders the dashboard and its counts grow while the opmap runs."""
    page.goto(voila_url, timeout=90_000)
    check_live_dashboard(page, artifacts_dir, "voila")


def test_dashboard_updates_live_in_jupyterlab(page: Any, lab_url: str, artifacts_dir: Path) -> None:
    """JupyterLab: Run All Cells, then the dashboard renders and its counts grow."""
    page.goto(lab_url, timeout=90_000)
    page.wait_for_selector('.jp-StatusBar-Widget:has-text("| Idle")', timeout=120_000)
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('.lm-Menu-item:not(.lm-mod-disabled):has-text("Run All Cells")')
    page.wait_for_selector(f".jp-OutputArea-output {TABLE}", timeout=90_000)
    check_live_dashboard(page, artifacts_dir, "jupyterlab")
