"""A live dashboard of opero's work: a row per function with charts, a bar per map, failures.

The work is never slowed by it: the dashboard does not listen to calls at all. A timer
thread wakes 10 times a second; every ``SAMPLE`` seconds it samples each function's counters
(plain attribute reads) into a short history, from which the rates (calls/s over the last
few seconds, not a lifetime) and the charts (inline SVG sparklines of throughput, failures
and rate-limit use) are drawn. A dashboard re-renders only when its fingerprint changed.

Failed map items come from each function's failure log (``opero._failures``): every item
with its own final error, recorded where the map receives it. Running maps come from
``opero._progress``, with a stop button each (``_live``); the sampler and timer are ``_hub``'s,
the tables ``_tables``'.

The widget is displayed with a ``text/html`` snapshot in its mime bundle; once the work is
idle the display is replaced by that snapshot alone (and back to the live widget when work
starts again), so a saved notebook shows the last state instead of "model not found".

Without ipywidgets or outside a kernel, :func:`show` prints a text table instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._failures import FailureLog, failure_logs
from .._progress import MapProgress, maps
from .._telemetry import FunctionStats, all_stats, logger, lookup
from ._html import STYLE, bar_html, esc, sparkline
from ._hub import SAMPLE, hub
from ._live import IN_VOILA, LiveView
from ._tables import (
    COLUMNS,
    MORE,
    NAME_WIDTH,
    Row,
    limit_cell,
    pace_line,
    render_errors_html,
    render_errors_text,
    render_table_html,
    render_table_text,
    status_line,
    worker_hint,
)

if TYPE_CHECKING:  # ipywidgets and sidecar load with the extension, not with opero
    from ipywidgets import HTML, DOMWidget, ToggleButton, VBox
    from sidecar import Sidecar

__all__ = ["COLUMNS", "MORE", "NAME_WIDTH", "Dashboard", "hub", "show", "widgets_available"]

#: Rates (calls/s) are measured over this many seconds.
RATE_WINDOW = 5.0
#: Finished maps listed under the bars.
KEEP_FINISHED_MAPS = 3
#: Seconds without any change after which a dashboard swaps to its static snapshot.
IDLE = 1.0
#: Least seconds between two renders while work runs (each render sends a few comm messages).
MIN_RENDER = 0.2
#: Work must have been going on this long before the timer renders it (like tqdm's
#: ``delay``): a burst shorter than this is rendered once, when it is over, so it is not
#: slowed at all; longer work is shown live.
QUIET = 0.2


def widgets_available() -> bool:
    """True in a Jupyter kernel with ipywidgets installed (widgets can be shown)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()  # type: ignore[no-untyped-call]
    return shell is not None and getattr(shell, "kernel", None) is not None


class Dashboard(LiveView):
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
        super().__init__()
        self.scope = scope
        self.title = title
        self.always = always
        self.compact = compact
        self.created = time.time()
        self._fingerprint: object = None
        self._lock = threading.Lock()
        self._widget: VBox | None = None
        self._body: HTML | None = None
        self._maps_box: VBox | None = None
        self._tail: HTML | None = None
        self._rendered = 0.0
        self._busy_since: float | None = None
        self._seen: object = None
        self._changed = time.monotonic()
        self._more = False
        self._toggle: ToggleButton | None = None
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

    def _current_fingerprint(self) -> object:
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

    def rows(self) -> list[Row]:
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
            row["chart_limit"] = limit_cell(s, row, limit, tokens)
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

    def _top_html(self, rows: list[Row], more: bool) -> str:
        """The title, the table (or the cell's status line) and the hints: live and saved alike."""
        if self.compact:
            return status_line(rows, self.created)
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
    def widget(self) -> VBox:
        """The ipywidgets VBox (built on first use)."""
        if self._widget is None:
            import ipywidgets as w

            self._body = w.HTML(value="")
            self._maps_box = w.VBox([])
            self._tail = w.HTML(value="")
            children: list[DOMWidget] = [self._body]
            if not self.compact:
                toggle: ToggleButton = w.ToggleButton(
                    value=False, description="all columns", tooltip="show every fn.stats column"
                )
                toggle.layout = w.Layout(width="auto", height="22px", align_self="flex-start")
                toggle.add_class("opero-more-toggle")
                toggle.observe(self._on_toggle, names="value")
                children.append(toggle)
                self._toggle = toggle
            box: VBox = w.VBox([*children, self._maps_box, self._tail])
            box.add_class("opero-dashboard")
            self._widget = box
            self.refresh(force=True)
            return box
        return self._widget

    def _on_toggle(self, change: Mapping[str, object]) -> None:
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
        if self._body is None or self._tail is None:  # the widget is not built
            return
        rows = self.rows()
        body = f'{STYLE}<div class="opero-d">{self._top_html(rows, self._more)}</div>'
        if body != self._body.value:
            self._body.value = body
        self._update_bars([m for m in self.maps() if not m.finished])
        tail = f'{STYLE}<div class="opero-d">{self._tail_html()}</div>'
        if tail != self._tail.value:
            self._tail.value = tail

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
_side_panel: Sidecar | None = None


def _show_in_side_panel(dashboard: Dashboard) -> bool:
    """Display ``dashboard`` in a JupyterLab side panel; False when that is not possible."""
    global _side_panel
    if IN_VOILA:
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
