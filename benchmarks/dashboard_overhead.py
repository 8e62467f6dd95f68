"""How much does a live dashboard slow a 20,000-item opmap? (SPEC §8: at most 3 %.)

Runs in a real ipykernel (nbclient), where widget updates really travel over the kernel's
comm channel: the same map is timed with and without ``%opero dashboard`` attached,
interleaved, and the medians compared. Two workloads: a trivial item (pure opero overhead,
the worst case for any observer) and a 1 ms I/O-like item (``time.sleep``).

Usage: ``python benchmarks/dashboard_overhead.py [--repeats 7] [--items 20000]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]

SETUP = """
import time, statistics, json
from opero import opmap
from opero.notebook.dashboard import Dashboard
from IPython.display import display

@opmap(mode="thread", workers=4, progress=False, retries=0)
def trivial(i):
    return i * 2

@opmap(mode="thread", workers=16, progress=False, retries=0)
def io_like(i):
    time.sleep(0.001)
    return i

def timed(fn, n):
    began = time.perf_counter()
    out = fn(range(n))
    assert len(out) == n
    return time.perf_counter() - began
"""

MEASURE = """
N, R = {items}, {repeats}
report = {{}}
board = Dashboard(title="benchmark")
display(board.widget)  # shown once; each run only attaches or detaches it
for fn, repeats in ((trivial, 3 * R), (io_like, R)):
    timed(fn, N // 4)  # warm the pools
    plain, shown, refreshes = [], [], 0
    for r in range(repeats):
        for with_dashboard in ((False, True) if r % 2 == 0 else (True, False)):
            if with_dashboard:
                board.attach()
            time.sleep(0.3)  # let the kernel's iopub thread settle
            before = board.refreshes
            (shown if with_dashboard else plain).append(timed(fn, N))
            refreshes += board.refreshes - before
            if with_dashboard:
                board.detach()
    p, s = statistics.median(plain), statistics.median(shown)
    report[fn.__name__] = dict(
        items=N, repeats=repeats, median_plain_s=round(p, 4), median_dashboard_s=round(s, 4),
        overhead_pct=round(100 * (s / p - 1), 2), refreshes_per_run=round(refreshes / repeats, 1),
    )
print("RESULT " + json.dumps(report))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(SETUP),
        nbformat.v4.new_code_cell(MEASURE.format(items=args.items, repeats=args.repeats)),
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    NotebookClient(nb, timeout=1800, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.get("output_type") == "stream")
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    report = json.loads(line[len("RESULT ") :])
    print(f"dashboard overhead on a {args.items:,}-item opmap in a real kernel (medians of interleaved runs)")
    for name, r in report.items():
        print(
            f"  {name:8s} plain {r['median_plain_s']:.3f}s  with dashboard {r['median_dashboard_s']:.3f}s"
            f"  overhead {r['overhead_pct']:+.1f}%  ({r['refreshes_per_run']} widget refreshes per run,"
            f" {r['repeats']} runs each)"
        )
    worst = max(r["overhead_pct"] for r in report.values())
    print(f"worst overhead {worst:+.1f}% (budget: 3%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
