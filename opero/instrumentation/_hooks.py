"""Registering hooks: a thin, documented layer over the event subscribers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from .._telemetry import Event, subscribe

__all__ = ["Hook", "add_hook", "hooks", "remove_hook"]

#: What a hook is: called with each :class:`Event`; its return value is ignored.
Hook = Callable[[Event], object]
H = TypeVar("H", bound=Hook)

_lock = threading.Lock()
_hooks: dict[Hook, Callable[[], None]] = {}


def add_hook(hook: H, kinds: Iterable[str] | None = None) -> H:
    """Call ``hook(event)`` for every opero event (only those of ``kinds`` when given).

    Adding the same hook again replaces its ``kinds``. Usable as a decorator.

    Args:
        hook: a callable taking one :class:`Event`.
        kinds: event kinds to receive (e.g. ``{"retry", "failure"}``); None means all,
            including kinds added in later versions.

    Returns:
        ``hook`` itself, so ``@add_hook`` works and ``remove_hook(hook)`` can undo it.
    """
    with _lock:
        old = _hooks.pop(hook, None)
        if old is not None:
            old()
        _hooks[hook] = subscribe(hook, kinds)
    return hook


def remove_hook(hook: Hook) -> bool:
    """Stop calling ``hook``. Returns False when it was not registered."""
    with _lock:
        unsubscribe = _hooks.pop(hook, None)
    if unsubscribe is None:
        return False
    unsubscribe()
    return True


def hooks() -> list[Hook]:
    """The hooks registered now, oldest first."""
    with _lock:
        return list(_hooks)
