"""opero's progress bar in a notebook: an HTML bar with a stop button, and a saved snapshot.

``MapProgress`` loads this module by name inside a kernel (``progress=True`` or ``"auto"``).
The bar is displayed with a ``text/html`` entry next to the widget view in its mime bundle;
when the map is over the display is replaced by that static HTML alone, so a saved notebook
shows the last state in JupyterLab, Notebook 7, nbviewer and GitHub: never "model not found".

A map shorter than ``DELAY`` seconds never builds a widget (it would cost more than the map):
it leaves its one-line summary only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from . import clicks
from ._html import STYLE, bar_html, esc

if TYPE_CHECKING:
    from ipywidgets import HTML, Box, DOMWidget, HBox

    from .._progress import MapProgress

__all__ = ["DELAY", "NotebookBar", "display_bundle"]

#: Seconds a map must run before its live bar appears (like tqdm's ``delay``).
DELAY = 0.2


class DisplayHandle(Protocol):
    """IPython's handle of one display (``display(..., display_id=True)``), updated in place.

    IPython's own class is untyped; this is the one method opero calls.
    """

    def update(self, obj: Mapping[str, object], *, raw: bool = False) -> None:
        """Replace what the display shows."""
        ...


def display_bundle(widget: Box, snapshot: str, text: str) -> dict[str, object]:
    """The mime bundle of a live widget with a static ``text/html`` snapshot beside it."""
    bundle: dict[str, object] = dict(widget._repr_mimebundle_() or {})
    bundle["text/html"] = snapshot
    bundle["text/plain"] = text
    return bundle


class NotebookBar:
    """One map's live bar (``ipywidgets.HTML`` + a stop button), then its static snapshot."""

    def __init__(self, progress: MapProgress) -> None:
        self.progress = progress
        self.began = time.monotonic()
        self.html: HTML | None = None
        self.box: HBox | None = None
        self.handle: DisplayHandle | None = None

    def _build(self, p: MapProgress) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.html = w.HTML(value=STYLE + self._line(p))
        children: list[DOMWidget] = [self.html]
        if p.background:
            # Only then can a click reach the map while it runs (another thread, or a kernel
            # that hands clicks over at once); otherwise it is stopped with an interrupt.
            button = w.Button(description="stop", tooltip="cancel the items not started yet", icon="stop")
            button.layout = w.Layout(width="auto", height="22px")
            button.add_class("opero-stop")
            button.on_click(lambda _: p.stop())
            # a map run in the cell itself holds the main thread: the click is taken early
            clicks.hook(button, p.stop)
            children.append(button)
        self.box = w.HBox(children)
        self.box.add_class("opero-map-bar")
        self.handle = display(  # type: ignore[no-untyped-call]
            display_bundle(self.box, self._snapshot(p), p.summary()), raw=True, display_id=True
        )

    @staticmethod
    def _line(p: MapProgress) -> str:
        return f'<div class="opero-d">{bar_html(p)}</div>'

    def _snapshot(self, p: MapProgress) -> str:
        return STYLE + self._line(p)

    def update(self, p: MapProgress) -> None:
        """New counts (called at most ~10 times a second)."""
        if self.html is None:
            if time.monotonic() - self.began < DELAY:
                return
            self._build(p)
            return
        self.html.value = STYLE + self._line(p)

    def close(self, p: MapProgress) -> None:
        """The map is over: leave the static snapshot only (it survives a saved notebook)."""
        snapshot = {"text/html": self._snapshot(p), "text/plain": p.summary()}
        if self.handle is None:
            from IPython.display import display

            display(snapshot, raw=True)  # type: ignore[no-untyped-call]
            return
        self.handle.update(snapshot, raw=True)
        if self.box is not None:
            for child in self.box.children:
                child.close()
            self.box.close()


def snapshot_html(p: MapProgress) -> str:
    """The static HTML of one map's bar (used by tests and the dashboard)."""
    return STYLE + f'<div class="opero-d">{bar_html(p)}</div>' + f"<!-- {esc(p.label)} -->"
