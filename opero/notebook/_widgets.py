"""What opero asks of ipywidgets and of IPython's display handles, as ``Protocol``s.

ipywidgets ships no type information, so its classes are opaque to a type checker; these
few members are all the dashboard and the progress bars use, and the real widgets have them
(``_repr_mimebundle_`` is IPython's display protocol, not a private member).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

__all__ = ["Box", "Button", "DisplayHandle", "HTML", "Layout", "ToggleButton", "Widget"]


class Layout(Protocol):
    """A widget's CSS layout; ``display = "none"`` hides it, None shows it."""

    display: str | None


class Widget(Protocol):
    """Every widget: a layout, CSS classes, and ``close()`` to drop its front-end model."""

    layout: Layout

    def add_class(self, className: str) -> object:
        """Add a CSS class."""
        ...

    def close(self) -> None:
        """Close the widget (its view goes, its comm closes)."""
        ...

    def _repr_mimebundle_(self) -> Mapping[str, object] | None:
        """Its mime bundle: the ``application/vnd.jupyter.widget-view+json`` entry."""
        ...


class HTML(Widget, Protocol):
    """``ipywidgets.HTML``: a piece of HTML, changed by setting ``value``."""

    value: str


class Button(Widget, Protocol):
    """``ipywidgets.Button``: a stop button."""

    disabled: bool
    tooltip: str

    def on_click(self, callback: Callable[[Button], object]) -> None:
        """Call ``callback(button)`` on each click (in the kernel's main thread)."""
        ...


class ToggleButton(Widget, Protocol):
    """``ipywidgets.ToggleButton``: the dashboard's "all columns" switch."""

    value: bool

    def observe(self, handler: Callable[[Mapping[str, object]], None], names: str) -> None:
        """Call ``handler(change)`` when trait ``names`` changes."""
        ...


class Box(Widget, Protocol):
    """``ipywidgets.HBox`` / ``VBox``: widgets in a row or a column."""

    children: Sequence[Widget]


class DisplayHandle(Protocol):
    """IPython's handle of one display, updated in place."""

    def update(self, obj: Mapping[str, object], *, raw: bool = False) -> None:
        """Replace what the display shows."""
        ...
