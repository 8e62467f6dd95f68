"""The notebook extension in a real ipykernel, executed headless by nbclient (SPEC §8, §0)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from tests.conftest import require

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(240)]

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _kernel_ready() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    require("python3" in specs, "no python3 kernelspec (pip install ipykernel)")


def execute(
    cells: list[str], cwd: Path, env: dict[str, str] | None = None, allow_errors: bool = False
) -> Any:
    """Run ``cells`` top to bottom in a fresh python3 kernel; return the executed notebook."""
    _kernel_ready()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    # The kernel imports this checkout's opero, whatever its cwd.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), old.get("PYTHONPATH") or "") if p
    )
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def stream(cell: Any, name: str = "stdout") -> str:
    """All text a cell wrote to ``name``."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == name)


def notes(cell: Any) -> str:
    """opero's notes under a cell: quiet display lines (never stderr)."""
    lines = [
        str(o.get("data", {}).get("text/plain", ""))
        for o in cell.outputs
        if o.output_type == "display_data" and "opero-note" in str(o.get("data", {}).get("text/html", ""))
    ]
    return "\n".join(lines)


def result_text(cell: Any) -> str:
    """The text/plain of the cell's Out[] value."""
    for o in cell.outputs:
        if o.output_type == "execute_result":
            return str(o.data.get("text/plain", ""))
    return ""


def widget_values(nb: Any) -> list[str]:
    """The ``value`` of every widget model whose state nbclient stored in the notebook."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [str(m["state"].get("value", "")) for m in state.values()]


CACHED_CELL = """%%opero cache=True retries=3
import json, urllib.request
values = [json.load(urllib.request.urlopen(f"{URL}/item/{i}"))["value"] for i in ids]
RUNS.write_text(str(int(RUNS.read_text()) + 1))  # counts successful runs (flaky items retry)
total = sum(values)
print("fetched", len(values), "items, total", total)
total
"""

SETUP = """import os
from pathlib import Path
URL = os.environ["DEMO_URL"]
RUNS = Path("runs.txt")
if not RUNS.exists():
    RUNS.write_text("0")
ids = list(range(5))
%load_ext opero
"""


def test_retry_cache_dashboard_and_async_in_a_kernel(tmp_path: Path, demo_server: Any) -> None:
    """One kernel: a cell retried until it passes, the dashboard's state, opero.run and await."""
    from opero.demo import item_value

    env = {"DEMO_URL": demo_server.url}
    nb = execute(
        [
            SETUP,
            # 1: retried cell — fails twice, then passes (attempts counted in a file)
            """%%opero retries=3 min_delay=0.01 max_delay=0.05
import urllib.request
n = int(Path("attempts.txt").read_text()) + 1 if Path("attempts.txt").exists() else 1
Path("attempts.txt").write_text(str(n))
if n < 3:
    raise ConnectionError(f"attempt {n}: not yet")
print("passed on attempt", n)
urllib.request.urlopen(f"{URL}/health").status
""",
            # 2: cached cell, first run
            CACHED_CELL,
            # 3: the dashboard, then work it must show
            "%opero dashboard",
            """import json, urllib.request
from opero import opmap

@opmap(retries=2, min_delay=0.01, mode="thread", workers=4, progress=False)
def fetch(i):
    return json.load(urllib.request.urlopen(f"{URL}/item/{i}"))["value"]

got = fetch(range(20))
print(sum(1 for g in got if isinstance(g, int)))
""",
            # 5: opero.run inside the kernel's running loop (asyncio.run refuses there)
            """import asyncio, opero
async def answer():
    await asyncio.sleep(0.01)
    return 42
try:
    asyncio.run(answer())
except RuntimeError as exc:
    print("asyncio.run refused:", "running event loop" in str(exc))
print("opero.run:", opero.run(answer()))
""",
            # 6: top-level await of an async opmap
            """import asyncio, json, urllib.request
from opero import opmap

@opmap(retries=2, min_delay=0.01, progress=False)
async def afetch(i):
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{URL}/item/a{i}").read())
    return json.loads(body)["value"]

aresults = await afetch(range(8))
print("async results:", len(aresults), all(isinstance(r, int) for r in aresults))
""",
            # 7: %opero nest is opt-in: afterwards asyncio.run nests in the kernel's loop
            "%opero nest\nprint('nested asyncio.run:', asyncio.run(answer()))",
        ],
        tmp_path,
        env,
    )
    retried = nb.cells[1]
    assert (tmp_path / "attempts.txt").read_text() == "3"
    assert "passed on attempt 3" in stream(retried)
    noted = notes(retried)
    assert noted.count("failed (ConnectionError") == 2, noted
    assert "[opero]" not in stream(retried, "stderr") + stream(retried)
    assert result_text(retried) == "200"

    expected = sum(item_value(str(i)) for i in range(5))
    assert f"fetched 5 items, total {expected}" in stream(nb.cells[2])
    assert (tmp_path / "runs.txt").read_text() == "1"

    shown = [o for o in nb.cells[3].outputs if o.output_type == "display_data"]
    assert len(shown) == 1, "the dashboard cell shows one display"
    # once the work was idle, the display holds the static snapshot (what a saved notebook shows)
    snapshot = str(shown[0]["data"].get("text/html", ""))
    assert "opero-table" in snapshot and "__main__.fetch" in snapshot, shown[0]["data"].keys()
    snap_row = next(r for r in snapshot.split("<tr") if "__main__.fetch" in r)
    assert '<td class="opero-calls">20</td>' in snap_row, snap_row
    assert stream(nb.cells[4]).strip() == "20"
    tables = [v for v in widget_values(nb) if "opero-table" in v and "__main__.fetch" in v]
    assert tables, "the dashboard's widget state holds the function row"
    row = next(r for r in tables[-1].split("<tr") if "__main__.fetch" in r)
    assert '<td class="opero-calls">20</td>' in row, row
    assert '<td class="opero-failures">0</td>' in row, row

    out = stream(nb.cells[5])
    assert "asyncio.run refused: True" in out
    assert "opero.run: 42" in out
    assert "async results: 8 True" in stream(nb.cells[6])
    assert "nested asyncio.run: 42" in stream(nb.cells[7])


def test_cached_cell_is_skipped_in_a_second_kernel(tmp_path: Path, demo_server: Any) -> None:
    """A cached cell is skipped after a kernel restart, restoring names and printed output."""
    from opero.demo import item_value

    env = {"DEMO_URL": demo_server.url}
    first = execute([SETUP, CACHED_CELL], tmp_path, env)
    printed = stream(first.cells[1])
    assert (tmp_path / "runs.txt").read_text() == "1"

    second = execute(
        [
            SETUP,
            CACHED_CELL,
            "print('restored', values, total, json.__name__, urllib.request.__name__)",
            "ids = list(range(6))",
            CACHED_CELL,
        ],
        tmp_path,
        env,
    )
    skipped = second.cells[1]
    assert stream(skipped) == printed, "the printed output is replayed"
    assert "cell skipped" in notes(skipped)
    assert (tmp_path / "runs.txt").read_text() == "2", "skipped once, re-run once after ids changed"
    expected = [item_value(str(i)) for i in range(5)]
    assert stream(second.cells[2]).strip() == f"restored {expected} {sum(expected)} json urllib.request"
    assert result_text(skipped) == str(sum(expected))
    rerun = second.cells[4]
    assert "fetched 6 items" in stream(rerun)
    assert "cell skipped" not in notes(rerun)


def test_invalid_options_show_the_configuration_error(tmp_path: Path) -> None:
    """A typo in a %%opero option shows ConfigurationError's hint and does not run the cell."""
    nb = execute(
        ["%load_ext opero", "%%opero retires=2\nprint('ran')"],
        tmp_path,
        allow_errors=True,
    )
    cell = nb.cells[1]
    errors = [o for o in cell.outputs if o.output_type == "error"]
    text = json.dumps([o.get("evalue", "") for o in errors]) + stream(cell, "stderr")
    assert "did you mean 'retries'" in text
    assert "ran" not in stream(cell)


def test_python_of_the_kernel_is_this_venv(tmp_path: Path) -> None:
    """The python3 kernel runs this interpreter (so it imports this opero and its deps)."""
    nb = execute(["import sys; print(sys.prefix)"], tmp_path)
    assert stream(nb.cells[0]).strip() == sys.prefix


ENRICH_CELL = """%%opero cache=True
import pandas as pd
import urllib.request
from opero import opmap

@opmap(mode="thread", workers=8, retries=0, progress=False)
def status(code):
    with urllib.request.urlopen(f"{URL}/status/{code}", timeout=5) as resp:
        return resp.status

RUNS.write_text(str(int(RUNS.read_text()) + 1))
enriched = status(pd.DataFrame({"code": [200, 404, 500, 404] * 5}), "code")
print("errors:", int(enriched["status_error"].notna().sum()))
"""

CHECK_ENRICHED = """errs = enriched["status_error"].dropna()
print("restored", len(enriched), len(errs), sorted({e.errors[-1].status for e in errs}),
      sorted({e.errors[-1].type_name for e in errs}))
"""


def test_cached_enriched_frame_with_http_errors_survives_a_restart(tmp_path: Path, demo_server: Any) -> None:
    """A cell making a frame with urllib HTTPErrors in its error column is cached and restored."""
    env = {"DEMO_URL": demo_server.url}
    first = execute([SETUP, ENRICH_CELL, CHECK_ENRICHED], tmp_path, env)
    assert "errors: 15" in stream(first.cells[1])
    assert "not cached" not in notes(first.cells[1]), notes(first.cells[1])
    assert (tmp_path / "runs.txt").read_text() == "1"
    # a second kernel: the cell is skipped and the frame comes back with its errors
    second = execute([SETUP, ENRICH_CELL, CHECK_ENRICHED], tmp_path, env)
    assert "cell skipped" in notes(second.cells[1])
    assert (tmp_path / "runs.txt").read_text() == "1", "the cell did not run again"
    assert stream(second.cells[2]).strip() == "restored 20 15 [404, 500] ['urllib.error.HTTPError']"


def test_map_bar_and_cell_status_leave_static_snapshots(tmp_path: Path) -> None:
    """A map's bar and a %%opero cell's status end as static HTML: readable in a saved notebook."""
    nb = execute(
        [
            "%load_ext opero",
            """import time
from opero import opmap

@opmap(mode="thread", workers=4, retries=0)
def work(i):
    time.sleep(0.01)
    if i % 10 == 0:
        raise ValueError(i)
    return i

out = work(range(100))
""",
            "%%opero name='status-cell'\ncell_out = work(range(40))\nlen(cell_out)",
        ],
        tmp_path,
    )
    bars = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert len(bars) == 1
    data = bars[0]["data"]
    assert WIDGET_VIEW not in data, "the finished bar left its snapshot only"
    html = data["text/html"]
    assert 'data-state="done"' in html and "work #1" in html
    assert 'class="opero-bar-ok" style="left:0;width:90.00%"' in html
    assert 'class="opero-bar-fail" style="left:90.00%;width:10.00%"' in html
    assert "100/100 · 10 failed" in data["text/plain"]
    status = [o for o in nb.cells[2].outputs if "opero-status" in str(o.get("data", {}).get("text/html", ""))]
    assert len(status) == 1, [o.get("data", {}).keys() for o in nb.cells[2].outputs]
    line = status[0]["data"]["text/html"]
    assert "<table" not in line, "a cell shows one status line, not a table"
    assert WIDGET_VIEW not in status[0]["data"]
    assert "work" in line and "40 calls" in line and "4 failed" in line
    assert result_text(nb.cells[2]) == "40"
