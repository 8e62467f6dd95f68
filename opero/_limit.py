"""Rate limiters: one GCRA algorithm over pluggable shared state.

``rate_limit=r`` lets attempts start at most ``r`` per second, ``rate_burst`` back to back,
then spaced ``1/r`` apart. A limiter first *reserves* the next theoretical start slot (GCRA:
the theoretical arrival time ``tat`` advances by ``1/r`` per grant), sleeps until it, then
*confirms* under the lock that the previous real start is at least ``1/r`` ago, so a late
waker cannot squeeze two starts closer than the interval. Sleeping is the driver's job
(``time.sleep`` or ``asyncio.sleep``), so one limiter serves threads and every event loop.

The state lives in a :class:`Store`, which runs each GCRA step atomically: this module has
the algorithm (:func:`gcra_reserve`, :func:`gcra_confirm`) and the in-process store; the
host-wide store (``stores/host.py``: a file in ``/dev/shm`` under ``flock``) runs the same
Python steps, the cluster-wide one (``stores/redis.py``) runs them as one Lua script on the
server's clock. ``opero.stores.get_limiter`` picks one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._testing import state as testing_state

__all__ = ["Limiter", "LocalStore", "Store", "TransactStore", "clock", "gcra_confirm", "gcra_reserve"]

#: Below this remaining wait, yield and re-check instead of sleeping: a sleep overshoots by
#: ~0.1 ms, and with burst 1 each late start would push every later one back (drift).
_SPIN = 0.002
#: The clock every store shares; CLOCK_MONOTONIC is system-wide on Linux, so processes agree.
clock = time.monotonic


def gcra_reserve(
    now: float, tat: float, last: float, interval: float, burst: int
) -> tuple[float, float, float]:
    """GCRA, step 1: take the next start slot; return ``(delay, tat, last)``.

    The theoretical arrival time ``tat`` advances by ``interval`` per grant; a grant may start
    ``(burst - 1) * interval`` before it. The Lua script in ``stores/redis.py`` is this same step.
    """
    tat = max(tat, now)
    start = max(now, tat - (burst - 1) * interval)
    return start - now, tat + interval, last


def gcra_confirm(
    now: float, tat: float, last: float, interval: float, burst: int
) -> tuple[float, float, float]:
    """GCRA, step 2, after sleeping the delay: with ``burst == 1`` the previous real start must be
    ``interval`` ago (a late waker must not start right after an early one); return
    ``(delay, tat, last)``, delay > 0 meaning "sleep that long and confirm again"."""
    if burst == 1 and now < last + interval:
        return last + interval - now, tat, last
    return 0.0, tat, max(last, now)


class Store(Protocol):
    """Where a limiter's shared state lives; each method is one atomic GCRA step."""

    def reserve(self, interval: float, burst: int) -> float:
        """Run :func:`gcra_reserve` atomically on the shared state; return the delay."""

    def confirm(self, interval: float, burst: int) -> float:
        """Run :func:`gcra_confirm` atomically on the shared state; return the delay."""

    #: None, or a list that receives the start time of every grant made through this store
    #: object, read on the deciding clock inside the atomic step: the spacing the limiter
    #: decided, free of the scheduling delay callers add before they can look at a clock.
    #: Off by default (one attribute test per grant); for tests and diagnostics.
    grant_log: list[float] | None


class TransactStore:
    """Base of stores that run the Python GCRA steps under their own lock (``transact``).

    Attributes:
        grant_log: see :attr:`Store.grant_log`; times are :data:`clock` readings.
    """

    __slots__ = ("grant_log",)

    def __init__(self) -> None:
        self.grant_log: list[float] | None = None

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last) -> (result, tat, last)`` atomically; return result."""
        raise NotImplementedError

    def reserve(self, interval: float, burst: int) -> float:
        """One atomic :func:`gcra_reserve`."""
        return self.transact(lambda now, tat, last: gcra_reserve(now, tat, last, interval, burst))

    def confirm(self, interval: float, burst: int) -> float:
        """One atomic :func:`gcra_confirm`."""
        log = self.grant_log
        if log is None:
            return self.transact(lambda now, tat, last: gcra_confirm(now, tat, last, interval, burst))

        def logged(now: float, tat: float, last: float) -> tuple[float, float, float]:
            step = gcra_confirm(now, tat, last, interval, burst)
            if step[0] <= 0:
                log.append(now)  # under the store's lock: the start time the limiter decided
            return step

        return self.transact(logged)


class LocalStore(TransactStore):
    """State shared by the threads and async tasks of this process only.

    A copy pickled into another process starts with fresh state (it is not shared); the
    host-wide store of ``stores/host.py`` is the one opero uses for decorated functions.
    """

    __slots__ = ("_last", "_lock", "_tat")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._tat = 0.0
        self._last = float("-inf")

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last)`` under this process's lock."""
        with self._lock:
            result, self._tat, self._last = update(clock(), self._tat, self._last)
            return result

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalStore, ())


class Limiter:
    """A rate limit: ``rate`` starts per second, ``burst`` back to back.

    Limiters pickle (for process and dask workers): the copy keeps the same store, so with a
    machine-wide or redis store it draws on the same budget.

    Attributes:
        name: the function or scope it limits.
        rate: starts per second.
        burst: starts allowed back to back before spacing applies.
        store: where the shared state lives.
    """

    __slots__ = ("burst", "grants", "interval", "name", "rate", "store", "waited")

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

    def __reduce__(self) -> tuple[Any, ...]:
        return (Limiter, (self.name, self.rate, self.burst, self.store))

    def acquire(self) -> float:
        """Block the calling thread until an attempt may start; return seconds waited."""
        if testing_state.active:
            return 0.0
        begin = clock()
        store, interval, burst = self.store, self.interval, self.burst
        delay = store.reserve(interval, burst)
        while True:
            if delay > 0:
                time.sleep(delay if delay > _SPIN else 0)
            delay = store.confirm(interval, burst)
            if delay <= 0:
                break
        return self._granted(clock() - begin)

    async def acquire_async(self) -> float:
        """Wait without blocking the event loop until an attempt may start; return seconds waited."""
        if testing_state.active:
            return 0.0
        begin = clock()
        store, interval, burst = self.store, self.interval, self.burst
        delay = store.reserve(interval, burst)
        while True:
            if delay > 0:
                await asyncio.sleep(delay if delay > _SPIN else 0)
            delay = store.confirm(interval, burst)
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
