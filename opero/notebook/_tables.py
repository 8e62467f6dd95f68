"""The dashboard's tables as HTML and text: the function table, the failure panel, the hints."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from .._failures import Failure, FailureLog
from .._progress import MapProgress, format_seconds
from .._telemetry import FunctionStats, lookup
from ._html import esc, sparkline
from ._hub import SAMPLE

#: One function's row: its ``fn.stats.as_dict()`` plus the chart cells the dashboard adds.
Row = dict[str, object]

__all__ = [
    "CHARTS",
    "COLUMNS",
    "MORE",
    "NAME_WIDTH",
    "Row",
    "pace_line",
    "render_errors_html",
    "render_errors_text",
    "render_table_html",
    "render_table_text",
    "status_line",
    "worker_hint",
]

#: Latest failures listed per function in the panel (text: ``MAX_ERRORS``).
MAX_ERRORS = 8
LATEST_PER_FUNCTION = 4

#: The table's columns, named as in ``fn.stats`` (underscores read as spaces; hovering a
#: header shows the key). The default set fits a 1,000 px output; ``MORE`` sits behind the
#: "all columns" toggle (and in ``%opero stats``).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("function", "function"),
    ("calls", "calls"),
    ("failures", "failures"),
    ("retries", "retries"),
    ("in_flight", "in flight"),
    ("recent_throughput", "recent throughput"),
    ("rate_waits", "rate waits"),
    ("latency_p50", "latency p50"),
)
MORE: tuple[tuple[str, str], ...] = (
    ("successes", "successes"),
    ("attempts", "attempts"),
    ("throughput", "throughput"),
    ("cache_hit_rate", "cache hit rate"),
    ("fallbacks", "fallbacks"),
    ("timeouts", "timeouts"),
    ("cancelled", "cancelled"),
    ("rate_wait_seconds", "rate wait seconds"),
    ("latency_p95", "latency p95"),
    ("tokens_used", "tokens used"),
    ("token_limit", "token limit"),
    ("concurrency_in_flight", "concurrency in flight"),
)
#: The charts close the row: each carries its scale and hover values.
CHARTS: tuple[tuple[str, str], ...] = (
    ("chart_calls", "calls/s, 30 s"),
    ("chart_failures", "failures/s"),
    ("chart_limit", "limit use"),
)
#: What a header's tooltip says beyond the key
_HELP = {
    "recent_throughput": "calls finished per second over the last 5 s (0 when idle)",
    "throughput": "calls per second over the function's active lifetime",
    "rate_waits": "attempts the rate limit held back (wall-clock seconds of waiting, now included)",
    "latency_p50": "median time in the function (the rate-limit wait is not included)",
    "in_flight": "calls under way now (never more than the map's workers)",
    "chart_limit": (
        "attempts per second as % of the rate limit (the current one when adaptive); "
        "with token_limit, tokens per second as % of it; with max_concurrency, slots in use"
    ),
    "tokens_used": "units spent so far (tokens= estimates corrected by opero.charge), of token_budget",
    "token_limit": "the token budget's rate (token_limit), in units per second",
    "concurrency_in_flight": "attempts holding a max_concurrency slot now, of max_concurrency",
}


def _fmt_number(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _number(value: object) -> float | None:
    """A row's number (an int stays an int), or None for a missing or non-numeric value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _fmt_cell(key: str, row: Row) -> str:
    value = row.get(key)
    number = _number(value)
    if key == "cache_hit_rate":
        return "–" if number is None else f"{100 * number:.0f}% ({row['cache_hits']:,})"
    if key == "rate_waits":
        if not row["rate_waits"] and not row.get("rate_wait_wall"):
            return "0"
        return f"{row['rate_waits']:,} ({format_seconds(_number(row.get('rate_wait_wall')) or 0.0)})"
    if key == "rate_wait_seconds":
        return format_seconds(number or 0.0)
    if key in ("latency_p50", "latency_p95", "latency_mean"):
        return "–" if number is None else f"{1000 * number:,.1f} ms"
    if key in ("throughput", "recent_throughput"):
        return "–" if value is None else f"{value:,.1f}/s"
    if key == "tokens_used":
        if value is None:
            return "–"
        budget = row.get("token_budget")
        return f"{value:,.0f}" + (f" of {budget:,.0f}" if budget else "")
    if key == "token_limit":
        return "–" if number is None else _fmt_rate(number)
    if key == "concurrency_in_flight":
        return "–" if value is None else f"{value:,}/{row.get('max_concurrency', 0):,}"
    if key == "function":
        return short_name(str(value))
    if key.startswith("chart_"):
        return ""
    return _fmt_number(value)


def _columns(charts: bool, more: bool) -> tuple[tuple[str, str], ...]:
    return COLUMNS + (MORE if more else ()) + (CHARTS if charts else ())


def render_table_html(rows: list[Row], charts: bool = True, more: bool = False) -> str:
    """The function table as HTML (one ``<tr class="opero-row">`` per function).

    The default columns fit a 1,000 px output; ``more`` adds the rest of ``fn.stats``.
    """
    columns = _columns(charts, more)
    head = "".join(
        f'<th class="opero-h-{key.replace("_", "-")}" title="{esc(_header_title(key))}">{esc(label)}</th>'
        for key, label in columns
    )
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            bad = " opero-bad" if key == "failures" and row.get("failures") else ""
            content = row.get(key, "") if key.startswith("chart_") else esc(_fmt_cell(key, row))
            title = f' title="{esc(str(row[key]))}"' if key == "function" else ""
            cells.append(f'<td class="opero-{key.replace("_", "-")}{bad}"{title}>{content}</td>')
        body.append(f'<tr class="opero-row">{"".join(cells)}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}"><i>no opero calls yet</i></td></tr>')
    return f'<table class="opero-table"><tr>{head}</tr>{"".join(body)}</table>'


def _header_title(key: str) -> str:
    if key.startswith("chart_"):
        return _HELP.get(key, "")
    help_text = _HELP.get(key)
    return f'fn.stats["{key}"]' + (f": {help_text}" if help_text else "")


def render_table_text(rows: list[Row], more: bool = False) -> str:
    """The function table as fixed-width text (terminals, logs)."""
    columns = _columns(False, more)
    table = [[label for _, label in columns]]
    table += [[_fmt_cell(key, row) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    if not rows:
        lines.append("(no opero calls yet)")
    return "\n".join(lines)


#: Longest function name shown in full; longer ones are cut at the end (hover shows all).
NAME_WIDTH = 32


def short_name(name: str) -> str:
    """A function's display name: ``module.qualname`` without its module, cut from the end.

    Only a dotted Python name is split at its dots; a cell's name (``%%opero records =
    [json.load(urllib...``) is kept from its start.
    """
    parts = name.split(".")
    if len(parts) > 1 and all(p.isidentifier() or p == "<locals>" for p in parts):
        name = parts[-1]
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


def _failure_line(r: Failure) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(r.time))
    tries = f" after {r.attempts} attempts" if r.attempts > 1 else ""
    shown = "" if r.row or r.position is None else f' <code class="opero-item">{esc(r.item)}</code>'
    return (
        f'<li class="opero-error"><span class="opero-muted">{when} {esc(r.call)}</span> '
        f'<span class="opero-where">{esc(r.where)}</span>{shown}{tries}: '
        f'<span class="opero-bad opero-error-text">{esc(r.kind)}: '
        f"{esc(r.message[:160])}</span></li>"
    )


def _status_counts(log: FailureLog) -> str:
    """``HTTP 500: 274 recovered, 0 permanent`` per status seen."""
    attempts = lookup(log.name).attempt_errors
    return "; ".join(
        f"HTTP {status}: {recovered:,} recovered, {permanent:,} permanent"
        for status, recovered, permanent in log.recovered(dict(attempts))
    )


def totals(log: FailureLog) -> str:
    """``78 failed`` (as ``fn.stats["failures"]``), ``, 1 cancelled`` for items an interrupt cut."""
    cancelled = dict(log.counts()).get("Cancelled", 0)
    text = f"{log.total - cancelled:,} failed"
    return text + (f", {cancelled:,} cancelled" if cancelled else "")


def _shown(logs: list[FailureLog], since: float, latest: int) -> Iterator[tuple[FailureLog, list[Failure]]]:
    """The logs both failure panels show, each with its latest ``latest`` failures since ``since``."""
    for log in logs:
        records = [r for r in log.latest(latest) if r.time >= since]
        if log.total and not (since and not records):
            yield log, records


def render_errors_html(logs: list[FailureLog], since: float = 0.0) -> str:
    """Per function: failed items grouped by kind with counts, then its latest failures."""
    groups = []
    for log, records in _shown(logs, since, LATEST_PER_FUNCTION):
        counts = ", ".join(f"{esc(t)} ×{n:,}" for t, n in log.counts())
        name = esc(short_name(log.name))
        statuses = _status_counts(log)
        statuses = f'<div class="opero-statuses">{esc(statuses)}</div>' if statuses else ""
        groups.append(
            f'<li class="opero-error-group" data-function="{esc(log.name)}"><b>{name}</b>: '
            f"{esc(totals(log))} ({counts}) · all of them: <code>{name}.failures()</code>"
            f"{statuses}<ul>{''.join(_failure_line(r) for r in records[::-1])}</ul></li>"
        )
    if not groups:
        return '<div class="opero-errors"></div>'
    return f'<div class="opero-errors"><b>Failed items</b><ul>{"".join(groups)}</ul></div>'


def render_errors_text(logs: list[FailureLog], since: float = 0.0) -> str:
    """The failure panel as text."""
    out = []
    for log, records in _shown(logs, since, MAX_ERRORS):
        counts = ", ".join(f"{t} ×{n:,}" for t, n in log.counts())
        out.append(f"  {short_name(log.name)}: {totals(log)} ({counts}); see .failures()")
        statuses = _status_counts(log)
        if statuses:
            out.append(f"    {statuses}")
        out.extend(f"    {r.where}: {r.kind}: {r.message[:120]}" for r in records[-3:])
    return ("failed items:\n" + "\n".join(out)) if out else ""


def worker_hint(m: MapProgress, s: FunctionStats) -> str | None:
    """One line when most of a map's thread time waits on the rate limit, else None.

    ``8 workers, 85 % of their time waiting for the 50/s limit: 2 would do``
    """
    workers = m.workers
    elapsed = m.elapsed()
    if not workers or workers < 2 or not s.budget or elapsed < 2.0:
        return None
    waited = s.waits_now()[0] - m.wait_base
    share = min(1.0, waited / (workers * elapsed))
    if share < 0.5:
        return None
    enough = max(1, math.ceil(workers * (1.0 - share)))
    if enough >= workers:
        return None
    return (
        f"{workers} workers, {100 * share:.0f} % of their time waiting for the "
        f"{_fmt_rate(s.budget)} limit: {enough} would do"
    )


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 1 else f"{rate * 60:,.3g}/min"


def limit_cell(s: FunctionStats, row: Row, limit: list[float], tokens: list[float]) -> str:
    """The limit-use cell: the request rate's chart, then (stacked, so the column stays
    narrow) the tokens' use of ``token_limit`` and the slots in use of ``max_concurrency``."""
    parts = []
    if s.budget:
        parts.append(sparkline(limit, "opero-s-limit", top=100.0, unit=" %", step=SAMPLE, what="limit use"))
    token_limit = _number(row.get("token_limit"))
    if token_limit:
        what = f"token use of {_fmt_rate(token_limit)}"
        parts.append(sparkline(tokens, "opero-s-tokens", top=100.0, unit=" %", step=SAMPLE, what=what))
    slots = row.get("max_concurrency")
    if slots:
        held = int(_number(row.get("concurrency_in_flight")) or 0)
        parts.append(
            f'<span class="opero-slots" title="attempts in flight of max_concurrency={slots}">'
            f"{held:,}/{slots:,} slots</span>"
        )
    if not parts:
        return '<span class="opero-muted">–</span>'
    if len(parts) == 1:
        return parts[0]
    return "".join(f'<div class="opero-chart-line">{p}</div>' for p in parts)


def pace_line(row: Row) -> str | None:
    """``complete: tokens 98 % of 60,000/s · 3/8 slots`` for a paced function, else None."""
    bits = []
    limit = _number(row.get("token_limit"))
    if limit and row.get("token_use") is not None:
        bits.append(f"tokens {row['token_use']:.0f} % of {_fmt_rate(limit)}")
    if row.get("max_concurrency"):
        bits.append(f"{row.get('concurrency_in_flight') or 0:,}/{row['max_concurrency']:,} slots")
    if not bits:
        return None
    return f"{short_name(str(row['function']))}: " + " · ".join(bits)


def status_line(rows: list[Row], created: float) -> str:
    """The ``%%opero`` cell's view: one line per cell, not a table."""
    parts = []
    for row in rows:
        name = short_name(str(row["function"]))
        bits = [f"{row['calls']:,} calls"]
        if row["failures"]:
            bits.append(f'<span class="opero-bad">{row["failures"]:,} failed</span>')
        bits.extend(template.format(row[key]) for key, template in _STATUS_BITS if row[key])
        parts.append(f"<b>{esc(name)}</b> " + ", ".join(bits))
    elapsed = format_seconds(time.time() - created)
    return (
        f'<div class="opero-line opero-status"><span class="opero-muted">opero · {elapsed}</span> · '
        + (" · ".join(parts) or "starting")
        + "</div>"
    )


#: The status line's counts after calls and failures, when not zero.
_STATUS_BITS = (
    ("retries", "{:,} retries"),
    ("cache_hits", "{:,} cached"),
    ("in_flight", "{:,} in flight"),
    ("recent_throughput", "{:,.1f}/s"),
)
