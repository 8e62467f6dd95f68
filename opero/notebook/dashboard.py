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

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._progress import Failure, FailureLog, MapProgress, failure_logs, format_seconds, maps
from .._telemetry import FunctionStats, all_stats, logger
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

COLUMNS: tuple[tuple[str, str], ...] = (
    ("function", "function"),
    ("calls", "calls"),
    ("successes", "ok"),
    ("failures", "failed"),
    ("retries", "retries"),
    ("throughput", "calls/s"),
    ("in_flight", "in flight"),
    ("rate_waits", "throttled"),
    ("cache_hit_rate", "cache hits"),
    ("fallbacks", "fallbacks"),
    ("latency_p50", "p50"),
    ("latency_p95", "p95"),
)
#: The charts sit right after the live rate (narrow outputs scroll the rest sideways).
CHARTS: tuple[tuple[str, str], ...] = (
    ("chart_calls", "calls/s, 30 s"),
    ("chart_failures", "failures/s"),
    ("chart_limit", "limit use %"),
)
_CHARTS_AFTER = "throughput"


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
    """A function's sampled counters, oldest first: (time, done, failures, attempts)."""

    stats_id: int
    samples: deque[tuple[float, int, int, int]]

    def rates(self, key: int) -> list[float]:
        s = list(self.samples)
        return [
            max(0.0, (b[key] - a[key]) / (b[0] - a[0])) if b[0] > a[0] else 0.0
            for a, b in itertools.pairwise(s)
        ]

    def recent_rate(self, key: int, now: float) -> float | None:
        s = self.samples
        if not s:
            return None
        last = s[-1]
        base = s[0]
        for sample in s:
            if now - sample[0] <= RATE_WINDOW:
                base = sample
                break
        if last[0] <= base[0]:
            return 0.0
        return (last[key] - base[key]) / max(last[0] - base[0], SAMPLE)


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
        with self.lock:
            for s in all_stats():
                row = (now, s.successes + s.failures, s.failures, s.attempts)
                h = self.history.get(s.name)
                if h is None or h.stats_id != id(s):
                    h = self.history[s.name] = _History(id(s), deque(maxlen=HISTORY + 1))
                if (h.samples and h.samples[-1][1:] != row[1:]) or (not h.samples and row[1]):
                    changed = True
                h.samples.append(row)
            # One more version after the work stopped, so the charts drop to zero once.
            if changed or self._active:
                self.version += 1
            self._active = changed
            self._last_sample = now

    def rates(self, s: FunctionStats) -> tuple[float | None, list[float], list[float], list[float]]:
        """(calls/s over the last seconds, calls/s history, failures/s history, limit use % history)."""
        with self.lock:
            h = self.history.get(s.name)
            if h is None or h.stats_id != id(s):
                return None, [], [], []
            recent = h.recent_rate(1, time.monotonic())
            calls = h.rates(1)
            fails = h.rates(2)
            attempts = h.rates(3)
        budget = s.budget
        limit = [min(100.0, 100.0 * a / budget) for a in attempts] if budget else []
        return recent, calls, fails, limit

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
        if not row["rate_waits"]:
            return "0"
        return f"{row['rate_waits']:,} ({format_seconds(row.get('rate_wait_wall', 0.0))})"
    if key in ("latency_p50", "latency_p95"):
        return "–" if value is None else f"{1000 * value:,.1f} ms"
    if key == "function":
        return str(value)
    if key.startswith("chart_"):
        return ""
    return _fmt_number(value)


def render_table_html(rows: list[dict[str, Any]], charts: bool = True) -> str:
    """The function table as HTML (one ``<tr class="opero-row">`` per function)."""
    columns: tuple[tuple[str, str], ...] = ()
    for column in COLUMNS:
        columns += (column,)
        if charts and column[0] == _CHARTS_AFTER:
            columns += CHARTS
    head = "".join(f"<th>{esc(label)}</th>" for _, label in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            bad = " opero-bad" if key == "failures" and row.get("failures") else ""
            content = row.get(key, "") if key.startswith("chart_") else esc(_fmt_cell(key, row))
            cells.append(f'<td class="opero-{key.replace("_", "-")}{bad}">{content}</td>')
        body.append(f'<tr class="opero-row">{"".join(cells)}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}"><i>no opero calls yet</i></td></tr>')
    return f'<table class="opero-table"><tr>{head}</tr>{"".join(body)}</table>'


def render_table_text(rows: list[dict[str, Any]]) -> str:
    """The function table as fixed-width text (terminals, logs)."""
    table = [[label for _, label in COLUMNS]]
    table += [[_fmt_cell(key, row) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    if not rows:
        lines.append("(no opero calls yet)")
    return "\n".join(lines)


def _short_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _failure_line(r: Failure) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(r.time))
    tries = f" after {r.attempts} attempts" if r.attempts > 1 else ""
    return (
        f'<li class="opero-error"><span class="opero-muted">{when} {esc(r.call)}</span> '
        f'item <code class="opero-item">{esc(r.item)}</code>{tries}: '
        f'<span class="opero-bad opero-error-text">{esc(r.error_type)}: '
        f"{esc(r.message[:160])}</span></li>"
    )


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
        groups.append(
            f'<li class="opero-error-group" data-function="{esc(log.name)}"><b>{name}</b>: '
            f"{log.total:,} failed ({counts}) · all of them: <code>{name}.failures()</code>"
            f"<ul>{''.join(_failure_line(r) for r in records[::-1])}</ul></li>"
        )
    if not groups:
        return '<div class="opero-errors"></div>'
    return f'<div class="opero-errors"><b>Failed items</b><ul>{"".join(groups)}</ul></div>'


def render_errors_text(logs: list[FailureLog], since: float = 0.0) -> str:
    """The failure panel as text."""
    out = []
    for log, records in _shown(logs, since, MAX_ERRORS):
        counts = ", ".join(f"{t} ×{n:,}" for t, n in log.counts())
        out.append(f"  {_short_name(log.name)}: {log.total:,} failed ({counts}); see .failures()")
        out.extend(f"    item {r.item}: {r.error_type}: {r.message[:120]}" for r in records[-3:])
    return ("failed items:\n" + "\n".join(out)) if out else ""


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
        # Plain attribute reads, no locks and no sorting: this runs 10 times a second.
        return (
            hub.version,
            tuple(
                (s.name, s.calls, s.successes, s.failures, s.retries, s.cache_hits, s.rate_waits, s.in_flight)
                for s in self._selected()
            ),
            tuple((m.map_id, m.version) for m in self.maps()),
            tuple((log.name, log.version) for log in failure_logs()),
        )

    def rows(self) -> list[dict[str, Any]]:
        """One ``FunctionStats.as_dict()`` per shown function, with live rates and charts."""
        running: dict[str, int] = {}
        for m in self.maps():
            if not m.finished:
                running[m.name] = running.get(m.name, 0) + m.in_flight
        out = []
        for s in self._selected():
            row = s.as_dict()
            # Fast-path map items and process workers do not pass through begin()/end():
            # the map's own count of items handed out and not finished is the real figure.
            row["in_flight"] = max(row["in_flight"], running.get(s.name, 0))
            recent, calls, fails, limit = hub.rates(s)
            row["throughput"] = recent
            row["chart_calls"] = sparkline(calls, "opero-s-calls")
            row["chart_failures"] = sparkline(fails, "opero-s-fail")
            row["chart_limit"] = (
                sparkline(limit, "opero-s-limit", top=100.0)
                if s.budget
                else '<span class="opero-muted">–</span>'
            )
            out.append(row)
        return out

    # -- rendering ---------------------------------------------------------------------------

    def text(self) -> str:
        """The dashboard as plain text."""
        parts = [self.title, render_table_text(self.rows())]
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
            if row["throughput"]:
                bits.append(f"{row['throughput']:,.1f}/s")
            parts.append(f"<b>{esc(name)}</b> " + ", ".join(bits))
        elapsed = format_seconds(time.time() - self.created)
        return (
            f'<div class="opero-line opero-status"><span class="opero-muted">opero · {elapsed}</span> · '
            + (" · ".join(parts) or "starting")
            + "</div>"
        )

    def _body_html(self, with_maps: bool) -> str:
        rows = self.rows()
        since = self.created if self.scope is not None else 0.0
        errors = render_errors_html(self._logs(), since)
        maps_html = ""
        if with_maps:
            maps_html = "".join(bar_html(m) for m in self.maps() if not m.finished)
        finished = self.finished_maps()
        # Finished maps fold into one line each, under the running ones.
        folded = "".join(
            f'<div class="opero-line opero-muted opero-finished">{esc(m.summary())}</div>' for m in finished
        )
        if self.compact:
            return self._status_line(rows) + maps_html + errors
        head = f"<b>{esc(self.title)}</b>"
        return head + render_table_html(rows) + maps_html + folded + errors

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
            self._widget = w.VBox([self._body, self._maps_box, self._tail])
            self._widget.add_class("opero-dashboard")
            self.refresh(force=True)
        return self._widget

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
        since = self.created if self.scope is not None else 0.0
        if self.compact:
            top = self._status_line(rows)
        else:
            top = f"<b>{esc(self.title)}</b>" + render_table_html(rows)
        body = f'{STYLE}<div class="opero-d">{top}</div>'
        if body != self._body.value:
            self._body.value = body
        self._update_bars([m for m in self.maps() if not m.finished])
        finished = [] if self.compact else self.finished_maps()
        folded = "".join(
            f'<div class="opero-line opero-muted opero-finished">{esc(m.summary())}</div>' for m in finished
        )
        tail = f'{STYLE}<div class="opero-d">{folded}{render_errors_html(self._logs(), since)}</div>'
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


def show(scope: dict[str, tuple[int, int]] | None = None, title: str = "opero") -> Dashboard:
    """Display a live dashboard of every opero function (text snapshot outside a kernel).

    Returns:
        The dashboard; call ``.close()`` to stop it.
    """
    dashboard = Dashboard(scope=scope, title=title)
    if widgets_available():
        dashboard.display()
        dashboard.attach()
    else:
        print(dashboard.text())
    return dashboard
