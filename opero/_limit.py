"""Rate limiters: one GCRA algorithm over pluggable shared state, optionally adaptive.

``rate_limit=r`` lets attempts start at most ``r`` per second, spaced ``1/r`` apart.
``rate_burst=B`` lets up to ``B`` of them start back to back, *within* the same budget: any
1-second window sees at most ``max(B, ceil(r))`` starts (10 at ``r=10, B=10``, never 19), and
a long run averages ``r`` per second. (Plain GCRA alone would allow ``r + B - 1`` in the first
second: a burst on top of the rate rather than inside it.)

A limiter first *reserves* the next theoretical start slot (GCRA: the theoretical arrival time
``tat`` advances by ``1/r`` per grant), sleeps until it, then *confirms* under the lock that
the start keeps the spacing (``burst == 1``: the previous real start is ``1/r`` ago) or the
window (``burst > 1``: the ``max(B, ceil(r))``-th previous start is 1 s ago), so a late
waker cannot squeeze starts closer than decided. Sleeping is the driver's job
(``time.sleep`` or ``asyncio.sleep``), so one limiter serves threads and every event loop.

A server's ``Retry-After`` holds the whole budget (:meth:`Limiter.hold`): the next start of
any caller sharing it is at least that far away, except after a *pacing* 429 (a short
``Retry-After`` on an attempt that waited for its slot, :data:`PACING_WAIT`): then the budget
skips one slot and a fixed rate widens its spacing a little (:data:`SLACK_STEP`); the
throttled item itself still waits the server's time. A limiter's first grant in a process
reserves two slots (a first call is slow to go out).

**Adaptive rate** (``rate_limit="auto"`` or ``adaptive=True``): AIMD on a shared record
(:func:`aimd_throttled`, :func:`aimd_succeeded`). A throttled attempt (429/503) cuts the rate
by ``CUT`` once per *epoch* (attempts granted before the cut do not cut again: 16 in-flight
429s are one congestion signal, not 16); each success adds ``CLIMB * base / rate``, i.e. the
rate climbs by ``CLIMB * base`` per second of successes, ``base`` being the rate right after
the last cut (scale-free). ``"auto"`` starts in slow start (+1 per success: doubling per
second) until its first cut. The rate at the last cut is a *soft ceiling*: within
:data:`NEAR` of it a 429 cuts only to :data:`CUT_NEAR` and the climb is :data:`CLIMB_NEAR`
times slower, so the rate lingers just below where the server last pushed back. The rate
never exceeds ``rate_limit``.

The state lives in a :class:`Store` (GCRA) and a :class:`Record` (adaptive rate, breaker):
this module has the algorithms and the in-process kinds; the host-wide ones
(``stores/host.py``: files under ``flock``) run the same Python steps, the cluster-wide ones
(``stores/redis.py``) run them as Lua scripts on the server's clock.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Concatenate, Protocol, TypeVar

from ._testing import state as testing_state

if TYPE_CHECKING:
    from ._telemetry import FunctionStats

__all__ = [
    "Adaptive",
    "Limiter",
    "LocalRecord",
    "LocalStore",
    "Record",
    "Store",
    "TransactStore",
    "aimd_read",
    "aimd_succeeded",
    "aimd_throttled",
    "clock",
    "gcra_confirm",
    "gcra_hold",
    "gcra_reserve",
    "spacing",
    "window_cap",
]

#: Below this remaining wait, yield and re-check instead of sleeping: a sleep overshoots by
#: ~0.1 ms (1-2 ms on a loaded machine), and with burst 1 each late start would push every
#: later one back (drift). A longer wait sleeps until ``_EARLY`` before the slot, then yields.
_SPIN = 0.002
_EARLY = 0.001
#: The clock every store shares; CLOCK_MONOTONIC is system-wide on Linux, so processes agree.
clock = time.monotonic
#: The most starts a burst window remembers (a rate above this with ``rate_burst > 1`` is
#: windowed over this many starts).
RING = 4096
_NEVER = float("-inf")


#: Grants are spaced a little over ``1/r``: by this fraction of it, at most :data:`MARGIN_MAX`
#: seconds. Servers judge spacing on their own clock (nginx ``limit_req``: whole
#: milliseconds, read once per event-loop turn) after a trip whose length varies, so starts
#: exactly ``1/r`` apart can arrive a hair closer; the margin absorbs that (docs/decisions.md).
MARGIN = 0.04
MARGIN_MAX = 0.002


def spacing(rate: float) -> float:
    """Seconds between two grants at ``rate`` per second: ``1/rate`` plus the safety margin."""
    interval = 1.0 / rate
    return interval + min(MARGIN_MAX, MARGIN * interval)


def window_cap(interval: float, burst: int) -> int:
    """Starts any 1-second window may hold: ``max(burst, ceil(rate))``, at most ``RING``."""
    return min(RING, max(burst, math.ceil(1.0 / interval - 1e-9)))


def gcra_reserve(
    now: float, tat: float, last: float, interval: float, burst: int, oldest: float = _NEVER
) -> tuple[float, float, float]:
    """GCRA, step 1: take the next start slot; return ``(delay, tat, last)``.

    The theoretical arrival time ``tat`` advances by ``interval`` per grant; a grant may start
    ``(burst - 1) * interval`` before it, and (``burst > 1``) not before ``oldest + 1``, the
    start that would leave the 1-second window. ``stores/redis.py`` runs this same step in Lua.
    """
    tat = max(tat, now)
    start = max(now, tat - (burst - 1) * interval, oldest + 1.0)
    return start - now, tat + interval, last


def gcra_confirm(
    now: float, tat: float, last: float, interval: float, burst: int, oldest: float = _NEVER
) -> tuple[float, float, float]:
    """GCRA, step 2, after sleeping the delay: with ``burst == 1`` the previous real start must be
    ``interval`` ago (a late waker must not start right after an early one); with ``burst > 1``
    the start ``window_cap`` grants back (``oldest``) must be a second ago. Return
    ``(delay, tat, last)``, delay > 0 meaning "sleep that long and confirm again"."""
    if burst == 1 and now < last + interval:
        return last + interval - now, tat, last
    if burst > 1 and now < oldest + 1.0:
        return oldest + 1.0 - now, tat, last
    return 0.0, tat, max(last, now)


def gcra_hold(now: float, tat: float, last: float, interval: float, burst: int, wait: float) -> float:
    """The ``tat`` that makes the next start at least ``wait`` seconds from ``now``."""
    return max(tat, now + wait + (burst - 1) * interval)


class Store(Protocol):
    """Where a limiter's GCRA state lives; each method is one atomic step."""

    def reserve(self, interval: float, burst: int) -> float:
        """Run :func:`gcra_reserve` atomically on the shared state; return the delay."""
        ...

    def confirm(self, interval: float, burst: int) -> float:
        """Run :func:`gcra_confirm` atomically on the shared state; return the delay."""
        ...

    def hold(self, interval: float, burst: int, wait: float) -> None:
        """Push the next start at least ``wait`` seconds away (:func:`gcra_hold`)."""

    async def reserve_async(self, interval: float, burst: int) -> float:
        """:meth:`reserve` without blocking the event loop."""
        ...

    async def confirm_async(self, interval: float, burst: int) -> float:
        """:meth:`confirm` without blocking the event loop."""
        ...

    async def hold_async(self, interval: float, burst: int, wait: float) -> None:
        """:meth:`hold` without blocking the event loop."""

    #: None, or a list that receives the start time of every grant made through this store
    #: object, read on the deciding clock inside the atomic step: the spacing the limiter
    #: decided, free of the scheduling delay callers add before they can look at a clock.
    #: Off by default (one attribute test per grant); for tests and diagnostics.
    grant_log: list[float] | None


class TransactStore:
    """Base of stores that run the Python GCRA steps under their own lock (``transact``).

    A store with ``burst > 1`` also keeps a ring of recent start times (``_ring_oldest`` and
    ``_ring_push``, called inside ``transact``'s lock).

    Attributes:
        grant_log: see :attr:`Store.grant_log`; times are :data:`clock` readings.
    """

    __slots__ = ("grant_log",)

    def __init__(self) -> None:
        self.grant_log: list[float] | None = None

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last) -> (result, tat, last)`` atomically; return result."""
        raise NotImplementedError

    def _ring_oldest(self, n: int) -> float:
        """The n-th most recent start (-inf when fewer); only inside ``transact``."""
        raise NotImplementedError

    def _ring_push(self, when: float) -> None:
        """Remember a start; only inside ``transact``."""
        raise NotImplementedError

    def reserve(self, interval: float, burst: int) -> float:
        """One atomic :func:`gcra_reserve`."""
        if burst == 1:
            return self.transact(lambda now, tat, last: gcra_reserve(now, tat, last, interval, 1))
        cap = window_cap(interval, burst)
        return self.transact(
            lambda now, tat, last: gcra_reserve(now, tat, last, interval, burst, self._ring_oldest(cap))
        )

    def confirm(self, interval: float, burst: int) -> float:
        """One atomic :func:`gcra_confirm`."""
        log = self.grant_log
        if burst == 1 and log is None:
            return self.transact(lambda now, tat, last: gcra_confirm(now, tat, last, interval, 1))
        cap = window_cap(interval, burst)

        def step(now: float, tat: float, last: float) -> tuple[float, float, float]:
            oldest = self._ring_oldest(cap) if burst > 1 else _NEVER
            out = gcra_confirm(now, tat, last, interval, burst, oldest)
            if out[0] <= 0:
                if burst > 1:
                    self._ring_push(now)
                if log is not None:
                    log.append(now)  # under the store's lock: the start time the limiter decided
            return out

        return self.transact(step)

    def hold(self, interval: float, burst: int, wait: float) -> None:
        """Push the next start at least ``wait`` seconds away."""
        self.transact(lambda now, tat, last: (0.0, gcra_hold(now, tat, last, interval, burst, wait), last))

    async def reserve_async(self, interval: float, burst: int) -> float:
        """:meth:`reserve` (a lock held for microseconds: no need to leave the loop)."""
        return self.reserve(interval, burst)

    async def confirm_async(self, interval: float, burst: int) -> float:
        """:meth:`confirm` (a lock held for microseconds: no need to leave the loop)."""
        return self.confirm(interval, burst)

    async def hold_async(self, interval: float, burst: int, wait: float) -> None:
        """:meth:`hold` (a lock held for microseconds)."""
        self.hold(interval, burst, wait)


class LocalStore(TransactStore):
    """State shared by the threads and async tasks of this process only.

    A copy pickled into another process starts with fresh state (it is not shared); the
    host-wide store of ``stores/host.py`` is the one opero uses for decorated functions.
    """

    __slots__ = ("_last", "_lock", "_ring", "_tat")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._tat = 0.0
        self._last = _NEVER
        self._ring: deque[float] = deque(maxlen=RING)

    def transact(self, update: Callable[[float, float, float], tuple[float, float, float]]) -> float:
        """Run ``update(now, tat, last)`` under this process's lock."""
        with self._lock:
            result, self._tat, self._last = update(clock(), self._tat, self._last)
            return result

    def _ring_oldest(self, n: int) -> float:
        ring = self._ring
        return ring[-n] if len(ring) >= n else _NEVER

    def _ring_push(self, when: float) -> None:
        self._ring.append(when)

    def __reduce__(self) -> tuple[object, ...]:
        return (LocalStore, ())


# -- shared records (adaptive rate, circuit breaker) ---------------------------------------

T = TypeVar("T")
#: An operation on a record: ``op(now, values, *args) -> result`` (a float or a tuple of
#: floats, what redis can send back), mutating ``values``; :meth:`Record.apply` returns it.
Operation = Callable[Concatenate[float, list[float], ...], T]
RecordOp = Operation[object]


class Record(Protocol):
    """A small vector of floats shared by threads/processes/machines, changed atomically.

    Each operation has a name (the redis store runs a Lua script of that name) and a Python
    function (the in-process and host stores run it under their lock).
    """

    def apply(self, name: str, op: Operation[T], *args: float) -> T:
        """Run ``op(now, values, *args)`` atomically and return its result."""
        ...

    async def apply_async(self, name: str, op: Operation[T], *args: float) -> T:
        """:meth:`apply` without blocking the event loop."""
        ...


class LocalRecord:
    """A record shared by this process's threads and tasks (tests, and the fallback).

    Args:
        initial: the starting values.
    """

    __slots__ = ("_lock", "initial", "values")

    def __init__(self, initial: list[float]) -> None:
        self.initial = list(initial)
        self.values = list(initial)
        self._lock = threading.Lock()

    def apply(self, name: str, op: Operation[T], *args: float) -> T:
        """Run ``op`` under this process's lock."""
        with self._lock:
            return op(clock(), self.values, *args)

    async def apply_async(self, name: str, op: Operation[T], *args: float) -> T:
        """:meth:`apply` (microseconds under a lock)."""
        return self.apply(name, op, *args)

    def __reduce__(self) -> tuple[object, ...]:
        return (LocalRecord, (self.initial,))


# -- AIMD ------------------------------------------------------------------------------------

#: The rate after a throttle is this fraction of the rate before it.
CUT = 0.8
#: A throttle near the soft ceiling (within :data:`NEAR` of the rate that last drew one) cuts
#: only this deep: the rate is known to be close, a deep cut would only waste throughput.
CUT_NEAR = 0.9
#: After a cut the rate climbs by ``CLIMB * base`` per second of successes.
CLIMB = 0.1
#: Within this fraction around the soft ceiling the climb is slowed by :data:`CLIMB_NEAR`:
#: the last rate that drew a 429 is where the next one is likely, so the rate approaches it
#: carefully (fewer 429s per cycle), while below the zone it climbs at the full pace.
NEAR = 0.1
CLIMB_NEAR = 0.25
#: An adaptive rate never drops below this many calls per second.
FLOOR = 0.05
#: Layout of an adaptive record: ``PEAK`` is the rate at the last cut (0: none yet).
RATE, EPOCH, BASE, PROBING, PEAK = range(5)
#: The constant arguments of the AIMD steps (also sent to the redis script).
_CUT_ARGS = (CUT, FLOOR, CUT_NEAR, NEAR)
_CLIMB_ARGS = (CLIMB, CLIMB_NEAR, NEAR)


def aimd_read(now: float, v: list[float]) -> tuple[float, float]:
    """``(rate, epoch)``."""
    return v[RATE], v[EPOCH]


def aimd_throttled(
    now: float, v: list[float], epoch: float, cut: float, floor: float, cut_near: float, near: float
) -> float:
    """A throttled attempt granted in ``epoch``: cut once per epoch; return the new rate or -1.

    The cut is ``cut``, or ``cut_near`` when the rate is within the fraction ``near`` of the
    soft ceiling (the last rate that drew a 429); the rate before the cut becomes the new soft
    ceiling. ``stores/redis.py`` runs this same step in Lua.
    """
    if epoch != v[EPOCH]:
        return -1.0
    rate, peak = v[RATE], v[PEAK]
    close = peak > 0 and abs(rate - peak) <= near * peak
    v[PEAK] = rate
    v[RATE] = max(floor, rate * (cut_near if close else cut))
    v[BASE] = v[RATE]
    v[EPOCH] += 1.0
    v[PROBING] = 0.0
    return v[RATE]


def aimd_succeeded(
    now: float, v: list[float], climb: float, climb_near: float, near: float, ceiling: float
) -> float:
    """A success: climb additively (slow start before the first cut; ``climb_near`` times
    slower within the fraction ``near`` of the soft ceiling); ``ceiling`` 0 = none."""
    rate, peak = v[RATE], v[PEAK]
    if v[PROBING]:
        rate += 1.0
    else:
        gain = climb * v[BASE] / rate
        if peak > 0 and abs(rate - peak) <= near * peak:
            gain *= climb_near
        rate += gain
    if ceiling > 0:
        rate = min(rate, ceiling)
    v[RATE] = rate
    return rate


@dataclass(slots=True, eq=False)
class Adaptive:
    """The adaptive side of a limiter: its shared AIMD record and its settings."""

    #: the shared ``[rate, epoch, base, probing, peak]`` record
    record: Record
    #: the highest rate (``rate_limit``), or None with ``"auto"``
    ceiling: float | None

    @staticmethod
    def initial(start: float, probing: bool) -> list[float]:
        """A fresh record's values."""
        return [float(start), 0.0, float(start), 1.0 if probing else 0.0, 0.0]


#: A 429 whose attempt had to wait for its grant (the budget was busy, starts going out
#: ``1/r`` apart) and whose ``Retry-After`` is at most this many seconds is a *pacing* 429:
#: most likely the server judged one gap a hair short on its own clock. It does not stall
#: every caller for the server's wait (docs/decisions.md): the throttled item waits it, the
#: budget skips one slot, and (fixed rates) the spacing widens a little.
PACING_WAIT = 1.0
#: More pacing 429s than this within :data:`PACING_WAIT` seconds (this process) are no
#: longer the spacing's noise: a fixed-rate budget is then held for the server's full wait.
STRIKES = 2
#: The learned extra spacing of a fixed rate, as a fraction of ``1/r``: each pacing 429
#: widens it by ``SLACK_STEP``, up to ``SLACK_MAX``; each grant narrows it by
#: ``SLACK_STEP / SLACK_DECAY`` (so about one 429 per ``SLACK_DECAY`` grants holds it).
SLACK_STEP = 0.01
SLACK_MAX = 0.04
SLACK_DECAY = 200.0

#: Whether the current thread's / task's last grant had to wait (set by ``take``).
_paced: ContextVar[bool] = ContextVar("opero_limit_paced", default=False)


@contextmanager
def _waiting(stats: FunctionStats | None) -> Iterator[None]:
    """A grant that waits: mark the call paced and count the wait in ``stats`` meanwhile."""
    _paced.set(True)
    if stats is not None:
        stats.wait_begin()
    try:
        yield
    finally:
        if stats is not None:
            stats.wait_end()


def _sleep_until(target: float) -> None:
    """Sleep until ``_EARLY`` before ``target`` (a wake-up is often late), then yield until it:
    never past the slot by a late wake, never before it."""
    delay = target - clock()
    if delay > _SPIN:
        time.sleep(delay - _EARLY)
    while True:
        time.sleep(0)
        if clock() >= target:
            return


async def _sleep_until_async(target: float) -> None:
    """:func:`_sleep_until` without blocking the event loop."""
    delay = target - clock()
    if delay > _SPIN:
        await asyncio.sleep(delay - _EARLY)
    while True:
        await asyncio.sleep(0)
        if clock() >= target:
            return


class Limiter:
    """A rate limit: ``rate`` starts per second, ``burst`` back to back.

    Limiters pickle (for process and dask workers): the copy keeps the same store, so with a
    machine-wide or redis store it draws on the same budget.

    Attributes:
        name: the function or scope it limits.
        rate: starts per second (the starting rate of an adaptive limiter).
        burst: starts allowed back to back before spacing applies.
        store: where the shared GCRA state lives.
        adaptive: the shared AIMD state, or None for a fixed rate.
        slack: the learned extra spacing (fraction of ``1/r``) of this process's grants.
    """

    __slots__ = (
        "_cold",
        "_lock",
        "_strikes",
        "adaptive",
        "burst",
        "grants",
        "interval",
        "name",
        "rate",
        "slack",
        "store",
        "waited",
    )

    def __init__(
        self,
        name: str,
        rate: float,
        burst: int = 1,
        store: Store | None = None,
        adaptive: Adaptive | None = None,
    ) -> None:
        self.name = name
        self.rate = float(rate)
        self.burst = int(burst)
        #: seconds between two starts once the burst is spent
        self.interval = spacing(self.rate)
        self.store: Store = store if store is not None else LocalStore()
        self.adaptive = adaptive
        #: grants made and seconds waited through this limiter object (this process)
        self.grants = 0
        self.waited = 0.0
        self.slack = 0.0
        self._strikes: deque[float] = deque()
        self._lock = threading.Lock()
        self._cold = True

    def __reduce__(self) -> tuple[object, ...]:
        return (Limiter, (self.name, self.rate, self.burst, self.store, self.adaptive))

    # -- the adaptive rate -----------------------------------------------------------------

    def current(self) -> tuple[float, float]:
        """``(rate, epoch)``: the shared rate now, and its epoch (the number of cuts so far)."""
        if self.adaptive is None:
            return self.rate, 0.0
        return self.adaptive.record.apply("aimd_read", aimd_read)

    def current_rate(self) -> float:
        """The rate in force now (the shared adaptive rate, or the fixed one)."""
        return self.current()[0]

    def throttled(self, epoch: float, wait: float | None = None) -> float | None:
        """An attempt granted in ``epoch`` was throttled (429/503): when adaptive, cut the
        rate; hold the budget for the server's ``wait`` (a pacing 429: one slot, see
        :data:`PACING_WAIT`). Return the new rate when it was cut."""
        rate = None
        if self.adaptive is not None:
            cut = self.adaptive.record.apply("aimd_throttled", aimd_throttled, epoch, *_CUT_ARGS)
            rate = None if cut < 0 else float(cut)
        hold = self._hold_for(wait)
        if hold > 0:
            self.store.hold(self.interval, self.burst, hold)
        return rate

    def succeeded(self) -> float | None:
        """An attempt succeeded: an adaptive rate climbs; return the new rate (None when fixed)."""
        if self.adaptive is None:
            return None
        ceiling = self.adaptive.ceiling or 0.0
        return float(self.adaptive.record.apply("aimd_succeeded", aimd_succeeded, *_CLIMB_ARGS, ceiling))

    async def throttled_async(self, epoch: float, wait: float | None = None) -> float | None:
        """:meth:`throttled` without blocking the event loop."""
        rate = None
        if self.adaptive is not None:
            cut = await self.adaptive.record.apply_async("aimd_throttled", aimd_throttled, epoch, *_CUT_ARGS)
            rate = None if cut < 0 else float(cut)
        hold = self._hold_for(wait)
        if hold > 0:
            await self.store.hold_async(self.interval, self.burst, hold)
        return rate

    async def succeeded_async(self) -> float | None:
        """:meth:`succeeded` without blocking the event loop."""
        if self.adaptive is None:
            return None
        ceiling = self.adaptive.ceiling or 0.0
        return float(
            await self.adaptive.record.apply_async("aimd_succeeded", aimd_succeeded, *_CLIMB_ARGS, ceiling)
        )

    def _hold_for(self, wait: float | None) -> float:
        """How long a throttle with the server's ``wait`` holds the whole budget.

        The full wait, unless it is a pacing 429 (:data:`PACING_WAIT`): then one slot, and a
        fixed rate widens its spacing a little, unless more than :data:`STRIKES` such 429s
        came within the last :data:`PACING_WAIT` seconds (then the full wait again). An
        adaptive rate's answer to a pacing 429 is its cut, so it never counts strikes.
        """
        if wait is None or wait <= 0:
            return 0.0
        if wait > PACING_WAIT or not _paced.get():
            return wait
        if self.adaptive is not None:
            return min(wait, self.interval)
        now = clock()
        with self._lock:
            strikes = self._strikes
            while strikes and strikes[0] <= now - PACING_WAIT:
                strikes.popleft()
            strikes.append(now)
            self.slack = min(SLACK_MAX, self.slack + SLACK_STEP)
            dense = len(strikes) > STRIKES
        return wait if dense else min(wait, self.interval)

    def hold(self, wait: float) -> None:
        """Make the next start of every caller of this budget at least ``wait`` seconds away."""
        if wait > 0:
            self.store.hold(self.interval, self.burst, wait)

    # -- acquiring -------------------------------------------------------------------------

    def acquire(self, stats: FunctionStats | None = None) -> float:
        """Block the calling thread until an attempt may start; return seconds waited.

        Args:
            stats: counters that track the wall-clock time during which a call waited.
        """
        return self.take(stats)[0]

    async def acquire_async(self, stats: FunctionStats | None = None) -> float:
        """Wait without blocking the event loop until an attempt may start; return seconds waited."""
        return (await self.take_async(stats))[0]

    def take(self, stats: FunctionStats | None = None) -> tuple[float, float]:
        """:meth:`acquire`, also returning the adaptive epoch the grant was made in (for
        :meth:`throttled`)."""
        if self.adaptive is None:
            interval, epoch = self.interval, 0.0
        else:
            rate, epoch = self.current()
            interval = spacing(rate)
        if testing_state.active:
            return 0.0, epoch
        begin = clock()
        interval = self._widened(interval) if self.slack > 0 else interval
        delay = self.store.reserve(self._first(interval) if self._cold else interval, self.burst)
        if delay <= 0:
            delay = self.store.confirm(interval, self.burst)
        if delay <= 0:
            _paced.set(False)
        else:
            with _waiting(stats):
                while delay > 0:
                    _sleep_until(clock() + delay)
                    delay = self.store.confirm(interval, self.burst)
        return self._granted(clock() - begin), epoch

    async def take_async(self, stats: FunctionStats | None = None) -> tuple[float, float]:
        """:meth:`take` without blocking the event loop."""
        if self.adaptive is None:
            interval, epoch = self.interval, 0.0
        else:
            rate, epoch = await self.adaptive.record.apply_async("aimd_read", aimd_read)
            interval = spacing(rate)
        if testing_state.active:
            return 0.0, epoch
        begin = clock()
        interval = self._widened(interval) if self.slack > 0 else interval
        delay = await self.store.reserve_async(self._first(interval) if self._cold else interval, self.burst)
        if delay <= 0:
            delay = await self.store.confirm_async(interval, self.burst)
        if delay <= 0:
            _paced.set(False)
        else:
            with _waiting(stats):
                while delay > 0:
                    await _sleep_until_async(clock() + delay)
                    delay = await self.store.confirm_async(interval, self.burst)
        return self._granted(clock() - begin), epoch

    def _first(self, interval: float) -> float:
        """The first grant through this limiter object (in this process) reserves two slots
        (``burst == 1``): a process's first call is slow to go out (imports, a new connection,
        a TLS handshake), and the start after it must not be squeezed against its late arrival
        at the server. Costs one interval per process."""
        self._cold = False
        return 2.0 * interval if self.burst == 1 else interval

    def _widened(self, interval: float) -> float:
        """``interval`` plus the learned slack; the slack narrows a little with each grant."""
        slack = self.slack
        self.slack = max(0.0, slack - SLACK_STEP / SLACK_DECAY)  # a lost race only loses a step
        return interval * (1.0 + slack)

    def _granted(self, waited: float) -> float:
        self.grants += 1
        # Waits below a scheduling tick are not worth reporting as rate-limit waits.
        if waited < 1e-4:
            return 0.0
        self.waited += waited
        return waited

    def __repr__(self) -> str:
        rate = f"{self.rate:g}/s" if self.adaptive is None else f"adaptive from {self.rate:g}/s"
        return (
            f"<Limiter {self.name!r}: {rate} burst {self.burst}, "
            f"{self.grants} grants, waited {self.waited:.3f}s, store {type(self.store).__name__}>"
        )

    def _repr_html_(self) -> str:
        import html

        return f"<code>{html.escape(repr(self))}</code>"
