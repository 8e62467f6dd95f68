"""The API sets the pace: token budgets, concurrency slots and the server's own numbers.

One :class:`Pace` per decorated function (or per ``rate_limit_scope``) wraps every attempt:
:meth:`Pace.enter` before it, :meth:`Pace.exit` after it (sync and async twins).

- **Concurrency** (``max_concurrency=N``): ``enter`` takes one of N shared slots, waiting
  while all are held; ``exit`` gives it back. Slots live on this host (``stores/host.py``:
  ``flock``'d files, freed by the kernel when a holder dies) or on redis (leases).
- **Tokens** (``token_limit`` + ``tokens=``): ``enter`` estimates the attempt's cost from the
  call's arguments (by name, like ``cache_key``) and reserves it on a shared record: GCRA
  with a cost, the theoretical arrival time advancing by ``cost / rate``. Inside the
  attempt, :func:`charge` reports the real cost; ``exit`` corrects the record by the
  difference, so a long run tracks the true usage, not the estimate.
- **Total budget** (``token_budget``): the same record counts every unit spent; an attempt
  whose estimate would overrun it fails with :class:`~opero.BudgetExhausted` without calling.
- **The server's numbers**: :func:`observe` (on a success) and ``exit`` (on an error's
  response) read the rate-limit headers (:mod:`opero._headers`): a remaining count of 0
  holds the request budget (the limiter) or the token budget until its reset, never longer
  than ``max_delay``; with ``rate_limit="auto"`` a published request limit becomes the
  ceiling and the starting rate.

The request budget itself (``rate_limit``) stays in :mod:`opero._limit`; the attempt takes
its slot, then its tokens, then its request grant, so the exact request spacing is decided
last, right before the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ._counters import PaceSnapshot
from ._errors import BudgetExhausted, ConfigurationError
from ._headers import Limits, Reading, read_headers
from ._hints import status_of
from ._limit import RATE, Limiter, Record
from ._options import Options
from ._testing import state as testing_state

if TYPE_CHECKING:
    from ._keys import ArgumentBinder
    from ._telemetry import FunctionStats

__all__ = [
    "Pace",
    "Slots",
    "Ticket",
    "charge",
    "get_pace",
    "observe",
    "pace_adjust",
    "pace_hold",
    "pace_read",
    "pace_take",
]

#: Layout of a pace record: the token budget's theoretical arrival time, units spent.
TAT, SPENT = 0, 1
#: Polling a full set of concurrency slots: first and longest pause (seconds).
_POLL_MIN, _POLL_MAX = 0.0005, 0.01


# -- the record's operations (stores/redis.py runs the same steps in Lua) ------------------


def pace_take(now: float, v: list[float], cost_s: float, cost: float, cap: float) -> float:
    """Reserve ``cost`` units: return the delay before the attempt may start, or -1 when the
    total ``cap`` (0: none) would be overrun. ``cost_s`` is ``cost / rate`` (0: no rate)."""
    if cap > 0 and (v[SPENT] >= cap or v[SPENT] + cost > cap):
        return -1.0
    v[SPENT] += cost
    start = max(v[TAT], now)
    if cost_s > 0:
        v[TAT] = start + cost_s
    return start - now


def pace_adjust(now: float, v: list[float], delta_s: float, delta: float) -> float:
    """Correct a reservation by ``delta`` units (``delta_s`` seconds of the rate); return the
    units spent so far."""
    v[TAT] += delta_s
    v[SPENT] += delta
    return v[SPENT]


def pace_hold(now: float, v: list[float], wait: float) -> float:
    """Make the next start at least ``wait`` seconds from ``now``."""
    v[TAT] = max(v[TAT], now + wait)
    return 0.0


def pace_read(now: float, v: list[float]) -> float:
    """Units spent so far."""
    return v[SPENT]


def aimd_publish(now: float, v: list[float], rate: float) -> float:
    """The server published its limit: the adaptive rate starts there (``_limit``'s layout:
    rate, epoch, base, probing, peak; the soft ceiling ``peak`` is left to the next cut)."""
    v[RATE] = rate
    v[2] = rate  # base: the climb after the next cut is scaled from here
    v[3] = 0.0  # no slow start: the limit is known
    return rate


# -- one attempt ---------------------------------------------------------------------------


class Slots(Protocol):
    """``max_concurrency`` slots shared by threads, processes or hosts (``stores/``)."""

    #: how many slots there are
    limit: int

    def try_acquire(self) -> int | str | None:
        """A free slot's handle, or None when all are held."""
        ...

    def release(self, held: int | str) -> None:
        """Give back the slot ``try_acquire`` returned."""
        ...

    def in_use(self) -> int:
        """How many slots are held now."""
        ...


class Ticket:
    """One attempt's share of the pace: its estimate, what :func:`charge` reported, its slot.

    Made for an attempt with its arguments (the ``tokens=`` estimate is taken from them),
    then passed to :meth:`Pace.enter` and :meth:`Pace.exit`.
    """

    __slots__ = ("charged", "estimate", "held", "limiter", "pace", "token")

    def __init__(
        self, pace: Pace, args: tuple[object, ...], kwargs: Mapping[str, object], limiter: Limiter | None
    ) -> None:
        self.pace, self.limiter = pace, limiter
        self.estimate = pace.estimate(args, kwargs)
        self.charged: float | None = None
        self.held: int | str | None = None
        self.token: contextvars.Token[Ticket | None] | None = None


_current: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("opero_pace", default=None)


def charge(n: float) -> None:
    """Report what the running attempt really cost, in the units of ``token_limit``.

    Call it inside a decorated function, e.g. with the response's ``usage.total_tokens``;
    the shared token budget (and ``token_budget``'s count) is corrected by the difference
    from the ``tokens=`` estimate when the attempt ends. Called twice, the last value counts.
    Outside an attempt (or without a token budget) it does nothing.

    Args:
        n: units used (a finite number >= 0).

    Raises:
        ValueError: ``n`` is negative or not a finite number.
    """
    value = float(n)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"charge(n={n!r}): n must be a finite number >= 0")
    ticket = _current.get()
    if ticket is not None:
        ticket.charged = value


def observe(response: object) -> Reading:
    """Read a response's rate-limit headers and let the running attempt's budgets follow them.

    Inside a decorated function, pass any response (requests, httpx, aiohttp, urllib) or a
    mapping of headers. A remaining count of 0 holds the shared budget until the server's
    reset (at most ``max_delay``); with ``rate_limit="auto"`` a published request limit
    becomes the rate's ceiling and starting point. Outside an attempt it only reads.

    Args:
        response: a response object, an exception carrying one, or a mapping of headers.

    Returns:
        What the headers said (:class:`opero._headers.Reading`).
    """
    reading = read_headers(response)
    ticket = _current.get()
    if ticket is not None and reading:
        ticket.pace.follow(reading, ticket.limiter)
    return reading


@dataclass(slots=True, eq=False)
class Pace:
    """The pace of one function or scope (see the module docstring).

    Pickles for process and dask workers: the copy keeps the same shared record and slots.

    Args:
        name: the function or scope.
        tokens: the estimate callable (receives the call's arguments by name), or None.
        token_rate: units per second (``token_limit``), or None.
        budget: the total cap (``token_budget``), or None.
        max_delay: the longest a server's numbers may hold the budget.
        record: the shared ``[tat, spent]`` record, or None without tokens or a budget.
        slots: the shared concurrency slots, or None.
        func: the decorated function, whose signature binds what ``tokens`` receives.
    """

    name: str
    tokens: Callable[..., float] | None
    token_rate: float | None
    budget: float | None
    max_delay: float
    record: Record | None
    slots: Slots | None
    func: Callable[..., object] | None = None
    _binder: ArgumentBinder | None = field(default=None, init=False)
    _published: float = field(default=0.0, init=False)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            Pace,
            (
                self.name,
                self.tokens,
                self.token_rate,
                self.budget,
                self.max_delay,
                self.record,
                self.slots,
                self.func,
            ),
        )

    # -- entering and leaving an attempt ----------------------------------------------------

    def estimate(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> float:
        """The ``tokens=`` estimate of one attempt with these arguments (0 without ``tokens``)."""
        if self.tokens is None:
            return 0.0
        if self._binder is None:
            from ._keys import ArgumentBinder

            self._binder = ArgumentBinder(self.func if self.func is not None else self.tokens)
        try:
            bound = self._binder.bind(args, kwargs)
        except TypeError:
            return 0.0  # a wrong call: the function raises its own TypeError
        value = float(self.tokens(**bound))
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{self.name}: tokens= returned {value!r}; it must be a finite number >= 0")
        return value

    def _take(self, estimate: float) -> float:
        """Reserve the estimate on the record; the delay before starting (BudgetExhausted)."""
        record = self.record
        if record is None:
            return 0.0
        cost_s = estimate / self.token_rate if self.token_rate else 0.0
        delay = float(record.apply("pace_take", pace_take, cost_s, estimate, self.budget or 0.0))
        if delay < 0:
            self._exhausted()
        return delay

    async def _take_async(self, estimate: float) -> float:
        record = self.record
        if record is None:
            return 0.0
        cost_s = estimate / self.token_rate if self.token_rate else 0.0
        delay = float(await record.apply_async("pace_take", pace_take, cost_s, estimate, self.budget or 0.0))
        if delay < 0:
            self._exhausted()
        return delay

    def _exhausted(self) -> None:
        assert self.record is not None and self.budget is not None
        spent = float(self.record.apply("pace_read", pace_read))
        raise BudgetExhausted(self.name, spent, self.budget)

    def enter(self, ticket: Ticket, stats: FunctionStats) -> Ticket:
        """Before an attempt (``ticket``, made for it): a concurrency slot, then the token
        reservation (sleeping the calling thread while either is not available).

        Raises:
            BudgetExhausted: the ``token_budget`` cannot cover this attempt.
        """
        if self.slots is not None:
            ticket.held = self._slot(self.slots, stats)
        try:
            delay = self._take(ticket.estimate)
        except BaseException:
            self._release(ticket)
            raise
        if delay > 0 and not testing_state.active:
            _wait(stats, delay, time.sleep)
        ticket.token = _current.set(ticket)
        return ticket

    async def enter_async(self, ticket: Ticket, stats: FunctionStats) -> Ticket:
        """:meth:`enter` without blocking the event loop."""
        if self.slots is not None:
            ticket.held = await self._slot_async(self.slots, stats)
        try:
            delay = await self._take_async(ticket.estimate)
        except BaseException:
            self._release(ticket)
            raise
        if delay > 0 and not testing_state.active:
            stats.wait_begin()
            try:
                await asyncio.sleep(delay)
            finally:
                stats.wait_end()
            stats.add(rate_waits=1, rate_wait_seconds=delay)
        ticket.token = _current.set(ticket)
        return ticket

    def exit(self, ticket: Ticket, error: BaseException | None) -> None:
        """After an attempt: give the slot back, settle the tokens, follow an error's headers."""
        self._leave(ticket, error)
        self._settle(ticket, error)

    async def exit_async(self, ticket: Ticket, error: BaseException | None) -> None:
        """:meth:`exit` without blocking the event loop for the token settlement (a redis round
        trip); following an error's headers is rarer and stays a direct store step."""
        self._leave(ticket, error)
        record, settle = self.record, self._settlement(ticket, error)
        if record is not None and settle is not None:
            await record.apply_async("pace_adjust", pace_adjust, *settle)

    def _leave(self, ticket: Ticket, error: BaseException | None) -> None:
        if ticket.token is not None:
            try:
                _current.reset(ticket.token)
            except ValueError:  # another context (a timeout's worker thread): nothing to undo
                pass
        self._release(ticket)
        if error is not None and isinstance(error, Exception):
            reading = read_headers(error)
            if reading:
                self.follow(reading, ticket.limiter)

    def _release(self, ticket: Ticket) -> None:
        held, ticket.held = ticket.held, None
        if held is not None and self.slots is not None:
            self.slots.release(held)

    def _settle(self, ticket: Ticket, error: BaseException | None) -> None:
        record, settle = self.record, self._settlement(ticket, error)
        if record is not None and settle is not None:
            record.apply("pace_adjust", pace_adjust, *settle)

    def _settlement(self, ticket: Ticket, error: BaseException | None) -> tuple[float, float] | None:
        """``(seconds, units)`` to correct the record by once the attempt ended, or None."""
        if self.record is None:
            return None
        used = ticket.charged
        refused = used is None and error is not None and status_of(error) == 429
        if used is None:
            used = ticket.estimate
        delta = used - ticket.estimate
        delta_s = delta / self.token_rate if self.token_rate else 0.0
        # A throttled attempt (429) keeps its units in the rate (providers count refused
        # requests against the window) but costs nothing: token_budget gets them back.
        spent = -ticket.estimate if refused else delta
        return (delta_s, spent) if delta_s or spent else None

    # -- concurrency slots ----------------------------------------------------------------

    def _slot(self, slots: Slots, stats: FunctionStats) -> int | str:
        held = slots.try_acquire()
        if held is not None:
            return held
        pause, waiting = _POLL_MIN, False
        try:
            while held is None:
                if not waiting:
                    waiting = True
                    stats.wait_begin()
                time.sleep(pause)
                pause = min(_POLL_MAX, pause * 2)
                held = slots.try_acquire()
        finally:
            if waiting:
                stats.wait_end()
        return held

    async def _slot_async(self, slots: Slots, stats: FunctionStats) -> int | str:
        held = slots.try_acquire()
        if held is not None:
            return held
        pause = _POLL_MIN
        stats.wait_begin()
        try:
            while held is None:
                await asyncio.sleep(pause)
                pause = min(_POLL_MAX, pause * 2)
                held = slots.try_acquire()
        finally:
            stats.wait_end()
        return held

    # -- the server's numbers ------------------------------------------------------------------

    def follow(self, reading: Reading, limiter: Limiter | None) -> None:
        """Let the shared budgets follow what the server said (see :func:`observe`)."""
        requests, tokens = reading.requests, reading.tokens
        if requests is not None:
            wait = self._exhausted_for(requests)
            if wait > 0:
                if limiter is not None:
                    limiter.hold(wait)
                elif self.record is not None:
                    self.record.apply("pace_hold", pace_hold, wait)
            self._publish(requests, limiter)
        if tokens is not None and self.record is not None and self.token_rate:
            wait = self._exhausted_for(tokens)
            if wait > 0:
                self.record.apply("pace_hold", pace_hold, wait)

    def _exhausted_for(self, limits: Limits) -> float:
        """How long a spent window holds the budget: until its reset, at most ``max_delay``."""
        if limits.remaining != 0 or limits.reset is None:
            return 0.0
        return min(limits.reset, self.max_delay)

    def _publish(self, requests: Limits, limiter: Limiter | None) -> None:
        rate = requests.rate
        adaptive = getattr(limiter, "adaptive", None)
        if rate is None or adaptive is None or rate == self._published:
            return
        self._published = rate
        ceiling = adaptive.ceiling
        if ceiling is not None and ceiling < rate:
            rate = ceiling  # the user's rate_limit stays the ceiling when it is lower
        adaptive.ceiling = rate
        adaptive.record.apply("aimd_publish", aimd_publish, rate)

    # -- stats ---------------------------------------------------------------------------------

    def snapshot(self) -> PaceSnapshot:
        """The pace's numbers for ``fn.stats``: tokens used, limits, slots in use."""
        out: PaceSnapshot = {}
        if self.record is not None:
            out["tokens_used"] = float(self.record.apply("pace_read", pace_read))
            out["token_limit"] = self.token_rate
            out["token_budget"] = self.budget
        if self.slots is not None:
            out["max_concurrency"] = self.slots.limit
            out["concurrency_in_flight"] = self.slots.in_use()
        return out

    def __repr__(self) -> str:
        parts = []
        if self.token_rate:
            parts.append(f"{self.token_rate:g} tokens/s")
        if self.budget:
            parts.append(f"budget {self.budget:g}")
        if self.slots is not None:
            parts.append(f"max_concurrency {self.slots.limit}")
        return f"<Pace {self.name!r}: {', '.join(parts) or 'headers only'}>"


def _wait(stats: FunctionStats, delay: float, sleep: Callable[[float], None]) -> None:
    stats.wait_begin()
    try:
        sleep(delay)
    finally:
        stats.wait_end()
    stats.add(rate_waits=1, rate_wait_seconds=delay)


# -- building ------------------------------------------------------------------------------

_BACKENDS = {"local": "host", "redis": "redis"}
#: The shared parts (record, slots) of each scope of this process, by (backend, scope):
#: every function naming a scope draws on them, each with its own ``tokens`` estimate.
_scopes: dict[tuple[str, str], Pace] = {}
_scopes_lock = threading.Lock()


def get_pace(options: Options, name: str, func: Callable[..., object] | None = None) -> Pace | None:
    """The pace of a function: its own, or one drawing on its scope's; None when nothing paces it.

    Args:
        options: the function's resolved options.
        name: its qualified name.
        func: the function (its signature binds the arguments ``tokens=`` receives).

    Raises:
        ConfigurationError: a scope is already in use with other token or concurrency limits.
    """
    if options.rate_limit is None and not (
        options.token_limit is not None or options.token_budget is not None or options.max_concurrency
    ):
        return None
    scope = options.rate_limit_scope
    if not scope:
        return _build(options, name, False, func)
    key = (options.rate_limit_backend, scope)
    with _scopes_lock:
        shared = _scopes.get(key)
        if shared is None:
            shared = _scopes[key] = _build(options, scope, True, None)
        elif _limits(shared) != _wanted(options):
            raise ConfigurationError(
                f"rate_limit_scope={scope!r} already has token_limit={shared.token_rate!r}, "
                f"token_budget={shared.budget!r}, max_concurrency={_limits(shared)[2]!r}; got "
                f"token_limit={options.token_limit!r}, token_budget={options.token_budget!r}, "
                f"max_concurrency={options.max_concurrency!r}. Functions sharing a scope must agree."
            )
    return Pace(
        scope,
        options.tokens,
        shared.token_rate,
        shared.budget,
        options.max_delay,
        shared.record,
        shared.slots,
        func,
    )


#: A pace's token rate, token budget and number of slots (None: not set).
_Limits = tuple[float | None, float | None, int | None]


def _limits(pace: Pace) -> _Limits:
    return (pace.token_rate, pace.budget, None if pace.slots is None else pace.slots.limit)


def _wanted(options: Options) -> _Limits:
    limit, budget = options.token_limit, options.token_budget
    return (
        None if limit is None else float(limit),
        None if budget is None else float(budget),
        options.max_concurrency,
    )


def _build(options: Options, name: str, scoped: bool, func: Callable[..., object] | None) -> Pace:
    module = importlib.import_module(f"opero.stores.{_BACKENDS[options.rate_limit_backend]}")
    token_rate, budget, conc = _wanted(options)
    record = None
    if token_rate is not None or budget is not None:
        record = module.record_store(options, "pace", name, scoped, [0.0, 0.0])
    slots = module.slots_store(options, name, scoped) if conc else None
    return Pace(name, options.tokens, token_rate, budget, options.max_delay, record, slots, func)
