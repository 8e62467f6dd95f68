"""One call: cache lookup -> retry rounds -> fallback candidates -> rate limit -> timeout -> func.

The decisions live once, in :meth:`Plan.recover`, a generator that yields what to do next
(``Attempt`` or ``Sleep``) and is told how each attempt failed. The sync and async drivers
(:meth:`Plan.call_sync`, :meth:`Plan.call_async`) only differ in how they sleep and await.
A call that succeeds at once never builds the generator (fast happy path).
"""

from __future__ import annotations

import asyncio
import inspect
import operator
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Generic, NamedTuple, Protocol, Self, TypeVar, overload

from ._attempt import Gate
from ._breaker import Breaker
from ._decisions import Args, Attempt, Decisions, Kwargs, Sleep, Steps
from ._fast import FastPath
from ._keys import KeyBuilder
from ._limit import Limiter
from ._options import Options
from ._pace import Pace, get_pace
from ._singleflight import Flight, Flights
from ._sticky import Sticky
from ._telemetry import Event, FunctionStats, Recorder
from ._testing import state as testing_state
from .stores import MISS, CacheBackend, get_breaker, get_limiter, make_cache

__all__ = ["Attempt", "ItemPlan", "Plan", "PlanParts", "RemotePlan", "Sleep", "rebuild"]

_perf = time.perf_counter


class ItemPlan(Protocol):
    """What an executor running items in this process needs of a plan: eight members.

    The chunk runners (``executors._chunks``), the local executors and a worker's chunk
    runner are typed against it; :class:`Plan` is the implementation.
    """

    func: Callable[..., object]
    is_async: bool
    stats: FunctionStats
    recorder: Recorder

    def fast_now(self) -> str | None:
        """ "plain" when an item may run straight through (see ``_fast``), else None/"memory"."""
        ...

    def call_sync(self, args: Args, kwargs: Kwargs) -> object:
        """One call with the full policy (sync)."""
        ...

    def call_async(self, args: Args, kwargs: Kwargs) -> Coroutine[object, object, object]:
        """One call with the full policy (async)."""
        ...

    def rescue_sync(self, args: Args, kwargs: Kwargs, first: Exception) -> object:
        """Recover (sync) a call whose first attempt, made by the caller, raised ``first``."""
        ...


class PlanParts(NamedTuple):
    """What a plan is rebuilt from in a worker (:func:`rebuild`, the one route).

    The function and its options, and the parent's parts that are shared with every worker
    rather than opened again there: the limiter (one budget), the breaker, the sticky
    fallback record and the pace (token budget, concurrency slots).
    """

    func: Callable[..., object]
    options: Options
    name: str
    limiter: Limiter | None
    breaker: Breaker | None = None
    in_map: bool = False
    sticky: Sticky | None = None
    pace: Pace | None = None


class RemotePlan(Protocol):
    """What the parent of a map run in other processes needs of a plan: eight members.

    The process, async_process, dask and joblib executors (``executors._dispatch``,
    ``_scheduler``) are typed against it. The items run in workers, on a plan rebuilt there
    from :meth:`parts`; the parent looks the cache up before sending and stores after, counts
    the calls no worker counted, merges the workers' counters and events, and drives the
    recovery of an item whose attempt died with its worker.
    """

    recorder: Recorder
    #: whether :meth:`lookup` can hit (the plan has a cache): without one, items go out as they are
    caching: bool

    def parts(self) -> PlanParts:
        """What a worker rebuilds this plan from; ``options.timeout`` is the hard limit there."""
        ...

    def lookup(self, args: Args, kwargs: Kwargs) -> tuple[Hashable | None, object]:
        """Cache lookup for one call: ``(key, value)``, value ``MISS`` when it must run."""
        ...

    def store(self, key: Hashable | None, value: object) -> None:
        """Store a result computed in a worker under ``key`` from :meth:`lookup`."""
        ...

    def resume(self, args: Args, kwargs: Kwargs, first: Exception) -> Steps:
        """Begin here a call whose first attempt was lost with its worker: its recovery steps."""
        ...

    def settle(self, began: float, attempts: int, error: BaseException | None = None) -> None:
        """End here a call the workers did not count (``error`` None: it succeeded)."""
        ...

    def absorb(self, stats: dict[str, object], events: list[Event]) -> None:
        """A worker's counters and events: merged into this plan's, replayed to its listeners."""
        ...


V = TypeVar("V")


class _InRoom(Generic[V]):
    """A plan attribute kept in one of its rooms (``gate``, ``decisions``), read and set there.

    With ``repick``, setting it picks the fast path again (it depends on the value).
    """

    def __init__(self, room: str, doc: str, *, repick: bool = False) -> None:
        self.room = room
        self.repick = repick
        self.__doc__ = doc
        self.name = ""
        self._get: Callable[[Plan], V] = operator.attrgetter("")

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self._get = operator.attrgetter(f"{self.room}.{name}")

    @overload
    def __get__(self, plan: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, plan: Plan, owner: type | None = None) -> V: ...

    def __get__(self, plan: Plan | None, owner: type | None = None) -> V | Self:
        return self if plan is None else self._get(plan)

    def __set__(self, plan: Plan, value: V) -> None:
        setattr(getattr(plan, self.room), self.name, value)
        if self.repick:
            plan._pick_fast_path()


class _Rooms:
    """The plan's attributes kept in its rooms: a base of :class:`Plan` placed before
    :class:`~opero._fast.FastPath`, which declares them as plain attributes it reads."""

    #: Process workers swap in the parent's limiter (their share of the budget), breaker,
    #: pace (shared slots and budget) and sticky demotions: the fast path must see the first
    #: three, so setting them picks it again.
    sticky = _InRoom[Sticky | None](
        "decisions", "Demoted fallback candidates shared by every call (None: fallback_sticky=False)."
    )
    limiter = _InRoom[Limiter | None]("gate", "The rate limiter of every attempt, or None.", repick=True)
    breaker = _InRoom[Breaker | None]("gate", "The circuit breaker of every attempt, or None.", repick=True)
    pace = _InRoom[Pace | None](
        "gate", "Concurrency slots, the token budget and the server's headers, or None.", repick=True
    )
    in_map = _InRoom[bool](
        "gate", "Items of a map wait for a half-open probe instead of failing fast (set by opmap)."
    )


class Plan(_Rooms, FastPath):
    """Everything one decorated function needs at call time, built once at decoration.

    Args:
        func: the undecorated function (sync or ``async def``).
        options: its resolved options.
        name: its qualified name for stats, logs and errors.
    """

    def __init__(self, func: Callable[..., object], options: Options, name: str) -> None:
        self.func = func
        self.options = options
        self.name = name
        self.is_async: bool = inspect.iscoroutinefunction(func)
        self.recorder = Recorder(name, options)
        self.stats = self.recorder.stats
        #: the pure decisions: retryable?, next candidate?, how long to wait?
        self.decisions = Decisions(func, options, name, self.recorder)
        self.retryable = self.decisions.retryable
        self.recover = self.decisions.recover
        self.sticky_start = self.decisions.sticky_start
        self.timeout = options.timeout
        #: one attempt with its feedback: breaker, rate token, timeout, pushback
        self.gate = Gate(
            func,
            name,
            options.timeout,
            self.recorder,
            self.retryable,
            get_limiter(options, name),
            get_breaker(options, name),
            get_pace(options, name, func),
        )
        pace = self.gate.pace
        if pace is not None and (pace.record is not None or pace.slots is not None):
            self.stats.pace = pace.snapshot  # tokens used, slots in use: in fn.stats
        cache = make_cache(func, options)
        self.keys: KeyBuilder | None = cache[0] if cache is not None else None
        self.cache: CacheBackend | None = cache[1] if cache is not None else None
        #: single-flight: overlapping missed calls of one key run once (``_singleflight``)
        self.flights: Flights | None = Flights() if self.keys is not None else None
        self.caching = self.keys is not None
        self._entry_sync = None
        self._entry_async = None
        self._pick_fast_path()

    def _pick_fast_path(self) -> None:
        # the gate's attempt depends on its pace (a worker sets the parent's): take the current one
        self.attempt_sync, self.attempt_async = self.gate.attempt_sync, self.gate.attempt_async
        super()._pick_fast_path()

    def __reduce__(self) -> tuple[Callable[[PlanParts], Plan], tuple[PlanParts]]:
        # A decorated function defined in __main__ or a notebook travels to process workers by
        # value (cloudpickle), closure and all; the plan is rebuilt there (its locks cannot
        # travel) and keeps the parent's limiter, whose budget is shared across processes.
        return rebuild, (self.parts(),)

    # -- what executors use (``ItemPlan``, ``RemotePlan``; keeps them off the members below) --

    def parts(self) -> PlanParts:
        """What a worker rebuilds this plan from (:func:`rebuild`)."""
        return PlanParts(
            self.func,
            self.options,
            self.name,
            self.limiter,
            self.breaker,
            self.in_map,
            self.sticky,
            self.pace,
        )

    def lookup(self, args: Args, kwargs: Kwargs) -> tuple[Hashable | None, object]:
        """Cache lookup for one call: ``(key, value)``, value ``MISS`` when it must run."""
        return self._lookup(args, kwargs)

    def store(self, key: Hashable | None, value: object) -> None:
        """Store a result computed elsewhere (a worker) under ``key`` from :meth:`lookup`."""
        self._store(key, value)

    def finish(self, ok: bool, began: float, attempts: int, error: BaseException | None = None) -> None:
        """Count the end of a call begun (``stats.begin()``) at ``began`` (``perf_counter``)."""
        self._finish(ok, began, attempts, error)

    def settle(self, began: float, attempts: int, error: BaseException | None = None) -> None:
        """End a call whose attempts ran elsewhere (a worker), begun at ``began``.

        A call with no attempt (``attempts=0``: a cache hit, an item that could not travel)
        is begun here too; one that ran was begun by :meth:`resume`. ``error`` None: success.
        """
        if not attempts:
            self.stats.begin()
        self._finish(error is None, began, attempts, error)

    def resume(self, args: Args, kwargs: Kwargs, first: Exception) -> Steps:
        """Begin here a call whose first attempt failed elsewhere (it died with its worker).

        Returns the steps of :meth:`recover` for the caller to drive; end the call with
        :meth:`settle` (``attempts=1``).
        """
        self.stats.begin()
        return self.recover(args, kwargs, first)

    def absorb(self, stats: dict[str, object], events: list[Event]) -> None:
        """A worker's counters (merged into this plan's) and events (replayed here)."""
        if stats:
            self.stats.merge(stats)
        for event in events:
            self.recorder.replay(event)

    def rescue_sync(self, args: Args, kwargs: Kwargs, first: Exception) -> object:
        """Recover here (sync) a call whose first attempt, made by the caller, raised ``first``.

        For loops that ran the function themselves (the fast chunk loops): the retry
        rounds and fallbacks go on as in any call, the deadline counted from now.
        """
        return self._drive_sync(self.recover(args, kwargs, first))

    # -- cache ---------------------------------------------------------------------------------

    def _lookup(self, args: Args, kwargs: Kwargs) -> tuple[Hashable | None, object]:
        """Return ``(key, value)``; value is MISS when the call must run. Key None: uncached."""
        if self.keys is None or self.cache is None or not testing_state.cache:
            return None, MISS
        key = self.keys.key(args, kwargs)
        if key is None:
            return None, MISS
        value = self.cache.get(key)
        if value is MISS:
            self.stats.add(cache_misses=1)
            self.recorder.emit("cache_miss")
        else:
            self.stats.add(cache_hits=1)
            self.recorder.emit("cache_hit")
        return key, value

    def _store(self, key: Hashable | None, value: object) -> None:
        if key is None or self.cache is None:
            return
        ttl = self.options.cache_ttl
        self.cache.set(key, value, float(ttl()) if callable(ttl) else ttl)

    def _finish(
        self, ok: bool, began: float | None, attempts: int, error: BaseException | None = None
    ) -> None:
        took = None if began is None else _perf() - began
        self.stats.end(ok, took, attempts)
        if ok:
            if self.recorder.wants("success"):
                self.recorder.emit("success", duration=took)
        else:
            self.recorder.emit("failure", error=error, duration=took)

    def _failed_first_sync(
        self, args: Args, kwargs: Kwargs, exc: BaseException, began: float | None
    ) -> object:
        """A fast-path call whose first attempt raised: recover as the general path would."""
        try:
            if not isinstance(exc, Exception):
                raise exc
            value = self._drive_sync(self.recover(args, kwargs, exc, began))
        except BaseException as final:
            self._finish(False, began, 1, final)
            raise
        self._finish(True, began, 1)
        return value

    def _call_sync(self, args: Args, kwargs: Kwargs, began: float | None) -> object:
        """The general driver: cache, limiter, timeout, retries; ``began`` when timed."""
        if self.recorder.wants("start"):
            began = self._announce(began)
        flight: Flight | None = None  # single-flight: the key this call leads
        key, value, args, kwargs = self._opening(args, kwargs, began)
        if value is MISS and key is not None and self.flights is not None:  # a call of this key runs?
            flight, value = self._follow_sync(key, began)
        if value is not MISS:  # a cache hit, or the outcome of the call this one waited for
            return value
        start = began if began is not None else _perf()  # the deadline counts from here
        try:
            try:
                if (
                    self.limiter is None
                    and self.timeout is None
                    and self.breaker is None
                    and self.pace is None
                ):
                    value = self.func(*args, **kwargs)  # the common case, without a frame more
                else:
                    value = self.attempt_sync(args, kwargs)
            except Exception as exc:
                value = self._drive_sync(self.recover(args, kwargs, exc, start))
            if key is not None:
                self._store(key, value)
        except BaseException as exc:
            self._landed(flight, began, None, exc)
            raise
        return self._landed(flight, began, value)

    def _follow_sync(self, key: Hashable, began: float | None) -> tuple[Flight | None, object]:
        """Single-flight: lead ``key`` (a flight, MISS) or wait for the call leading it."""
        assert self.flights is not None
        try:
            flight, value = self.flights.enter_sync(key)  # raises the other call's error
        except BaseException as exc:
            self._finish(False, began, 0, exc)
            raise
        return self._joined(flight, value, began)

    def _joined(
        self, flight: Flight | None, value: object, began: float | None
    ) -> tuple[Flight | None, object]:
        """Finish a call that got another one's value (it ran nothing itself)."""
        if value is not MISS:
            self._finish(True, began, 0)
        return flight, value

    def _landed(
        self, flight: Flight | None, began: float | None, value: object, error: BaseException | None = None
    ) -> object:
        """End a call that ran (``error`` None: with ``value``): hand its outcome to the calls
        that waited for it, finish it."""
        if flight is not None and self.flights is not None:
            self.flights.land(flight, error is None, value if error is None else error)
        self._finish(error is None, began, 1, error)
        return value

    def _opening(
        self, args: Args, kwargs: Kwargs, began: float | None
    ) -> tuple[Hashable | None, object, Args, Kwargs]:
        """Both general drivers' first steps: ``(key, cached value or MISS, args, kwargs)``.

        A cache hit, or a failure of these steps, is finished here; on a miss, sticky fallback
        arguments replace the caller's.
        """
        try:
            key, value = self._lookup(args, kwargs) if self.keys is not None else (None, MISS)
            if value is not MISS:
                self._finish(True, began, 0)
            elif self.sticky is not None:
                args, kwargs = self.sticky_start(args, kwargs)
        except BaseException as exc:
            self._finish(False, began, 1, exc)
            raise
        return key, value, args, kwargs

    def _announce(self, began: float | None) -> float:
        """Emit "start" for both drivers; return when the call began (timed from now if unsampled)."""
        # a listener (hook, DEBUG log) sees every call start, with its duration at the end
        if began is None:
            began = _perf()
        self.recorder.emit("start")
        return began

    def _drive_sync(self, steps: Steps) -> object:
        step = next(steps)
        while True:
            if isinstance(step, Sleep):
                if step.delay > 0:
                    time.sleep(step.delay)
                step = next(steps)
                continue
            try:
                value = self.attempt_sync(step.args, step.kwargs)
            except Exception as exc:
                step = steps.send(exc)
            else:
                steps.close()
                return value

    # -- async driver --------------------------------------------------------------------------

    async def _failed_first_async(
        self, args: Args, kwargs: Kwargs, exc: BaseException, began: float | None
    ) -> object:
        try:
            if not isinstance(exc, Exception):
                raise exc
            value = await self._drive_async(self.recover(args, kwargs, exc, began))
        except BaseException as final:
            self._finish(False, began, 1, final)
            raise
        self._finish(True, began, 1)
        return value

    async def _call_async(self, args: Args, kwargs: Kwargs, began: float | None) -> object:
        """The general driver: cache, limiter, timeout, retries; ``began`` when timed."""
        if self.recorder.wants("start"):
            began = self._announce(began)
        flight: Flight | None = None  # single-flight: the key this call leads
        key, value, args, kwargs = self._opening(args, kwargs, began)
        if value is MISS and key is not None and self.flights is not None:  # a call of this key runs?
            flight, value = await self._follow_async(key, began)
        if value is not MISS:  # a cache hit, or the outcome of the call this one waited for
            return value
        start = began if began is not None else _perf()  # the deadline counts from here
        try:
            try:
                value = await self.attempt_async(args, kwargs)
            except Exception as exc:
                value = await self._drive_async(self.recover(args, kwargs, exc, start))
            self._store(key, value)
        except BaseException as exc:
            self._landed(flight, began, None, exc)
            raise
        return self._landed(flight, began, value)

    async def _follow_async(self, key: Hashable, began: float | None) -> tuple[Flight | None, object]:
        """:meth:`_follow_sync` without blocking the event loop."""
        assert self.flights is not None
        try:
            flight, value = await self.flights.enter_async(key)  # raises the other call's error
        except BaseException as exc:
            self._finish(False, began, 0, exc)
            raise
        return self._joined(flight, value, began)

    async def _drive_async(self, steps: Steps) -> object:
        step = next(steps)
        while True:
            if isinstance(step, Sleep):
                if step.delay > 0:
                    await asyncio.sleep(step.delay)
                step = next(steps)
                continue
            try:
                value = await self.attempt_async(step.args, step.kwargs)
            except Exception as exc:
                step = steps.send(exc)
            else:
                steps.close()
                return value


def rebuild(parts: PlanParts) -> Plan:
    """A parent's plan rebuilt in a worker: the one route (unpickling, pool and dask workers).

    It keeps the parent's limiter, breaker, sticky record and pace and opens none of its own.
    """
    # the limiter comes from the parent: no rate option may open one here (rate_start and
    # adaptive go too, or an adaptive rate fails validation without its rate_limit)
    plan = Plan(parts.func, parts.options.replace(**_SHARED), parts.name)
    plan.limiter, plan.breaker, plan.in_map = parts.limiter, parts.breaker, parts.in_map
    plan.pace = parts.pace  # the parent's token budget and slots, shared across processes
    plan.sticky = parts.sticky  # demotions reach the workers and come back from them
    return plan


#: Options a worker's plan drops: the parent's limiter, breaker and pace replace what they
#: would open.
_SHARED: dict[str, object] = {
    "rate_limit": None,
    "rate_start": None,
    "adaptive": False,
    "rate_limit_scope": None,
    "circuit_breaker": None,
    "token_limit": None,
    "tokens": None,
    "token_budget": None,
    "max_concurrency": None,
}
