"""The widget side of a dashboard: a row with a stop button per running map, and the display
it updates (the live widget while work runs, its static snapshot once idle)."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, TypeAlias

from .._progress import MapProgress
from . import clicks
from ._html import STYLE, bar_html
from ._hub import hub

if TYPE_CHECKING:  # ipywidgets and IPython load with the extension, not with opero
    from ipywidgets import HTML, Button, HBox, VBox

    from .bars import DisplayHandle

__all__ = ["IN_VOILA", "LiveView", "MapRow"]

#: Voila starts its kernels with ``SERVER_SOFTWARE=voila/<version>``.
IN_VOILA = os.environ.get("SERVER_SOFTWARE", "").startswith("voila")

#: A running map's row of widgets: its bar (``ipywidgets.HTML``), its stop button, their box.
MapRow: TypeAlias = "tuple[HTML, Button, HBox]"


class LiveView:
    """The map rows and the display handle of a :class:`~opero.notebook.dashboard.Dashboard`."""

    _widget: VBox | None
    _maps_box: VBox | None

    def __init__(self) -> None:
        self._bars: list[MapRow] = []
        #: slot -> the map its row shows (None: a free, hidden row); a map keeps its slot
        self._bar_maps: list[MapProgress | None] = []
        self._handle: DisplayHandle | None = None
        self._live_shown = True
        self._shown_snapshot = ""

    @property
    def widget(self) -> VBox:
        """The ipywidgets box shown live."""
        raise NotImplementedError

    def snapshot(self) -> str:
        """The whole view as static HTML."""
        raise NotImplementedError

    def text(self) -> str:
        """The whole view as plain text."""
        raise NotImplementedError

    def _update_bars(self, running: list[MapProgress]) -> None:
        # Rows of widgets are reused from map to map: creating widgets costs a comm round of
        # its own (~3 ms each), updating a value is a small message. A running map keeps its
        # row until it finishes: a click arrives with only the button's identity, so a row
        # that showed another map a moment later would stop the wrong one.
        slots = _place(self._bar_maps, running)
        while len(self._bars) < len(slots):
            self._bars.append(self._new_row(len(self._bars)))
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
        box = self._maps_box
        if box is not None and len(box.children) != len(slots):
            box.children = [row for _, _, row in self._bars[: len(slots)]]

    def _new_row(self, slot: int) -> MapRow:
        """A map's row: its bar and a stop button that stops whichever map holds ``slot``."""
        import ipywidgets as w

        label = w.HTML()
        button = w.Button(description="stop", tooltip="cancel the items not started yet", icon="stop")
        button.layout = w.Layout(width="auto", height="22px")
        button.add_class("opero-stop")
        button.on_click(lambda _b: self._stop_slot(slot))
        # taken early, in the kernel's shell channel thread: the map may hold the main one
        clicks.hook(button, functools.partial(self._stop_map, slot))
        return label, button, w.HBox([label, button])

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
        if self._handle is None or IN_VOILA:
            return
        snapshot = self.snapshot()
        if not self._live_shown and snapshot == self._shown_snapshot:
            return
        self._handle.update({"text/html": snapshot, "text/plain": self.text()}, raw=True)
        self._shown_snapshot = snapshot
        self._live_shown = False

    def _show_live(self) -> None:
        if self._handle is None or self._widget is None:
            return
        from .bars import display_bundle

        self._handle.update(display_bundle(self._widget, self.snapshot(), self.text()), raw=True)
        self._live_shown = True


def _place(shown: list[MapProgress | None], running: list[MapProgress]) -> list[MapProgress | None]:
    """Slots after an update: running maps keep theirs, a new one takes the first free slot."""
    alive = {id(m) for m in running}
    slots = [m if m is not None and id(m) in alive else None for m in shown]
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
    return slots
