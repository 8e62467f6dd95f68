"""A live dashboard of opero's work: a row per function with charts, a bar per map, failures.

The work is never slowed by it: the dashboard does not listen to calls at all. A timer
thread wakes 10 times a second; every ``SAMPLE`` seconds it samples each function's counters
(plain attribute reads) into a short history, from which the rates (calls/s over the last
few seconds, not a lifetime) and the charts (inline SVG sparklines of throughput, failures
and rate-limit use) are drawn. A dashboard re-renders only when its fingerprint changed.

Failed map items come from each function's failure log (``opero._progress``): every item
with its own final error, recorded where the map receives it. Running maps come from the
same module, with a stop button each.

The widget is displayed with a ``text/html`` snapshot in its mime bundle; once the work is
idle the display is replaced by that snapshot alone (and back to the live widget when work
starts again), so a saved notebook shows the last state instead of "model not found".

Without ipywidgets or outside a kernel, :func:`show` prints a text table instead.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._progress import Failure, FailureLog, MapProgress, failure_logs, format_seconds, maps
from .._telemetry import FunctionStats, all_stats, logger, lookup
from . import clicks
from ._html import STYLE, bar_html, esc, sparkline

__all__ = ["Dashboard", "hub", "show", "widgets_available"]

#: Seconds between two refreshes: at most ~10 updates a second.
INTERVAL = 0.1
#: Seconds between two samples of the counters (the charts' resolution).
SAMPLE = 0.5
#: Samples kept per function: the charts cover SAMPLE * HISTORY seconds.
HISTORY = 60
#: Rates (calls/s) are measured over this many seconds.
RATE_WINDOW = 5.0
#: Latest failures listed per function in the panel, and finished maps listed under the bars.
MAX_ERRORS = 8
LATEST_PER_FUNCTION = 4
KEEP_FINISHED_MAPS = 3
#: Global dashboards kept live; older ones freeze at their last state.
MAX_LIVE = 4
#: Seconds without any change after which a dashboard swaps to its static snapshot.
IDLE = 1.0
#: Least seconds between two renders while work runs (each render sends a few comm messages).
MIN_RENDER = 0.2
#: Work must have been going on this long before the timer renders it (like tqdm's
#: ``delay``): a burst shorter than this is rendered once, when it is over, so it is not
#: slowed at all; longer work is shown live.
QUIET = 0.2

#: Voila starts its kernels with ``SERVER_SOFTWARE=voila/<version>``.
_IN_VOILA = os.environ.get("SERVER_SOFTWARE", "").startswith("voila")

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


def widgets_available() -> bool:
    """True in a Jupyter kernel with ipywidgets installed (widgets can be shown)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()  # type: ignore[no-untyped-call]
    return shell is not None and getattr(shell, "kernel", None) is not None


@dataclass
class _History:
    """A function's sampled counters, oldest first: (time, done, failures, attempts, tokens
    used); ``tokens used`` stays 0 for a function without a token budget."""

    stats_id: int
    samples: deque[tuple[float, ...]]

    def rates(self, key: int) -> list[float]:
        s = list(self.samples)
        # at least a sample's span: a burst right after the definition is not a spike to infinity
        return [
            max(0.0, (_field(b, key) - _field(a, key)) / max(b[0] - a[0], SAMPLE))
            for a, b in itertools.pairwise(s)
        ]


def _field(sample: tuple[float, ...], key: int) -> float:
    # a sample taken without a field (older layout) counts 0 for it
    return sample[key] if key < len(sample) else 0.0


def _tokens_used(s: FunctionStats) -> float:
    """The function's (or its scope's) units spent, 0 without a token budget."""
    if s.pace is None:
        return 0.0
    try:
        return float(s.pace().get("tokens_used") or 0.0)
    except Exception:  # a store that cannot answer now: the chart shows no use
        return 0.0


class _Hub:
    """Process-wide state shared by every dashboard: the sampler, the live views, the timer."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.history: dict[str, _History] = {}
        #: bumped by every sample that saw activity; part of every dashboard's fingerprint
        self.version = 0
        self.dashboards: list[Dashboard] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sample = 0.0
        self._active = False
        self.last_change = time.monotonic()

    # -- sampling (the timer thread) -----------------------------------------------------------

    def sample(self, now: float | None = None) -> None:
        """Append one sample of every function's counters to its history."""
        now = time.monotonic() if now is None else now
        changed = False
        # the token counts are store reads (a file lock, a redis round trip): outside the lock
        readings = [(s, _tokens_used(s)) for s in all_stats()]
        with self.lock:
            for s, tokens in readings:
                row = (now, s.successes + s.failures, s.failures, s.attempts, tokens)
                h = self.history.get(s.name)
                if h is None or h.stats_id != id(s):
                    h = self.history[s.name] = _History(id(s), deque(maxlen=HISTORY + 1))
                    # The history starts at zero when the function was defined, so a burst
                    # that came and went before this first sample still shows.
                    age = time.time() - s.defined
                    if 0 <= age < SAMPLE * HISTORY:
                        h.samples.append((now - age, 0, 0, 0, 0.0))
                if (h.samples and h.samples[-1][1:] != row[1:]) or (not h.samples and row[1]):
                    changed = True
                h.samples.append(row)
            # One more version after the work stopped, so the charts drop to zero once.
            if changed or self._active:
                self.version += 1
            self._active = changed
            self._last_sample = now

    def rates(self, s: FunctionStats) -> tuple[list[float], list[float], list[float]]:
        """(calls/s history, failures/s history, limit use % history), oldest first."""
        with self.lock:
            h = self.history.get(s.name)
            if h is None or h.stats_id != id(s):
                return [], [], []
            calls = h.rates(1)
            fails = h.rates(2)
            attempts = h.rates(3)
        budget = s.budget
        limit = [min(100.0, 100.0 * a / budget) for a in attempts] if budget else []
        return calls, fails, limit

    def token_use(self, s: FunctionStats, token_limit: float) -> list[float]:
        """Tokens spent per second as % of ``token_limit`` (units per second), oldest first."""
        with self.lock:
            h = self.history.get(s.name)
            if h is None or h.stats_id != id(s) or token_limit <= 0:
                return []
            return [100.0 * t / token_limit for t in h.rates(4)]

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, dashboard: Dashboard) -> None:
        """Keep ``dashboard`` live; start the timer when it is the first."""
        with self.lock:
            self.dashboards.append(dashboard)
            global_ones = [d for d in self.dashboards if d.scope is None]
            stale = global_ones[: max(0, len(global_ones) - MAX_LIVE)]
            if self._thread is None:
                self._start()
        # outside the hub lock: a refresh takes the dashboard's lock, then the hub's
        for old in stale:
            old.detach()

    def detach(self, dashboard: Dashboard) -> None:
        """Stop updating ``dashboard``; stop the timer when no dashboard is left."""
        with self.lock:
            if dashboard in self.dashboards:
                self.dashboards.remove(dashboard)
            if not self.dashboards and self._thread is not None:
                self._stop.set()
                self._thread = None

    def _start(self) -> None:
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="opero-dashboard", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL):
            if time.monotonic() - self._last_sample >= SAMPLE:
                self.sample()
            self.refresh_all(tick=True)

    def refresh_all(self, force: bool = False, tick: bool = False) -> None:
        """Refresh every live dashboard that has something new (all of them with ``force``)."""
        for dashboard in list(self.dashboards):
            try:
                dashboard.refresh(force=force, tick=tick)
            except Exception:  # a dashboard must never take the kernel down
                logger.exception("opero dashboard: refresh failed")


hub = _Hub()


def _fmt_number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _fmt_cell(key: str, row: dict[str, Any]) -> str:
    value = row.get(key)
    if key == "cache_hit_rate":
        return "–" if value is None else f"{100 * value:.0f}% ({row['cache_hits']:,})"
    if key == "rate_waits":
        if not row["rate_waits"] and not row.get("rate_wait_wall"):
            return "0"
        return f"{row['rate_waits']:,} ({format_seconds(row.get('rate_wait_wall', 0.0))})"
    if key == "rate_wait_seconds":
        return format_seconds(value or 0.0)
    if key in ("latency_p50", "latency_p95", "latency_mean"):
        return "–" if value is None else f"{1000 * value:,.1f} ms"
    if key in ("throughput", "recent_throughput"):
        return "–" if value is None else f"{value:,.1f}/s"
    if key == "tokens_used":
        if value is None:
            return "–"
        budget = row.get("token_budget")
        return f"{value:,.0f}" + (f" of {budget:,.0f}" if budget else "")
    if key == "token_limit":
        return "–" if value is None else _fmt_rate(value)
    if key == "concurrency_in_flight":
        return "–" if value is None else f"{value:,}/{row.get('max_concurrency', 0):,}"
    if key == "function":
        return _short_name(str(value))
    if key.startswith("chart_"):
        return ""
    return _fmt_number(value)


def _columns(charts: bool, more: bool) -> tuple[tuple[str, str], ...]:
    return COLUMNS + (MORE if more else ()) + (CHARTS if charts else ())


def render_table_html(rows: list[dict[str, Any]], charts: bool = True, more: bool = False) -> str:
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


def render_table_text(rows: list[dict[str, Any]], more: bool = False) -> str:
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


def _short_name(name: str) -> str:
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


def _totals(log: FailureLog) -> str:
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
        name = esc(_short_name(log.name))
        statuses = _status_counts(log)
        statuses = f'<div class="opero-statuses">{esc(statuses)}</div>' if statuses else ""
        groups.append(
            f'<li class="opero-error-group" data-function="{esc(log.name)}"><b>{name}</b>: '
            f"{esc(_totals(log))} ({counts}) · all of them: <code>{name}.failures()</code>"
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
        out.append(f"  {_short_name(log.name)}: {_totals(log)} ({counts}); see .failures()")
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


def _limit_cell(s: FunctionStats, row: dict[str, Any], limit: list[float], tokens: list[float]) -> str:
    """The limit-use cell: the request rate's chart, then (stacked, so the column stays
    narrow) the tokens' use of ``token_limit`` and the slots in use of ``max_concurrency``."""
    parts = []
    if s.budget:
        parts.append(sparkline(limit, "opero-s-limit", top=100.0, unit=" %", step=SAMPLE, what="limit use"))
    token_limit = row.get("token_limit")
    if token_limit:
        what = f"token use of {_fmt_rate(float(token_limit))}"
        parts.append(sparkline(tokens, "opero-s-tokens", top=100.0, unit=" %", step=SAMPLE, what=what))
    slots = row.get("max_concurrency")
    if slots:
        held = int(row.get("concurrency_in_flight") or 0)
        parts.append(
            f'<span class="opero-slots" title="attempts in flight of max_concurrency={slots}">'
            f"{held:,}/{slots:,} slots</span>"
        )
    if not parts:
        return '<span class="opero-muted">–</span>'
    if len(parts) == 1:
        return parts[0]
    return "".join(f'<div class="opero-chart-line">{p}</div>' for p in parts)


def pace_line(row: dict[str, Any]) -> str | None:
    """``complete: tokens 98 % of 60,000/s · 3/8 slots`` for a paced function, else None."""
    bits = []
    limit = row.get("token_limit")
    if limit and row.get("token_use") is not None:
        bits.append(f"tokens {row['token_use']:.0f} % of {_fmt_rate(float(limit))}")
    if row.get("max_concurrency"):
        bits.append(f"{row.get('concurrency_in_flight') or 0:,}/{row['max_concurrency']:,} slots")
    if not bits:
        return None
    return f"{_short_name(str(row['function']))}: " + " · ".join(bits)


class Dashboard:
    """A view of opero's counters, maps and failures; live while attached to the hub.

    Args:
        scope: None for every function; otherwise a baseline ``{name: (id(stats), calls)}``
            taken when the dashboard was created: only functions that did work since (and
            maps started since) are shown — the ``%%opero`` cell's own work.
        title: a heading shown above the table.
        always: names of functions shown even before they are called (the cell itself).
        compact: one status line instead of the table (the ``%%opero`` cell's view).
    """

    def __init__(
        self,
        scope: dict[str, tuple[int, int]] | None = None,
        title: str = "opero",
        always: tuple[str, ...] = (),
        compact: bool = False,
    ) -> None:
        self.scope = scope
        self.title = title
        self.always = always
        self.compact = compact
        self.created = time.time()
        self._fingerprint: Any = None
        self._lock = threading.Lock()
        self._widget: Any = None
        self._body: Any = None
        self._maps_box: Any = None
        self._tail: Any = None
        self._bars: list[tuple[Any, Any, Any]] = []
        #: slot -> the map its row shows (None: a free, hidden row); a map keeps its slot
        self._bar_maps: list[MapProgress | None] = []
        self._handle: Any = None
        self._live_shown = True
        self._shown_snapshot = ""
        self._rendered = 0.0
        self._busy_since: float | None = None
        self._seen: Any = None
        self._changed = time.monotonic()
        self._more = False
        self._toggle: Any = None
        self.refreshes = 0

    @classmethod
    def for_new_work(cls, title: str, always: tuple[str, ...] = (), compact: bool = True) -> Dashboard:
        """A dashboard of the work that starts after this call (used by ``%%opero``)."""
        baseline = {s.name: (id(s), s.calls) for s in all_stats()}
        return cls(scope=baseline, title=title, always=always, compact=compact)

    # -- data ------------------------------------------------------------------------------

    def _selected(self) -> list[FunctionStats]:
        stats = all_stats()
        if self.scope is None:
            return stats
        scope = self.scope
        return [
            s for s in stats if s.name in self.always or scope.get(s.name) != (id(s), s.calls) or s.in_flight
        ]

    def maps(self) -> list[MapProgress]:
        """The maps to show: running ones and the last finished ones."""
        found = maps()
        if self.scope is not None:
            found = [m for m in found if m.started >= self.created - 0.001]
        return found

    def finished_maps(self) -> list[MapProgress]:
        """The latest finished run of each function (of the last few), oldest first.

        Finished maps fold into one line each; a function mapped over and over (batches)
        keeps one line, so a long run that ended is not pushed out by short ones.
        """
        latest: dict[str, MapProgress] = {}
        for m in self.maps():
            if m.finished:
                latest.pop(m.name, None)
                latest[m.name] = m
        return list(latest.values())[-KEEP_FINISHED_MAPS:]

    def _logs(self) -> list[FailureLog]:
        names = {s.name for s in self._selected()}
        return [log for log in failure_logs() if log.total and (self.scope is None or log.name in names)]

    def _current_fingerprint(self) -> Any:
        # Plain attribute reads, no locks and no sorting: this runs 10 times a second. The
        # throttled time and the recent rate move while a call waits and after work ends.
        return (
            hub.version,
            self._more,
            tuple(
                (
                    s.name,
                    s.calls,
                    s.successes,
                    s.failures,
                    s.retries,
                    s.cache_hits,
                    s.rate_waits,
                    s.in_flight,
                    round(s.waits_now()[1], 1),
                    round(s.recent_throughput(), 1),
                )
                for s in self._selected()
            ),
            # a running map's elapsed time moves every second, even while no item finishes
            tuple((m.map_id, m.version, 0 if m.finished else int(m.elapsed())) for m in self.maps()),
            tuple((log.name, log.version) for log in failure_logs()),
        )

    def rows(self) -> list[dict[str, Any]]:
        """One ``FunctionStats.as_dict()`` per shown function, with its charts."""
        running: dict[str, int] = {}
        workers: dict[str, int] = {}
        for m in self.maps():
            if not m.finished:
                running[m.name] = running.get(m.name, 0) + m.in_flight
                if m.workers:
                    workers[m.name] = workers.get(m.name, 0) + m.workers
        out = []
        for s in self._selected():
            row = s.as_dict()
            # Fast-path map items and process workers do not pass through begin()/end():
            # the map's own count of items handed out and not finished is the real figure,
            # and never more than the workers that run them.
            in_flight = max(row["in_flight"], running.get(s.name, 0))
            if s.name in workers:
                in_flight = min(in_flight, workers[s.name])
            row["in_flight"] = in_flight
            calls, fails, limit = hub.rates(s)
            top = max(max(calls, default=0.0), max(fails, default=0.0), 1.0)
            row["chart_calls"] = sparkline(calls, "opero-s-calls", step=SAMPLE, what="calls finished")
            # failures share the calls' scale: one failure a second is not alarming at 100/s
            row["chart_failures"] = sparkline(fails, "opero-s-fail", top=top, step=SAMPLE, what="failures")
            tokens = hub.token_use(s, float(row["token_limit"])) if row.get("token_limit") else []
            if row.get("token_limit"):
                # tokens per second over the last RATE_WINDOW seconds, as % of the limit
                recent = tokens[-int(RATE_WINDOW / SAMPLE) :]
                row["token_use"] = sum(recent) / len(recent) if recent else 0.0
            row["chart_limit"] = _limit_cell(s, row, limit, tokens)
            out.append(row)
        return out

    def hints(self) -> list[str]:
        """One line per running map whose threads mostly wait on the rate limit."""
        out = []
        for m in self.maps():
            if not m.finished:
                hint = worker_hint(m, lookup(m.name))
                if hint:
                    out.append(f"{m.label}: {hint}")
        return out

    # -- rendering ---------------------------------------------------------------------------

    def text(self) -> str:
        """The dashboard as plain text."""
        rows = self.rows()
        parts = [self.title, render_table_text(rows)]
        parts.extend(line for line in map(pace_line, rows) if line)
        parts.extend(self.hints())
        parts.extend(m.summary() for m in self.maps())
        errors = render_errors_text(self._logs(), self.created if self.scope is not None else 0.0)
        if errors:
            parts.append(errors)
        return "\n".join(parts)

    def __repr__(self) -> str:
        return self.text()

    def _status_line(self, rows: list[dict[str, Any]]) -> str:
        # The %%opero cell's view: one line, not a table.
        parts = []
        for row in rows:
            name = _short_name(str(row["function"]))
            bits = [f"{row['calls']:,} calls"]
            if row["failures"]:
                bits.append(f'<span class="opero-bad">{row["failures"]:,} failed</span>')
            if row["retries"]:
                bits.append(f"{row['retries']:,} retries")
            if row["cache_hits"]:
                bits.append(f"{row['cache_hits']:,} cached")
            if row["in_flight"]:
                bits.append(f"{row['in_flight']:,} in flight")
            if row["recent_throughput"]:
                bits.append(f"{row['recent_throughput']:,.1f}/s")
            parts.append(f"<b>{esc(name)}</b> " + ", ".join(bits))
        elapsed = format_seconds(time.time() - self.created)
        return (
            f'<div class="opero-line opero-status"><span class="opero-muted">opero · {elapsed}</span> · '
            + (" · ".join(parts) or "starting")
            + "</div>"
        )

    def _top_html(self, rows: list[dict[str, Any]], more: bool) -> str:
        """The title, the table (or the cell's status line) and the hints: live and saved alike."""
        if self.compact:
            return self._status_line(rows)
        hints = "".join(f'<div class="opero-line opero-hint">{esc(h)}</div>' for h in self.hints())
        return f"<b>{esc(self.title)}</b>" + render_table_html(rows, more=more) + hints

    def _tail_html(self) -> str:
        """Finished maps folded into one line each, then the failure panel."""
        since = self.created if self.scope is not None else 0.0
        finished = [] if self.compact else self.finished_maps()
        folded = "".join(
            f'<div class="opero-line opero-muted opero-finished">{esc(m.summary())}</div>' for m in finished
        )
        return folded + render_errors_html(self._logs(), since)

    def _body_html(self, with_maps: bool) -> str:
        rows = self.rows()
        maps_html = ""
        if with_maps:
            maps_html = "".join(bar_html(m) for m in self.maps() if not m.finished)
        extra = ""
        if not self.compact:
            # where the live view has its "all columns" toggle
            extra = (
                '<details class="opero-more"><summary>all columns</summary>'
                f"{render_table_html(rows, charts=False, more=True)}</details>"
            )
        return self._top_html(rows, more=False) + extra + maps_html + self._tail_html()

    def snapshot(self) -> str:
        """The whole dashboard as static HTML (what a saved notebook shows)."""
        return f'{STYLE}<div class="opero-d opero-dashboard">{self._body_html(True)}</div>'

    def _repr_html_(self) -> str:
        return self.snapshot()

    @property
    def widget(self) -> Any:
        """The ipywidgets VBox (built on first use)."""
        if self._widget is None:
            import ipywidgets as w

            self._body = w.HTML(value="")
            self._maps_box = w.VBox([])
            self._tail = w.HTML(value="")
            children = [self._body]
            if not self.compact:
                self._toggle = w.ToggleButton(
                    value=False, description="all columns", tooltip="show every fn.stats column"
                )
                self._toggle.layout = w.Layout(width="auto", height="22px", align_self="flex-start")
                self._toggle.add_class("opero-more-toggle")
                self._toggle.observe(self._on_toggle, names="value")
                children.append(self._toggle)
            self._widget = w.VBox([*children, self._maps_box, self._tail])
            self._widget.add_class("opero-dashboard")
            self.refresh(force=True)
        return self._widget

    def _on_toggle(self, change: dict[str, Any]) -> None:
        self._more = bool(change.get("new"))
        self.refresh(force=True)

    def refresh(self, force: bool = False, tick: bool = False) -> bool:
        """Render the current state into the widgets when it changed; True when it did."""
        if self._widget is None and not force:
            return False
        with self._lock:
            fingerprint = self._current_fingerprint()
            now = time.monotonic()
            if fingerprint == self._fingerprint and not force:
                self._busy_since = None
                if tick and self._live_shown and now - self._changed > IDLE and not self._running():
                    self._show_snapshot()
                return False
            if tick and not force:
                # Like tqdm's delay: work must have gone on for QUIET seconds before it is
                # rendered live; a shorter burst is rendered once, when it is over.
                if self._busy_since is None:
                    self._busy_since, self._seen = now, fingerprint
                    return False
                still_changing = fingerprint != self._seen
                self._seen = fingerprint
                if still_changing and now - self._busy_since < QUIET:
                    return False
                if now - self._rendered < MIN_RENDER:
                    return False
            self._rendered = now
            self._fingerprint = fingerprint
            self._changed = now
            if self._widget is None:
                return False
            if not self._live_shown and self._running():
                self._show_live()
            self._render()
            if not self._live_shown:
                # idle, the static snapshot shown: it follows the recent rates down to 0, so
                # the saved frame does not keep the last busy second's calls/s
                self._show_snapshot()
            self.refreshes += 1
            return True

    def settle(self) -> None:
        """Show the static snapshot alone when no work is running (the cell ended)."""
        with self._lock:
            if self._widget is not None and not self._running():
                self._show_snapshot()

    def _running(self) -> bool:
        return any(not m.finished for m in self.maps()) or any(s.in_flight for s in self._selected())

    def _render(self) -> None:
        rows = self.rows()
        body = f'{STYLE}<div class="opero-d">{self._top_html(rows, self._more)}</div>'
        if body != self._body.value:
            self._body.value = body
        self._update_bars([m for m in self.maps() if not m.finished])
        tail = f'{STYLE}<div class="opero-d">{self._tail_html()}</div>'
        if tail != self._tail.value:
            self._tail.value = tail

    def _update_bars(self, running: list[MapProgress]) -> None:
        import ipywidgets as w

        # Rows of widgets are reused from map to map: creating widgets costs a comm round of
        # its own (~3 ms each), updating a value is a small message. A running map keeps its
        # row until it finishes: a click arrives with only the button's identity, so a row
        # that showed another map a moment later would stop the wrong one.
        alive = {id(m) for m in running}
        slots = [m if m is not None and id(m) in alive else None for m in self._bar_maps]
        placed = {id(m) for m in slots if m is not None}
        for m in running:
            if id(m) not in placed:
                free = next((i for i, s in enumerate(slots) if s is None), None)
                if free is None:
                    slots.append(m)
                else:
                    slots[free] = m
        while slots and slots[-1] is None:
            slots.pop()
        while len(self._bars) < len(slots):
            label = w.HTML()
            button = w.Button(description="stop", tooltip="cancel the items not started yet", icon="stop")
            button.layout = w.Layout(width="auto", height="22px")
            button.add_class("opero-stop")
            slot = len(self._bars)
            button.on_click(lambda _b, slot=slot: self._stop_slot(slot))
            # taken early, in the kernel's shell channel thread: the map may hold the main one
            clicks.hook(button, functools.partial(self._stop_map, slot))
            self._bars.append((label, button, w.HBox([label, button])))
        self._bar_maps = slots
        for (label, button, row), shown in zip(self._bars, slots):
            if shown is None:  # a free row between two running maps stays hidden until reused
                row.layout.display = "none"
                continue
            row.layout.display = None
            value = f'{STYLE}<div class="opero-d">{bar_html(shown)}</div>'
            if label.value != value:
                label.value = value
            # A map blocking the kernel's main thread cannot receive the click until it is
            # over: its button is disabled and says how to stop it.
            button.disabled = shown.stop_requested or not shown.background
            button.tooltip = (
                "cancel the items not started yet"
                if shown.background
                else "this map holds the kernel: interrupt the kernel (■) to stop it"
            )
        if len(self._maps_box.children) != len(slots):
            self._maps_box.children = [row for _, _, row in self._bars[: len(slots)]]

    def _stop_map(self, slot: int) -> None:
        # only the stop event: rendering from the shell channel thread is not safe
        m = self._bar_maps[slot] if slot < len(self._bar_maps) else None
        if m is not None:
            m.stop()

    def _stop_slot(self, slot: int) -> None:
        m = self._bar_maps[slot] if slot < len(self._bar_maps) else None
        if m is not None:
            m.stop()
            hub.refresh_all()

    # -- display -----------------------------------------------------------------------------

    def display(self) -> None:
        """Show the live widget, with its static snapshot in the same mime bundle."""
        from IPython.display import display

        from .bars import display_bundle

        widget = self.widget
        self._handle = display(  # type: ignore[no-untyped-call]
            display_bundle(widget, self.snapshot(), self.text()), raw=True, display_id=True
        )
        self._live_shown = True

    def _show_snapshot(self) -> None:
        # Idle: the display holds the static snapshot only, so a notebook saved now shows it.
        # Not in Voila: nothing is saved there, and it applies no display updates after the
        # notebook ran (the live widget would be replaced for good).
        if self._handle is None or _IN_VOILA:
            return
        snapshot = self.snapshot()
        if not self._live_shown and snapshot == self._shown_snapshot:
            return
        self._handle.update({"text/html": snapshot, "text/plain": self.text()}, raw=True)
        self._shown_snapshot = snapshot
        self._live_shown = False

    def _show_live(self) -> None:
        if self._handle is None:
            return
        from .bars import display_bundle

        self._handle.update(display_bundle(self._widget, self.snapshot(), self.text()), raw=True)
        self._live_shown = True

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self) -> Dashboard:
        """Start live updates."""
        hub.attach(self)
        return self

    def detach(self) -> None:
        """Freeze at the last state: one final refresh, then the static snapshot."""
        hub.detach(self)
        hub.sample()
        self.refresh(force=True)
        self._show_snapshot()

    def close(self) -> None:
        """Stop updating and remove the widgets."""
        hub.detach(self)
        if self._widget is not None:
            self._widget.close()

    def _ipython_display_(self) -> None:
        if widgets_available():
            self.display()
        else:
            print(self.text())


def show(
    scope: dict[str, tuple[int, int]] | None = None, title: str = "opero", side: bool = False
) -> Dashboard:
    """Display a live dashboard of every opero function (text snapshot outside a kernel).

    Args:
        scope: see :class:`Dashboard`.
        title: the heading.
        side: open it in a JupyterLab side panel (the ``sidecar`` widget), so it stays in
            view while the notebook scrolls; where that is not possible (no ``sidecar``
            package, Voila) it is shown in the cell output.

    Returns:
        The dashboard; call ``.close()`` to stop it.
    """
    dashboard = Dashboard(scope=scope, title=title)
    if widgets_available():
        if not (side and _show_in_side_panel(dashboard)):
            dashboard.display()
        dashboard.attach()
    else:
        print(dashboard.text())
    return dashboard


#: The side panel of the last ``%opero dashboard --side`` (a new one replaces it).
_side_panel: Any = None


def _show_in_side_panel(dashboard: Dashboard) -> bool:
    """Display ``dashboard`` in a JupyterLab side panel; False when that is not possible."""
    global _side_panel
    if _IN_VOILA:
        return False
    try:
        from sidecar import Sidecar
    except ImportError:
        logger.info("opero: pip install sidecar to show the dashboard in a side panel")
        return False
    from IPython.display import display

    if _side_panel is not None:
        _side_panel.close()
    panel = Sidecar(title=dashboard.title, anchor="split-right")
    with panel:
        dashboard.display()
    _side_panel = panel
    note = "opero dashboard: opened in a side panel (JupyterLab)"
    display(  # type: ignore[no-untyped-call]
        {"text/html": f'<div class="opero-note opero-muted">{esc(note)}</div>', "text/plain": note}, raw=True
    )
    return True
