"""``opero.parts(fn)``: the live parts behind a decorated function, for tests and notebooks.

A decorated function keeps its cache, rate limiter, circuit breaker and sticky fallback
demotions in its plan, which is private and changes shape between releases. ``parts`` is
the small, stable window onto them: a frozen record of the objects themselves (not
copies), so ``parts(fn).breaker.state()`` reads the breaker every call of ``fn`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._policy import Plan

if TYPE_CHECKING:
    from ._breaker import Breaker
    from ._keys import KeyBuilder
    from ._limit import Limiter
    from ._pace import Pace
    from ._sticky import Sticky
    from ._telemetry import Recorder
    from .stores import CacheBackend

__all__ = ["Parts", "parts"]


@dataclass(frozen=True, slots=True)
class Parts:
    """The live parts of one decorated function, as ``opero.parts(fn)`` returns them.

    Each field is the object the function's calls use (``None`` when the option that
    makes it is off). The record is frozen; the parts themselves are live.

    Attributes:
        cache: the cache backend (``cache=True``), with ``clear()``, ``get`` and ``set``.
        keys: the cache-key builder: ``keys.key(args, kwargs)`` is the key of one call.
        limiter: the rate limiter (``rate_limit=``): ``current_rate()``, its ``store``.
        breaker: the circuit breaker (``circuit_breaker=``): ``state()`` is ``"closed"``,
            ``"open"`` or ``"half_open"``.
        sticky: the demoted fallback candidates shared by every call
            (``fallback_sticky=True``): ``demoted(candidates)``, ``demote(value)``.
        pace: the concurrency slots, token budget and the server's rate-limit headers
            (``max_concurrency=``, ``token_limit=``, ``token_budget=``, ``rate_limit=``).
        recorder: where the function's events go: ``emit(kind, **fields)`` reaches the
            same hooks, callbacks and counters as the function's own events.
    """

    cache: CacheBackend | None
    keys: KeyBuilder | None
    limiter: Limiter | None
    breaker: Breaker | None
    sticky: Sticky | None
    pace: Pace | None
    recorder: Recorder


def parts(fn: object) -> Parts:
    """The live cache, limiter, breaker and sticky demotions behind ``fn``.

    Args:
        fn: a function decorated with ``@opero`` or ``@opmap`` (also a method of one,
            bound or not, or a classmethod/staticmethod object).

    Returns:
        A frozen :class:`Parts` record of the objects ``fn``'s calls use.

    Raises:
        TypeError: ``fn`` was not made by ``@opero`` or ``@opmap``.

    Example:
        >>> import opero
        >>> @opero.opero(rate_limit=5)
        ... def fetch(x: int) -> int:
        ...     return x
        >>> opero.parts(fetch).limiter is not None
        True
    """
    target = fn
    for _ in range(3):  # a bound method or classmethod wraps the decorated function
        plan = getattr(target, "_opero_plan", None)
        if isinstance(plan, Plan):
            return Parts(
                plan.cache, plan.keys, plan.limiter, plan.breaker, plan.sticky, plan.pace, plan.recorder
            )
        target = getattr(target, "__func__", None)
        if target is None:
            break
    raise TypeError(f"opero.parts() takes a function decorated with @opero or @opmap, got {fn!r}")
