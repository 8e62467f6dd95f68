"""Rate limiters: one GCRA algorithm over pluggable shared state.

``rate_limit=r`` lets attempts start at most ``r`` per second, ``rate_burst`` back to back,
then spaced ``1/r`` apart. A limiter first *reserves* the next theoretical start slot (GCRA:
the theoretical arrival time ``tat`` advances by ``1/r`` per grant), sleeps until it, then
*confirms* under the lock that the previous real start is at least ``1/r`` ago, so a late
waker cannot squeeze two starts closer than the interval. Sleeping is the driver's job
(``time.sleep`` or ``asyncio.sleep``), so one limiter serves threads and every event loop.

The state lives in a :class:`Store`; this module has the in-process one. The machine-wide
(``/dev/shm`` + ``flock``) and cluster-wide (redis) stores plug in through ``_backends``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ._errors import ConfigurationError
from ._options import Options
from ._testing import state as testing_state

__all__ = ["Limiter", "LocalStore", "Store", "get_limiter"]

#: The clock every store shares; CLOCK_MONOTONIC is system-wide on Linux, so processes agree.
clock = time.monotonic


class Store(Protocol):
    """Atomic read-modify-write of a limiter's state ``(tat, last_start)``."""

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last) -> (result, tat, last)`` atomically; return result."""


class LocalStore:
    """State shared by the threads and async tasks of this process."""

    __slots__ = ("_lock", "_tat", "_last")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat = 0.0
        self._last = float("-inf")

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        with self._lock:
            result, self._tat, self._last = update(clock(), self._tat, self._last)
            return result


class Limiter:
    """A rate limit: ``rate`` starts per second, ``burst`` back to back.

    Attributes:
        name: the function or scope it limits.
        rate: starts per second.
        burst: starts allowed back to back before spacing applies.
        store: where the shared state lives.
    """

    __slots__ = ("name", "rate", "burst", "interval", "store", "grants", "waited")

    def __init__(self, name: str, rate: float, burst: int = 1, store: Store | None = None) -> None:
        self.name = name
        self.rate = float(rate)
        self.burst = int(burst)
        #: seconds between two starts once the burst is spent
        self.interval = 1.0 / self.rate
        self.store: Store = store if store is not None else LocalStore()
        #: grants made and seconds waited through this limiter object (this process)
        self.grants = 0
        self.waited = 0.0

    def _reserve(self, now: float, tat: float, last: float) -> tuple[float, float, float]:
        tat = max(tat, now)
        start = max(now, tat - (self.burst - 1) * self.interval)
        return start - now, tat + self.interval, last

    def _confirm(self, now: float, tat: float, last: float) -> tuple[float, float, float]:
        if self.burst == 1 and now < last + self.interval:
            return last + self.interval - now, tat, last
        return 0.0, tat, max(last, now)

    def acquire(self) -> float:
        """Block the calling thread until an attempt may start; return seconds waited."""
        if testing_state.active:
            return 0.0
        begin = clock()
        delay = self.store.transact(self._reserve)
        while True:
            if delay > 0:
                time.sleep(delay)
            delay = self.store.transact(self._confirm)
            if delay <= 0:
                break
        return self._granted(clock() - begin)

    async def acquire_async(self) -> float:
        """Wait without blocking the event loop until an attempt may start; return seconds waited."""
        if testing_state.active:
            return 0.0
        begin = clock()
        delay = self.store.transact(self._reserve)
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            delay = self.store.transact(self._confirm)
            if delay <= 0:
                break
        return self._granted(clock() - begin)

    def _granted(self, waited: float) -> float:
        self.grants += 1
        # Waits below a scheduling tick are not worth reporting as rate-limit waits.
        if waited < 1e-4:
            return 0.0
        self.waited += waited
        return waited

    def __repr__(self) -> str:
        return (
            f"<Limiter {self.name!r}: {self.rate:g}/s burst {self.burst}, "
            f"{self.grants} grants, waited {self.waited:.3f}s, store {type(self.store).__name__}>"
        )

    def _repr_html_(self) -> str:
        import html

        return f"<code>{html.escape(repr(self))}</code>"


_limiters: dict[tuple[str, str], Limiter] = {}
_limiters_lock = threading.Lock()


def get_limiter(options: Options, func_name: str) -> Limiter | None:
    """The limiter of a function: its own, or its scope's (shared by every function naming it).

    Raises:
        ConfigurationError: a scope is already in use with a different rate or burst.
    """
    if options.rate_limit is None:
        return None
    scope = options.rate_limit_scope
    key = (options.rate_limit_backend, f"scope:{scope}" if scope else f"fn:{func_name}:{id(options)}")
    with _limiters_lock:
        existing = _limiters.get(key)
        if existing is not None and scope:
            if existing.rate != float(options.rate_limit) or existing.burst != options.rate_burst:
                raise ConfigurationError(
                    f"rate_limit_scope={scope!r} already has rate_limit={existing.rate:g}, "
                    f"rate_burst={existing.burst}; got rate_limit={options.rate_limit!r}, "
                    f"rate_burst={options.rate_burst!r}. Functions sharing a scope must give the same rate."
                )
            return existing
        limiter = _make_limiter(options, func_name, scope)
        _limiters[key] = limiter
        return limiter


def _make_limiter(options: Options, func_name: str, scope: str | None) -> Limiter:
    name = scope or func_name
    assert options.rate_limit is not None
    from ._backends import make_limiter_store

    store = make_limiter_store(options, name, scoped=scope is not None)
    return Limiter(name, options.rate_limit, options.rate_burst, store)
