"""What opero asks of an IPython shell: the few members the extension and the magics use.

IPython's ``InteractiveShell`` is only partly typed (``transform_cell`` and
``set_custom_exc`` are not), so opero states the part it relies on as ``Protocol``s;
the real shell, and the small stand-ins the tests use, satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from types import TracebackType
from typing import Protocol

__all__ = ["CellCompiler", "Events", "ExtensionShell", "MagicsManager", "Shell"]

#: ``(type, value, traceback)`` as IPython's ``showtraceback`` takes it.
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class CellCompiler(Protocol):
    """The shell's compiler: names a cell's code so tracebacks can show its source."""

    flags: int

    def cache(self, transformed_code: str, number: int = 0, raw_code: str | None = None) -> str:
        """Remember the cell's source; return the file name its code object should carry."""
        ...


class Events(Protocol):
    """The shell's event callbacks (``post_run_cell``, ...)."""

    @property
    def callbacks(self) -> MutableMapping[str, list[Callable[..., object]]]:
        """The registered callbacks of each event."""
        ...

    def register(self, event: str, function: Callable[..., object]) -> None:
        """Call ``function`` on each ``event``."""
        ...

    def unregister(self, event: str, function: Callable[..., object]) -> None:
        """Stop calling ``function``; ValueError when it was not registered."""
        ...


class MagicsManager(Protocol):
    """Where the shell keeps its magics, by kind (``"line"``, ``"cell"``) and name."""

    @property
    def magics(self) -> MutableMapping[str, MutableMapping[str, object]]:
        """The magics of each kind, by name."""
        ...


class Shell(Protocol):
    """The members of an IPython shell that the magics use.

    Its compiler and ``execution_count`` are read with ``getattr``: bare stand-ins lack them.
    """

    @property
    def user_ns(self) -> dict[str, object]:
        """The notebook's namespace: a cell's inputs are read and its outputs written here."""
        ...

    @property
    def user_global_ns(self) -> dict[str, object]:
        """The globals a cell's code runs with."""
        ...

    def transform_cell(self, raw_cell: str) -> str:
        """The cell's source after IPython's transforms (``%magics``, ``!commands``)."""
        ...

    def showtraceback(self, exc_tuple: ExcInfo | None = None, *, tb_offset: int | None = None) -> None:
        """Show an exception the way the shell shows one."""
        ...

    def set_custom_exc(
        self, exc_tuple: tuple[type[BaseException], ...], handler: Callable[..., object]
    ) -> None:
        """Handle exceptions of ``exc_tuple`` with ``handler`` instead of the default display."""
        ...


class ExtensionShell(Shell, Protocol):
    """The shell ``%load_ext opero`` registers with: its magics and event callbacks too."""

    @property
    def events(self) -> Events:
        """The shell's event callbacks."""
        ...

    @property
    def magics_manager(self) -> MagicsManager:
        """The registered magics."""
        ...

    def register_magics(self, *objs: object) -> None:
        """Register a ``Magics`` class (or instance)."""
        ...
