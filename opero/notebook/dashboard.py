"""A live dashboard of opero's work: a row per function, a bar per running map, recent errors.

The work is never slowed by it: the dashboard does not listen to successes at all. A timer
thread wakes 10 times a second, compares a cheap fingerprint of the counters (plain
attribute reads) and only when something changed renders the snapshot into the widgets.
The one event subscriber takes failures only (they are rare and already slow) and the
opmap progress callback stores four numbers; both just mark the hub dirty.

Without ipywidgets or outside a kernel, :func:`show` prints a text table instead.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._telemetry import Event, FunctionStats, all_stats, subscribe

__all__ = ["Dashboard", "ErrorEntry", "MapState", "hub", "show", "widgets_available"]

#: Seconds between two refreshes: at most ~10 updates a second.
INTERVAL = 0.1
#: Errors kept for the panel, and maps kept after they finished.
MAX_ERRORS = 8
KEEP_FINISHED_MAPS = 2
#: Global dashboards kept live; older ones freeze at their last state.
MAX_LIVE = 4
#: Work must have been going on this long before the timer renders it (like tqdm's
#: ``delay``): a burst shorter than this is rendered once, when it is over, so it is not
#: slowed at all; longer work is shown live.
QUIET = 0.2

COLUMNS: tuple[tuple[str, str], ...] = (
    ("function", "function"),
    ("calls", "calls"),
    ("successes", "ok"),
    ("failures", "failed"),
    ("retries", "retries"),
    ("fallbacks", "fallbacks"),
    ("cache_hit_rate", "cache hits"),
    ("rate_waits", "rate waits"),
    ("in_flight", "in flight"),
    ("throughput", "calls/s"),
    ("latency_p50", "p50"),
    ("latency_p95", "p95"),
)


def widgets_available() -> bool:
    """True in a Jupyter kernel with ipywidgets installed (widgets can be shown)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


@dataclass
class ErrorEntry:
    """One error in the panel.

    Attributes:
        time: when it happened (``time.time()``).
        func: the function's qualified name.
        item: ``repr`` of the opmap item, or None when unknown.
        error: ``"Type: message"``.
        final: True when a map item failed for good, False for one failed attempt.
        error_id: ``id`` of the exception, to attach an item reported later.
        count: how many times this same retried error happened (they are folded into one line).
    """

    time: float
    func: str
    item: str | None
    error: str
    final: bool
    error_id: int = 0
    count: int = 1


@dataclass
class MapState:
    """The progress of one opmap call, as reported by ``opero._progress``."""

    map_id: int
    name: str
    done: int
    total: int | None
    failed: int
    finished: bool
    started: float


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Hub:
    """Process-wide state shared by every dashboard: subscriptions, errors, maps, the timer."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.errors: deque[ErrorEntry] = deque(maxlen=MAX_ERRORS * 4)
        self.maps: OrderedDict[int, MapState] = OrderedDict()
        #: bumped whenever errors or maps change; part of every dashboard's fingerprint
        self.version = 0
        self.dashboards: list[Dashboard] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.progress_supported = False

    # -- feeding (called from the work's threads: keep it cheap) --------------------------------

    def on_event(self, event: Event) -> None:
        """Failed attempts and failed map items go to the error panel."""
        error = event.error
        text = f"{type(error).__name__}: {error}" if error is not None else event.kind
        item = None if event.item is None else _short(event.item, 60)
        with self.lock:
            if event.kind == "item_failed" and error is not None:
                # the same exception was already listed: attach the item rather than repeat it
                for entry in reversed(self.errors):
                    if entry.error_id == id(error) and entry.func == event.func:
                        entry.item = item
                        entry.final = True
                        self.version += 1
                        return
            text = _short(text, 160)
            final = event.kind != "attempt_failed"
            if not final and item is None:
                # a flaky API fails the same way many times: one line with a count, not a flood
                for entry in self.errors:
                    if (
                        not entry.final
                        and entry.item is None
                        and entry.func == event.func
                        and entry.error == text
                    ):
                        self.errors.remove(entry)
                        entry.count += 1
                        entry.time = event.time
                        self.errors.append(entry)
                        self.version += 1
                        return
            self.errors.append(
                ErrorEntry(event.time, event.func, item, text, final, id(error) if error is not None else 0)
            )
            self.version += 1

    def on_progress(
        self, map_id: int, name: str, done: int, total: int | None, failed: int, finished: bool
    ) -> None:
        """An opmap reports progress (at most ~10 times a second per map)."""
        with self.lock:
            state = self.maps.get(map_id)
            if state is None:
                self.maps[map_id] = MapState(map_id, name, done, total, failed, finished, time.time())
                self._prune_maps()
            else:
                state.done, state.total, state.failed, state.finished = done, total, failed, finished
            self.version += 1

    def _prune_maps(self) -> None:
        finished = [m for m, s in self.maps.items() if s.finished]
        for map_id in finished[: max(0, len(finished) - KEEP_FINISHED_MAPS)]:
            del self.maps[map_id]

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, dashboard: Dashboard) -> None:
        """Keep ``dashboard`` live; start listening and the timer when it is the first."""
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
        """Stop updating ``dashboard``; stop everything when no dashboard is left."""
        with self.lock:
            if dashboard in self.dashboards:
                self.dashboards.remove(dashboard)
            if not self.dashboards and self._thread is not None:
                self._stop_all()

    def _start(self) -> None:
        # Not "failure": a listener for it turns off the maps' per-chunk fast path (every call
        # would build an Event). Failed attempts and failed map items carry what the panel needs.
        self._unsubscribe.append(subscribe(self.on_event, kinds=("attempt_failed", "item_failed")))
        try:
            from .._progress import subscribe_progress  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # an opmap without progress reports: no bars, the rest works
            self.progress_supported = False
        else:
            self.progress_supported = True
            self._unsubscribe.append(subscribe_progress(self.on_progress))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="opero-dashboard", daemon=True
        )
        self._thread.start()

    def _stop_all(self) -> None:
        self._stop.set()
        self._thread = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL):
            self.refresh_all(tick=True)

    def refresh_all(self, force: bool = False, tick: bool = False) -> None:
        """Refresh every live dashboard that has something new (all of them with ``force``)."""
        for dashboard in list(self.dashboards):
            try:
                dashboard.refresh(force=force, tick=tick)
            except Exception:  # a dashboard must never take the kernel down
                from .._telemetry import logger

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
        return f"{row['rate_waits']:,} ({row['rate_wait_seconds']:.1f}s)" if row["rate_waits"] else "0"
    if key in ("latency_p50", "latency_p95"):
        return "–" if value is None else f"{1000 * value:,.1f} ms"
    if key == "function":
        return str(value)
    return _fmt_number(value)


_TABLE_STYLE = (
    "<style>.opero-table{border-collapse:collapse;font-size:12px;font-family:var(--jp-code-font-family,monospace)}"
    ".opero-table th,.opero-table td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    ".opero-table th:first-child,.opero-table td:first-child{text-align:left}"
    ".opero-table td.opero-bad{color:#c62828}</style>"
)


def render_table_html(rows: list[dict[str, Any]]) -> str:
    """The function table as HTML (one ``<tr class="opero-row">`` per function)."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            bad = " opero-bad" if key == "failures" and row.get("failures") else ""
            cells.append(
                f'<td class="opero-{key.replace("_", "-")}{bad}">{html.escape(_fmt_cell(key, row))}</td>'
            )
        body.append(f'<tr class="opero-row">{"".join(cells)}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(COLUMNS)}"><i>no opero calls yet</i></td></tr>')
    return f'{_TABLE_STYLE}<table class="opero-table"><tr>{head}</tr>{"".join(body)}</table>'


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


def render_errors_html(errors: list[ErrorEntry]) -> str:
    """The recent-errors panel as HTML."""
    if not errors:
        return '<div class="opero-errors"></div>'
    items = []
    for e in reversed(errors):
        when = time.strftime("%H:%M:%S", time.localtime(e.time))
        status = "failed" if e.final else "attempt failed"
        if e.count > 1:
            status += f" ×{e.count:,}"
        item = f" item <code>{html.escape(e.item)}</code>" if e.item is not None else ""
        items.append(
            f'<li class="opero-error"><span style="color:#888">{when}</span> '
            f"<b>{html.escape(e.func)}</b>{item} {status}: {html.escape(e.error)}</li>"
        )
    return (
        '<div class="opero-errors" style="font-size:12px"><b>Latest errors</b>'
        f'<ul style="margin:2px 0">{"".join(items)}</ul></div>'
    )


def render_errors_text(errors: list[ErrorEntry]) -> str:
    """The recent-errors panel as text."""
    lines = []
    for e in reversed(errors):
        item = f" item {e.item}" if e.item is not None else ""
        count = f" ×{e.count:,}" if e.count > 1 else ""
        lines.append(f"  {e.func}{item} {'failed' if e.final else 'attempt failed'}{count}: {e.error}")
    return ("latest errors:\n" + "\n".join(lines)) if lines else ""


class Dashboard:
    """A view of opero's counters, maps and errors; live while attached to the hub.

    Args:
        scope: None for every function; otherwise a baseline ``{name: (id(stats), calls)}``
            taken when the dashboard was created: only functions that did work since (and
            maps started since) are shown — the ``%%opero`` cell's own work.
        title: a heading shown above the table.
        always: names of functions shown even before they are called (the cell itself).
    """

    def __init__(
        self,
        scope: dict[str, tuple[int, int]] | None = None,
        title: str = "opero",
        always: tuple[str, ...] = (),
    ) -> None:
        self.scope = scope
        self.title = title
        self.always = always
        self.created = time.time()
        self._fingerprint: Any = None
        self._lock = threading.Lock()
        self._widget: Any = None
        self._table: Any = None
        self._errors: Any = None
        self._maps_box: Any = None
        self._bars: list[tuple[Any, Any, Any]] = []
        self._busy_since: float | None = None
        self._seen: Any = None
        self.refreshes = 0

    @classmethod
    def for_new_work(cls, title: str, always: tuple[str, ...] = ()) -> Dashboard:
        """A dashboard of the work that starts after this call (used by ``%%opero``)."""
        baseline = {s.name: (id(s), s.calls) for s in all_stats()}
        return cls(scope=baseline, title=title, always=always)

    # -- data ------------------------------------------------------------------------------

    def _selected(self) -> list[FunctionStats]:
        stats = all_stats()
        if self.scope is None:
            return stats
        scope = self.scope
        return [
            s for s in stats if s.name in self.always or scope.get(s.name) != (id(s), s.calls) or s.in_flight
        ]

    def _current_fingerprint(self) -> Any:
        # Plain attribute reads, no locks and no sorting: this runs 10 times a second.
        return (
            hub.version,
            tuple(
                (
                    s.name,
                    s.calls,
                    s.successes,
                    s.failures,
                    s.retries,
                    s.fallbacks,
                    s.cache_hits,
                    s.cache_misses,
                    s.rate_waits,
                    s.in_flight,
                )
                for s in self._selected()
            ),
        )

    def rows(self) -> list[dict[str, Any]]:
        """One ``FunctionStats.as_dict()`` per shown function."""
        return [s.as_dict() for s in self._selected()]

    def errors(self) -> list[ErrorEntry]:
        """The errors to show (the latest ``MAX_ERRORS``, only this cell's for a cell view)."""
        with hub.lock:
            entries = list(hub.errors)
        if self.scope is not None:
            entries = [e for e in entries if e.time >= self.created - 0.001]
        return entries[-MAX_ERRORS:]

    def maps(self) -> list[MapState]:
        """The maps to show: running ones and the last few finished."""
        with hub.lock:
            states = [MapState(**vars(s)) for s in hub.maps.values()]
        if self.scope is not None:
            states = [s for s in states if s.started >= self.created - 0.001]
        return states

    # -- rendering ---------------------------------------------------------------------------

    def text(self) -> str:
        """The dashboard as plain text."""
        parts = [self.title, render_table_text(self.rows())]
        for m in self.maps():
            total = "?" if m.total is None else f"{m.total:,}"
            state = "done" if m.finished else "running"
            parts.append(f"map {m.name}: {m.done:,}/{total} ({m.failed:,} failed, {state})")
        errors = render_errors_text(self.errors())
        if errors:
            parts.append(errors)
        return "\n".join(parts)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        rows = render_table_html(self.rows())
        errors = render_errors_html(self.errors())
        return f"<div class='opero-dashboard'><b>{html.escape(self.title)}</b>{rows}{errors}</div>"

    @property
    def widget(self) -> Any:
        """The ipywidgets VBox (built on first use)."""
        if self._widget is None:
            import ipywidgets as w

            self._table = w.HTML(value=render_table_html([]))
            self._errors = w.HTML(value=render_errors_html([]))
            self._maps_box = w.VBox([])
            header = w.HTML(value=f"<b>{html.escape(self.title)}</b>")
            self._widget = w.VBox([header, self._table, self._maps_box, self._errors])
            self._widget.add_class("opero-dashboard")
            self.refresh(force=True)
        return self._widget

    def refresh(self, force: bool = False, tick: bool = False) -> bool:
        """Render the current state into the widgets when it changed; True when it did.

        Args:
            force: render even when nothing changed.
            tick: called by the timer: hold back while work started less than ``QUIET``
                seconds ago and is still changing.
        """
        if self._widget is None and not force:
            return False
        with self._lock:
            fingerprint = self._current_fingerprint()
            if fingerprint == self._fingerprint and not force:
                self._busy_since = None
                return False
            if tick and not force:
                now = time.monotonic()
                if self._busy_since is None:
                    self._busy_since, self._seen = now, fingerprint
                    return False
                still_changing = fingerprint != self._seen
                self._seen = fingerprint
                if still_changing and now - self._busy_since < QUIET:
                    return False
            self._fingerprint = fingerprint
            if self._widget is None:
                return False
            table = render_table_html(self.rows())
            if table != self._table.value:
                self._table.value = table
            errors = render_errors_html(self.errors())
            if errors != self._errors.value:
                self._errors.value = errors
            self._update_bars(self.maps())
            self.refreshes += 1
            return True

    def _update_bars(self, maps: list[MapState]) -> None:
        import ipywidgets as w

        # Rows of widgets are reused from map to map: creating widgets costs a comm round of
        # its own (~3 ms each), updating a value is a small message.
        while len(self._bars) < len(maps):
            bar = w.IntProgress(value=0, min=0, max=1)
            bar.style.description_width = "initial"
            label = w.HTML()
            self._bars.append((bar, label, w.HBox([bar, label])))
        for (bar, label, _), m in zip(self._bars, maps):
            total = m.total if m.total is not None else max(m.done, 1)
            with bar.hold_sync():  # one message per bar, not one per trait
                bar.description = _short(m.name, 24)
                bar.max = max(1, total)
                bar.value = min(m.done, bar.max)
                bar.bar_style = "danger" if m.failed and m.finished else ("success" if m.finished else "info")
            total_text = "?" if m.total is None else f"{m.total:,}"
            label.value = (
                f"<span class='opero-map'>{m.done:,}/{total_text}"
                f"{f' · {m.failed:,} failed' if m.failed else ''}{' · done' if m.finished else ''}</span>"
            )
        if len(self._maps_box.children) != len(maps):
            self._maps_box.children = [row for _, _, row in self._bars[: len(maps)]]

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self) -> Dashboard:
        """Start live updates."""
        hub.attach(self)
        return self

    def detach(self) -> None:
        """Freeze at the last state: one final refresh, then no more updates."""
        hub.detach(self)
        self.refresh(force=True)

    def close(self) -> None:
        """Stop updating and remove the widgets."""
        hub.detach(self)
        if self._widget is not None:
            self._widget.close()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if widgets_available():
            display(self.widget)  # type: ignore[no-untyped-call]
        else:
            print(self.text())


def show(scope: dict[str, tuple[int, int]] | None = None, title: str = "opero") -> Dashboard:
    """Display a live dashboard of every opero function (text snapshot outside a kernel).

    Returns:
        The dashboard; call ``.close()`` to stop it.
    """
    dashboard = Dashboard(scope=scope, title=title)
    if widgets_available():
        from IPython.display import display

        display(dashboard.widget)  # type: ignore[no-untyped-call]
        dashboard.attach()
    else:
        print(dashboard.text())
    return dashboard
