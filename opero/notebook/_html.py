"""HTML pieces shared by the dashboard, the map bars and the cell status line.

Plain HTML and inline SVG only: the same string renders in JupyterLab, Notebook 7, Voila,
nbviewer and GitHub, live inside an ``ipywidgets.HTML`` or frozen as a ``text/html``
snapshot. Colours come from JupyterLab's CSS variables (so dark themes work), with light
fallbacks where the variables do not exist (nbviewer, GitHub).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._progress import MapProgress

__all__ = ["STYLE", "bar_html", "esc", "sparkline"]

esc = html.escape

STYLE = (
    "<style>"
    ".opero-d{font-family:var(--jp-ui-font-family,sans-serif);font-size:var(--jp-ui-font-size1,12px);"
    "color:var(--jp-ui-font-color1,#212121);line-height:1.5;max-width:100%;overflow-x:auto}"
    ".opero-d b{color:var(--jp-ui-font-color0,#000)}"
    ".opero-table{border-collapse:collapse;white-space:nowrap;"
    "font-family:var(--jp-code-font-family,monospace);font-size:var(--jp-code-font-size,12px)}"
    ".opero-table th,.opero-table td{padding:1px 8px;text-align:right;white-space:nowrap;"
    "border-bottom:1px solid var(--jp-border-color2,#e0e0e0);color:var(--jp-ui-font-color1,#212121);"
    "background:transparent}"
    ".opero-table th{color:var(--jp-ui-font-color2,#616161);font-weight:600}"
    ".opero-table th:first-child,.opero-table td:first-child{text-align:left}"
    ".opero-bad{color:var(--jp-error-color1,#c62828)!important}"
    ".opero-muted{color:var(--jp-ui-font-color2,#757575)}"
    ".opero-line{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}"
    ".opero-bar{display:inline-block;position:relative;width:180px;height:10px;vertical-align:middle;"
    "background:var(--jp-layout-color3,#e0e0e0);border-radius:2px;overflow:hidden;margin:0 6px}"
    ".opero-bar>span{position:absolute;top:0;bottom:0}"
    ".opero-bar-ok{background:var(--jp-success-color1,#388e3c)}"
    ".opero-bar-fail{background:var(--jp-error-color1,#d32f2f)}"
    ".opero-bar-cancel{background:var(--jp-warn-color1,#f57c00)}"
    ".opero-state-interrupted,.opero-state-stopped{color:var(--jp-warn-color1,#e65100)}"
    ".opero-spark polyline{fill:none;stroke-width:1.5}"
    ".opero-spark .opero-s-calls{stroke:var(--jp-brand-color1,#1976d2)}"
    ".opero-spark .opero-s-fail{stroke:var(--jp-error-color1,#d32f2f)}"
    ".opero-spark .opero-s-limit{stroke:var(--jp-warn-color1,#f57c00)}"
    ".opero-spark .opero-s-tokens{stroke:var(--jp-accent-color1,#7b1fa2)}"
    ".opero-chart-line{line-height:0;margin:1px 0}"
    ".opero-chart-line .opero-slots{line-height:1.2}"
    ".opero-slots{font-size:11px;color:var(--jp-ui-font-color2,#616161)}"
    ".opero-spark line{stroke:var(--jp-border-color2,#e0e0e0);stroke-width:1}"
    ".opero-spark line.opero-s-top{stroke-dasharray:2 2}"
    ".opero-spark text{font-size:7px;fill:var(--jp-ui-font-color2,#757575);font-family:sans-serif}"
    ".opero-spark .opero-s-hover rect{fill:transparent}"
    ".opero-table th{white-space:normal;max-width:76px;vertical-align:bottom;line-height:1.15}"
    ".opero-table td.opero-function{max-width:220px;overflow:hidden;text-overflow:ellipsis}"
    ".opero-hint{color:var(--jp-warn-color1,#e65100)}"
    ".opero-errors ul{margin:2px 0;padding-left:18px}"
    ".opero-errors code{font-family:var(--jp-code-font-family,monospace);"
    "background:var(--jp-layout-color2,#eee);color:var(--jp-ui-font-color1,#212121);padding:0 3px}"
    "</style>"
)


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}" if value >= 1 else f"{value:.2g}"


def sparkline(
    values: Sequence[float],
    css: str,
    width: int = 64,
    height: int = 22,
    top: float | None = None,
    unit: str = "/s",
    step: float = 0.5,
    what: str = "calls",
) -> str:
    """A small inline SVG line chart of ``values`` (oldest first, one every ``step`` seconds).

    It carries its scale: the top of the chart (``top``, else the values' max) written in its
    corner with ``unit``; hovering shows each sample's value (an SVG ``<title>`` per sample)
    and the whole chart's (``<title>`` of the chart).
    """
    peak = top if top is not None else max(values, default=0.0)
    peak = peak if peak > 0 else 1.0
    low, high = height - 1, 8  # the top 8 px hold the scale label
    points, dx = _points(values, width, low, low - high, peak)
    last = values[-1] if values else 0.0
    hovers = "".join(
        f'<rect x="{max(0.0, i * dx - dx / 2):.1f}" y="0" width="{dx:.1f}" height="{height}">'
        f"<title>{(i - len(values) + 1) * step:.1f} s: {_num(v)}{esc(unit)}</title></rect>"
        for i, v in enumerate(values)
    )
    label = f"{_num(peak)}{unit}"
    summary = f"{what}: now {_num(last)}{unit}, scale 0–{label}"
    return (
        f'<svg class="opero-spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'data-last="{last:.3g}" data-top="{peak:.3g}"><title>{esc(summary)}</title>'
        f'<line x1="0" y1="{low + 0.5}" x2="{width}" y2="{low + 0.5}"/>'
        f'<line class="opero-s-top" x1="0" y1="{high}" x2="{width}" y2="{high}"/>'
        f'<text x="{width - 1}" y="7" text-anchor="end">{esc(label)}</text>'
        f'<polyline class="{css}" points="{points}"/><g class="opero-s-hover">{hovers}</g></svg>'
    )


def _points(values: Sequence[float], width: int, low: int, span: int, peak: float) -> tuple[str, float]:
    """The polyline's points (a flat line below two samples) and the step between them."""
    if len(values) < 2:
        return f"0,{low} {width},{low}", float(width)
    dx = width / (len(values) - 1)
    points = " ".join(
        f"{i * dx:.1f},{low - span * min(max(v, 0.0), peak) / peak:.1f}" for i, v in enumerate(values)
    )
    return points, dx


def bar_html(p: MapProgress) -> str:
    """One map's bar: done and failed in proportion, counts, rate, ETA or final state."""
    total = p.total if p.total is not None else max(p.done, 1)
    total = max(total, 1)
    ok_pct = 100.0 * max(0, p.done - p.failed) / total
    fail_pct = 100.0 * p.failed / total
    cancel_pct = 100.0 * p.cancelled / total
    state = p.state
    pieces = (
        f'<span class="opero-bar-ok" style="left:0;width:{ok_pct:.2f}%"></span>'
        f'<span class="opero-bar-fail" style="left:{ok_pct:.2f}%;width:{fail_pct:.2f}%"></span>'
    )
    if cancel_pct:
        pieces += (
            f'<span class="opero-bar-cancel" style="left:{ok_pct + fail_pct:.2f}%;width:{cancel_pct:.2f}%;'
            'opacity:.35"></span>'
        )
    text = esc(p.summary().split(": ", 1)[1])
    return (
        f'<div class="opero-line opero-map opero-state-{state}" data-map="{p.map_id}" data-state="{state}">'
        f"<b>{esc(p.label)}</b>"
        f'<span class="opero-bar" title="{p.done - p.failed:,} ok, {p.failed:,} failed">{pieces}</span>'
        f'<span class="opero-map-text">{text}</span></div>'
    )
