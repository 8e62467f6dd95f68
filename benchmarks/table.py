"""The README's benchmark table, printed from a ``run.py`` results file (nothing typed by hand).

Usage: ``python benchmarks/table.py benchmarks/results/<run>.json [before.json]``. With a
second file, a before/after table of opero's figures and target ratios is printed as well.
``--readme`` rewrites the README's table (between its ``bench:start``/``bench:end`` marks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _ratio(shape: dict[str, Any]) -> tuple[str, float | None]:
    """The target in words and opero's figure against it (a ratio, or extra ms)."""
    t = shape.get("target") or {}
    res = shape["results"]
    if "max_ratio" in t and t["peer"] in res and "opero" in res:
        return f"≤ {t['max_ratio']:g}× {t['peer']}", res["opero"] / res[t["peer"]]
    if "max_extra_ms" in t and "opero" in res:
        return f"≤ {t['peer']} + {t['max_extra_ms']} ms", res["opero"] - res[t["peer"]]
    return "", None


def _met(shape: dict[str, Any], value: float | None) -> str:
    t = shape.get("target") or {}
    if value is None:
        return ""
    if "max_ratio" in t:
        return f"{value:.2f}× {'✓' if value <= t['max_ratio'] else '✗ missed'}"
    return f"+{value:.0f} ms {'✓' if value <= t['max_extra_ms'] else '✗ missed'}"


def rows(doc: dict[str, Any]) -> list[str]:
    """Markdown rows: shape, opero, every peer measured in the same run, target and result."""
    out = [
        "| shape | opero | peers, same run | target | opero vs target |",
        "|---|---:|---|---|---|",
    ]
    for name, shape in doc["shapes"].items():
        res = shape["results"]
        if name in ("scale", "rate_limit"):
            continue
        if name == "import":
            extra = res["opero"] - res["asyncio"]
            loaded = ", ".join(shape.get("heavy_modules_loaded") or []) or "none of tenacity, pandas, IPython"
            peers = f"`import asyncio` {_fmt(res['asyncio'])} ms (heavy modules opero loaded: {loaded})"
            target, _ = _ratio(shape)
            out.append(
                "| `import opero`, tornado installed (ms over a bare interpreter) "
                f"| **{_fmt(res['opero'])}** | {peers} | {target} | {_met(shape, extra)} |"
            )
            continue
        ideal = shape.get("ideal")
        unit = shape["unit"] + (f", ideal {ideal:g} s" if ideal else "")
        if "opero" not in res:  # several opero variants (pandas): each named, peers after
            ours = " · ".join(f"{k[6:]} **{_fmt(v)}**" for k, v in res.items() if k.startswith("opero"))
            others = " · ".join(f"{k} {_fmt(v)}" for k, v in res.items() if not k.startswith("opero"))
            out.append(f"| {shape['title']} ({unit}) | {ours} | {others} | | |")
            continue
        peers = " · ".join(
            f"{k} {_fmt(v)}" for k, v in sorted(res.items(), key=lambda kv: kv[1]) if k != "opero"
        )
        target, value = _ratio(shape)
        out.append(
            f"| {shape['title']} ({unit}) | **{_fmt(res['opero'])}** | {peers} | {target} "
            f"| {_met(shape, value)} |"
        )
    rl = doc["shapes"].get("rate_limit")
    if rl:
        ours, others = [], []
        for k, v in rl["results"].items():
            if isinstance(v, dict):
                text = (
                    f"{k.split(', ', 1)[1]} {v['elapsed_s']:.2f} s (min spacing {v['min_spacing_ms']:.1f} ms)"
                )
            else:
                text = f"{k.split(', ', 1)[1]}: {v}"
            (ours if k.startswith("opero") else others).append(
                text if k.startswith("opero") else f"{k.split(',', 1)[0]} {text}"
            )
        out.append(
            f"| {rl['title']} (s, ideal {rl['ideal']:.2f}) | {' · '.join(ours)} | {' · '.join(others)} | | |"
        )
    sc = doc["shapes"].get("scale")
    if sc:
        for mode, points in sc["results"].items():
            curve = " → ".join(
                f"{p['n']:,}: {p['us_per_item']:.3g} µs, +{p['growth_mb']:.0f} MB" for p in points
            )
            ideal = " (ideal 500 µs: 1 ms items on 2 processes)" if mode == "process" else ""
            out.append(
                f"| cost at scale, {mode} mode, imap (µs/item{ideal}, peak RSS growth) | {curve} | | flat | |"
            )
    return out


def before_after(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """opero's figure and its target ratio in two runs (each run: every peer beside opero)."""
    out = [
        "| shape | target | before: opero | before: vs target | after: opero | after: vs target |",
        "|---|---|---:|---|---:|---|",
    ]
    for name, shape in after["shapes"].items():
        old = before["shapes"].get(name)
        if old is None or name in ("scale", "rate_limit") or "opero" not in shape["results"]:
            continue
        target, value = _ratio(shape)
        _, old_value = _ratio(old)
        if name == "import":
            value = shape["results"]["opero"] - shape["results"]["asyncio"]
            old_value = old["results"]["opero"] - old["results"]["asyncio"]
        out.append(
            f"| {shape['title']} | {target} | {_fmt(old['results']['opero'])} {old['unit']} | "
            f"{_met(old, old_value)} | {_fmt(shape['results']['opero'])} {shape['unit']} "
            f"| {_met(shape, value)} |"
        )
    return out


def caption(doc: dict[str, Any]) -> str:
    """When and on what the figures were measured."""
    meta, m = doc["meta"], doc["meta"]["machine"]
    return (
        f"Measured {meta['date'][:16].replace('T', ' ')} UTC in one run of `make bench` "
        f"({meta['seconds']:.0f} s), opero {meta['opero']['commit']}, on {m.get('cpus')} cores "
        f"({m.get('cpu', '?')}), {m.get('memory_gb', '?')} GB, {m.get('os')}, CPython {m.get('python')}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in m.get('load_average_at_start', []))}."
    )


PEERS = (
    "tenacity, stamina and pyresilience (retries); cachetools, `functools.lru_cache`, diskcache and "
    "`joblib.Memory` (caches); `concurrent.futures` (ThreadPoolExecutor, ProcessPoolExecutor), "
    "`multiprocessing` (`Pool`, `pool.ThreadPool`), joblib (loky, threading) and mpire (maps); "
    "asyncio with a Semaphore and aiometer (async maps); aiolimiter and pyrate-limiter (rate "
    "limits); pandas' own `Series.map` and `DataFrame.apply`"
)


def readme_section(doc: dict[str, Any], link: bool = True) -> str:
    """The README's benchmark table with its caption (``link``: to the performance page)."""
    return "\n".join(
        [
            "<!-- bench:start (written by benchmarks/table.py --readme from a make bench run) -->",
            f"Every peer below was measured in the same run as opero: {PEERS}.",
            "",
            caption(doc)
            + " Lower is better. Per-call figures are CPU time of the benchmark process; map figures are"
            " wall time. *Ideal* is the work itself with perfect scheduling: 200 × 5 ms on 2 processes"
            " is 0.50 s; 500 items of 20 ms at most 32 at a time is 16 rounds (⌈500/32⌉), 0.32 s."
            + (
                " Charts, method and the cost at scale: [docs/performance.md](docs/performance.md)."
                if link
                else ""
            ),
            "",
            *rows(doc),
            "<!-- bench:end -->",
        ]
    )


def update_readme(path: Path, doc: dict[str, Any], before: dict[str, Any] | None = None) -> None:
    """Replace the table between the marks of the README (or the performance page).

    With ``before``, a ``compare:start``/``compare:end`` pair is filled with the
    before/after table too.
    """
    text = path.read_text()
    start = text.index("<!-- bench:start")
    end = text.index("<!-- bench:end -->") + len("<!-- bench:end -->")
    text = text[:start] + readme_section(doc, link=path.name == "README.md") + text[end:]
    if before is not None and "<!-- compare:start" in text:
        start = text.index("<!-- compare:start")
        end = text.index("<!-- compare:end -->") + len("<!-- compare:end -->")
        m = before["meta"]
        body = "\n".join(
            [
                "<!-- compare:start (written by benchmarks/table.py --readme) -->",
                f"Before = {m['label'].removeprefix('before: ')} "
                f"({m['date'][:16].replace('T', ' ')} UTC, load average "
                f"{', '.join(f'{x:.1f}' for x in m['machine'].get('load_average_at_start', []))}); "
                "after = the latest run, below. Each run measured opero beside every peer; the two"
                " runs saw different loads, so compare the ratios to the target, not the absolute figures.",
                "",
                *before_after(before, doc),
                "<!-- compare:end -->",
            ]
        )
        text = text[:start] + body + text[end:]
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1] == "--readme":  # --readme RESULTS FILE [BEFORE]
        old = json.loads(Path(sys.argv[4]).read_text()) if len(sys.argv) > 4 else None
        update_readme(Path(sys.argv[3]), json.loads(Path(sys.argv[2]).read_text()), old)
        sys.exit()
    doc = json.loads(Path(sys.argv[1]).read_text())
    print(caption(doc) + "\n")
    print("\n".join(rows(doc)))
    if len(sys.argv) > 2:
        print()
        print("\n".join(before_after(json.loads(Path(sys.argv[2]).read_text()), doc)))
