"""The demo notebooks execute top to bottom in a real kernel, against the loopback demo API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
#: lines each of our notebooks must print (other notebooks only have to run without error)
EXPECTED = {
    "01_quickstart.ipynb": [
        "ok: 100 failed: 0",
        "same: True cache hits: 100",
        "['int', 'ValueError', 'int']",
    ],
    "02_scraping_fallbacks_rate_limits.ipynb": [
        "pages: 20 first: Page 0 via Mozilla/5.0 (X11; Linux x86_64)",
        "fallbacks at most one per worker: True",
        "keys used: {'key-good'}",
        "with rate_limit=15: 429s = 0 ok = 40",
    ],
    "03_dataframe_enrichment.ipynb": [
        "rows: 5 failed: 1",
        "failed row: 12 HTTPError",
        "input untouched: ['customer', 'address']",
        "geocode.lat",
        "geocode [10, 11, 12, 13, 14]",
        "rows: 2000 distinct: 100 requests: 100",
        "rows: 1000 vectors: 999 failed rows: [137]",
        "requests: 30 first batch: 50",
        "rerun only the failed rows: True",
        "failed after resume: 0",
    ],
    "05_pushback.ipynb": [
        "ok: 800 failed: 0",
        "settled near the server's 100/s: True",
        "all items ok: True",
        "breaker: open -> half_open",
        "CircuitOpenError: next probe in 30 s",
    ],
    "06_llm_enrichment.ipynb": [
        "rows: 400 failed: 0",
        "token limit used >= 80 %: True",
        "429s at most 1 %: True",
        "spent within the budget: True",
    ],
}


def notebook_paths() -> list[Path]:
    """Every notebook to execute: all of notebooks/*.ipynb except dashboard_* ones."""
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("dashboard_"))


def text_outputs(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in nb.cells:
        # one stream's chunks read as the cell shows them: a progress line or widget update
        # written by another thread between two chunks of one print must not split its line
        streams: dict[str, str] = {}
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                streams[out["name"]] = streams.get(out["name"], "") + out["text"]
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
        parts.extend(streams.values())
    return "\n".join(parts)


@pytest.fixture(scope="session")
def python3_kernel() -> str:
    """A ``python3`` kernelspec that runs this interpreter (installed into the venv if needed)."""
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        ok = spec.argv[0] in ("python", "python3", sys.executable) or spec.argv[0].startswith(sys.prefix)
    except Exception:
        ok = False
    if not ok:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True)
    return "python3"


def test_committed_notebooks_are_clean() -> None:
    """Our notebooks are committed without outputs and match what tools/build_notebooks.py writes."""
    tools = str(NOTEBOOKS.parent / "tools")
    sys.path.insert(0, tools)
    try:
        import build_notebooks as _build
    finally:
        sys.path.remove(tools)
    for name, cells in _build.NOTEBOOKS.items():
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in committed.cells), name
        fresh = _build.build(cells)
        assert json.loads(nbformat.writes(committed)) == json.loads(nbformat.writes(fresh)), name


def test_expected_notebooks_exist() -> None:
    """The quickstart, scraping and enrichment notebooks are there."""
    names = {p.name for p in notebook_paths()}
    assert set(EXPECTED) <= names


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_executes(path: Path, python3_kernel: str) -> None:
    """Every cell runs without error, and the notebook prints what its prose promises."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name=python3_kernel, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    output = text_outputs(nb)
    for line in EXPECTED.get(path.name, []):
        assert line in output, f"{line!r} not printed by {path.name}:\n{output[-3000:]}"
