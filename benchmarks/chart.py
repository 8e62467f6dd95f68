"""One PNG chart per benchmark shape, opero beside each peer, from a ``run.py`` JSON file.

Usage: ``python benchmarks/chart.py RESULTS.json OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERO = "#3f51b5"
PEER = "#b0b0b0"
IDEAL = "#2e7d32"
TARGET = "#c62828"


def _footer(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    m = meta["machine"]
    return (
        f"{meta['date'][:16].replace('T', ' ')} UTC · {m.get('cpus')} cores {m.get('cpu', '')} · "
        f"{m.get('memory_gb', '?')} GB · CPython {m.get('python')} · opero {meta['opero'].get('commit', '')}"
        + (" · quick run" if meta.get("quick") else "")
    )


def _bars(ax: Any, shape: dict[str, Any], values: dict[str, float]) -> None:
    names = sorted(values, key=lambda k: values[k], reverse=True)
    data = [values[k] for k in names]
    colors = [OPERO if k.startswith("opero") else PEER for k in names]
    bars = ax.barh(names, data, color=colors)
    for bar, v in zip(bars, data, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.3g}", va="center", fontsize=8)
    ideal = shape.get("ideal")
    if ideal:
        ax.axvline(ideal, color=IDEAL, linestyle="--", linewidth=1, label=f"ideal {ideal:g} {shape['unit']}")
    t = shape.get("target") or {}
    if "max_ratio" in t and t.get("peer") in values:
        limit = values[t["peer"]] * t["max_ratio"]
        ax.axvline(
            limit, color=TARGET, linestyle=":", linewidth=1, label=f"target: ≤ {t['max_ratio']}× {t['peer']}"
        )
    if "max_extra_ms" in t and t.get("peer") in values:
        limit = values[t["peer"]] + t["max_extra_ms"]
        ax.axvline(
            limit,
            color=TARGET,
            linestyle=":",
            linewidth=1,
            label=f"target: ≤ {t['peer']} + {t['max_extra_ms']} ms",
        )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    positive = [v for v in data if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 50
    if log:  # peers orders of magnitude apart: a log axis keeps opero's bar visible
        ax.set_xscale("log")
    ax.set_xlabel(f"{shape['unit']} (lower is better{', log scale' if log else ''})")
    ax.margins(x=0.15)


def _scale(fig: Any, shape: dict[str, Any]) -> None:
    left, right = fig.subplots(1, 2)
    for mode, points in shape["results"].items():
        ns = [p["n"] for p in points]
        for ax, key in ((left, "us_per_item"), (right, "growth_mb")):
            ax.plot(
                ns,
                [p[key] for p in points],
                marker="o",
                label=f"{mode} mode",
                color=OPERO if mode == "thread" else IDEAL,
            )
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("items streamed through imap")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("µs per item (flat = linear cost)")
    right.set_ylabel("peak RSS growth during the map, MB")
    top = max((p["growth_mb"] for points in shape["results"].values() for p in points), default=0)
    right.set_ylim(0, max(10.0, top * 1.3))  # MB: a flat line near 0 is bounded memory


def draw(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``<shape>.png`` for every shape of ``doc`` into ``out_dir``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, shape in doc["shapes"].items():
        res = shape["results"]
        if name == "scale":
            fig = plt.figure(figsize=(10, 4))
            _scale(fig, shape)
        else:
            if name == "rate_limit":
                values = {k: v["elapsed_s"] for k, v in res.items() if isinstance(v, dict)}
            else:
                values = {k: v for k, v in res.items() if isinstance(v, int | float)}
            fig = plt.figure(figsize=(8, 0.45 * len(values) + 1.6))
            _bars(fig.add_subplot(), shape, values)
        fig.suptitle(shape["title"], fontsize=11)
        fig.text(0.01, 0.01, _footer(doc), fontsize=7, color="#555")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
        print(p)
