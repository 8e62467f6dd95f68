"""The Jupyter extension: ``%load_ext opero``.

Registers the ``%opero`` line magic and the ``%%opero`` cell magic. IPython and ipywidgets
are imported only here, when the extension loads, never by ``import opero``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._shell import ExtensionShell

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: ExtensionShell) -> None:
    """Register the magics, the end-of-cell dashboard flush and the cell-cache clearer."""
    from ..stores import namespace_clearers
    from .cellcache import clear_cells
    from .magics import OperoMagics, after_cell, install_interrupt_handler

    ipython.register_magics(OperoMagics)
    install_interrupt_handler(ipython)
    if after_cell not in ipython.events.callbacks.get("post_run_cell", []):
        ipython.events.register("post_run_cell", after_cell)
    # opero.clear_cache() then also empties the cell cache of that namespace.
    if clear_cells not in namespace_clearers:
        namespace_clearers.append(clear_cells)


def unload_ipython_extension(ipython: ExtensionShell) -> None:
    """Remove the magics and hooks that :func:`load_ipython_extension` added."""
    from ..stores import namespace_clearers
    from .cellcache import clear_cells
    from .magics import after_cell

    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("opero", None)
    try:
        ipython.events.unregister("post_run_cell", after_cell)
    except ValueError:
        pass
    if clear_cells in namespace_clearers:
        namespace_clearers.remove(clear_cells)
