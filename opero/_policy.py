"""One call: cache lookup -> retry rounds -> fallback candidates -> rate limit -> timeout -> func.

The decisions live once, in :meth:`Plan.recover`, a generator that yields what to do next
(``Attempt`` or ``Sleep``) and is told how each attempt failed. The sync and async drivers
(:meth:`Plan.call_sync`, :meth:`Plan.call_async`) only differ in how they sleep and await.
A call that succeeds at once never builds the generator (fast happy path).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, NamedTuple

from . import _telemetry
from ._errors import AllFailedError, BudgetExhausted, CircuitOpenError
from ._hints import server_wait, status_of
from ._keys import KeyBuilder
from ._options import Options
from ._pace import Pace, get_pace  # [pace]
from ._singleflight import Flight, Flights
from ._sticky import Sticky, no_candidates
from ._telemetry import _SAMPLE_ALL, _SAMPLE_MASK, LEVELS, Recorder, logger
from ._testing import state as testing_state
from ._threads import call_with_timeout as _call_with_timeout
from .stores import MISS, CacheBackend, get_breaker, get_limiter, make_cache

__all__ = ["Attempt", "Plan", "Sleep"]

_perf = time.perf_counter
_enabled = logger.isEnabledFor
# logging caches isEnabledFor per level in this dict and empties it on every setLevel (any
# logger) or logging.disable; a cached False is the cheapest exact "nobody logs this".
_level_cache: dict[int, bool] = getattr(logger, "_cache", {})
_cached_level = _level_cache.get
_monotonic = time.monotonic


class Attempt(NamedTuple):
    """Run the function once with these arguments."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Sleep(NamedTuple):
    """Back off before the next round."""

    delay: float


class _Round:
    """The one field tenacity's ``wait_exponential`` reads from a ``RetryCallState``."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class _Outcome:
    """The failed attempt, as a tenacity ``Future`` shows it to wait strategies."""

    __slots__ = ("_error", "attempt_number")

    def __init__(self, attempt_number: int, error: BaseException) -> None:
        self.attempt_number = attempt_number
        self._error = error

    failed = True

    def exception(self, timeout: float | None = None) -> BaseException:
        return self._error

    def result(self, timeout: float | None = None) -> Any:
        raise self._error


class _RetryState:
    """What tenacity's wait strategies read from a ``RetryCallState`` (no tenacity import).

    ``attempt_number`` counts rounds (tenacity's attempts are opero's rounds: a round tries
    every fallback candidate once); ``outcome`` holds the round's last error, so
    ``wait_exception`` works; ``seconds_since_start`` runs from the call's start.
    """

    __slots__ = (
        "args",
        "attempt_number",
        "fn",
        "idle_for",
        "kwargs",
        "next_action",
        "outcome",
        "outcome_timestamp",
        "retry_object",
        "start_time",
        "upcoming_sleep",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        round_number: int,
        error: BaseException,
        start_time: float,
        idle_for: float,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.retry_object = None
        self.attempt_number = round_number
        self.outcome = _Outcome(round_number, error)
        self.outcome_timestamp = _perf()
        self.start_time = start_time
        self.idle_for = idle_for
        self.next_action = None
        self.upcoming_sleep = 0.0

    @property
    def seconds_since_start(self) -> float:
        return self.outcome_timestamp - self.start_time


#: Bugs, not bad luck: the default ``retry_on`` lets these propagate at once.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    NameError,
    AttributeError,
    ImportError,
    SyntaxError,
    AssertionError,
    NotImplementedError,
    RecursionError,
)


class _Fallback:
    """Where the ``arg_fallback`` parameter sits and how to swap its candidates in."""

    __slots__ = ("default", "index", "name")

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.name = name
        self.index: int | None = None
        self.default: Any = None
        params = inspect.signature(func).parameters
        p = params.get(name)
        if p is not None:
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                self.index = list(params).index(name)
            if p.default is not inspect.Parameter.empty:
                self.default = p.default

    def candidates(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> list[Any] | tuple[Any, ...] | None:
        if self.name in kwargs:
            value = kwargs[self.name]
        elif self.index is not None and self.index < len(args):
            value = args[self.index]
        else:
            value = self.default
        if isinstance(value, list | tuple) and value:
            return value
        return None

    def substitute(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.name not in kwargs and self.index is not None and self.index < len(args):
            return (*args[: self.index], value, *args[self.index + 1 :]), kwargs
        return args, {**kwargs, self.name: value}


def _is_default(retry_on: Any) -> bool:
    # Options.retry_on's default; an explicit retry_on=Exception (the class) is used as given.
    return type(retry_on) is tuple and retry_on == (Exception,)


def _retry_predicate(retry_on: Any) -> Callable[[BaseException], bool | float]:
    """``exc -> False`` (propagate), ``True`` (retry after the backoff) or seconds to wait."""
    if _is_default(retry_on):
        bugs = PROGRAMMING_ERRORS
        return lambda exc: isinstance(exc, Exception) and not isinstance(exc, bugs)
    if isinstance(retry_on, type | tuple):
        classes = retry_on
        return lambda exc: isinstance(exc, classes)

    def verdict(exc: BaseException) -> bool | float:
        answer = retry_on(exc)
        if isinstance(answer, bool) or answer is None:
            return bool(answer)
        if isinstance(answer, int | float):  # stamina's convention: retry after that many seconds
            return max(0.0, float(answer)) if math.isfinite(answer) else True
        return bool(answer)

    return verdict


def _filter(on: Any) -> Callable[[BaseException], bool] | None:
    """``fallback_on`` as a predicate; None means every retryable error moves on."""
    if on is None:
        return None
    if isinstance(on, type | tuple):
        classes = on
        return lambda exc: isinstance(exc, classes)
    return lambda exc: bool(on(exc))


def _mark_final(error: BaseException, name: str) -> None:
    # An error that ends a call (reraise=True, or not retryable) is not retried again by an
    # outer call of the same function (recursion): see Plan.recover.
    try:
        error.__dict__["_opero_final"] = name
    except (AttributeError, TypeError):  # an exception type without a __dict__
        pass


def _not_open_breaker(retryable: Callable[[BaseException], Any]) -> Callable[[BaseException], Any]:
    # An open circuit breaker means "fail fast": never retried, whatever retry_on says.
    # [pace] A spent token_budget too: no later attempt could run either.
    return lambda exc: not isinstance(exc, CircuitOpenError | BudgetExhausted) and retryable(exc)


class Plan:
    """Everything one decorated function needs at call time, built once at decoration.

    Args:
        func: the undecorated function (sync or ``async def``).
        options: its resolved options.
        name: its qualified name for stats, logs and errors.
    """

    def __init__(self, func: Callable[..., Any], options: Options, name: str) -> None:
        self.func = func
        self.options = options
        self.name = name
        self.is_async = inspect.iscoroutinefunction(func)
        self.retryable = _not_open_breaker(_retry_predicate(options.retry_on))
        self.fallback = _Fallback(func, options.arg_fallback) if options.arg_fallback else None
        self.moves = _filter(options.fallback_on)
        #: demoted fallback candidates shared by every call (None: fallback_sticky=False)
        self.sticky: Sticky | None = (
            Sticky(options.fallback_recheck)
            if self.fallback is not None and options.fallback_sticky
            else None
        )
        self._signature: inspect.Signature | None = None
        self.recorder = Recorder(name, options)
        self.stats = self.recorder.stats
        self._limiter = get_limiter(options, name)
        self._breaker = get_breaker(options, name)
        self.pace: Pace | None = get_pace(options, name, func)  # [pace] tokens, slots, headers
        if self.pace is not None and (self.pace.record is not None or self.pace.slots is not None):
            self.stats.pace = self.pace.snapshot  # [pace]
        #: items of a map wait for a half-open probe instead of failing fast (set by opmap)
        self.in_map = False
        self._reported_rate = self._limiter.rate if self._limiter is not None else 0.0
        cache = make_cache(func, options)
        self.keys: KeyBuilder | None = cache[0] if cache is not None else None
        self.cache: CacheBackend | None = cache[1] if cache is not None else None
        # -- single-flight (opero._singleflight): overlapping missed calls of one key run once
        self.flights: Flights | None = Flights() if self.keys is not None else None
        self.timeout = options.timeout
        self._backoff: Callable[[Any], float] | None = None  # tenacity's wait_exponential, lazily
        self._pick_fast_path()

    @property
    def limiter(self) -> Any:
        """The rate limiter of every attempt, or None."""
        return self._limiter

    @limiter.setter
    def limiter(self, value: Any) -> None:
        # Process workers swap in their share of the budget: the fast path must see it.
        self._limiter = value
        self._pick_fast_path()

    @property
    def breaker(self) -> Any:
        """The circuit breaker of every attempt, or None."""
        return self._breaker

    @breaker.setter
    def breaker(self, value: Any) -> None:
        # Process workers swap in the parent's breaker: the fast path must see it.
        self._breaker = value
        self._pick_fast_path()

    def _pick_fast_path(self) -> None:
        """Decide once which calls may skip the general driver (see ``call_sync``)."""
        callbacks = self.recorder._callbacks
        #: "plain": no cache, limiter or timeout; "memory": a memory cache hit can return at
        #: once; None: every call takes the general path.
        self._fast: str | None = None
        #: a fast call skips its events (start, success, cache_hit): it may only while the
        #: logger would drop all of them, i.e. below the highest of their levels
        self._quiet_level = max(LEVELS["start"], LEVELS["success"])
        #: positional arguments a memory key can be built from without binding (-1: never)
        self._key_arity = -1
        self._entries: Any = None
        if self.keys is None:
            if (
                self.limiter is None
                and self.breaker is None
                and self.timeout is None
                and self.pace is None  # [pace]
                and "success" not in callbacks
                # sticky fallbacks choose the first attempt's candidates; a deadline needs the start
                and self.sticky is None
                and self.options.deadline is None
            ):
                self._fast = "plain"
        elif self.keys.memory_arity >= 0 and not callbacks.keys() & {"success", "cache_hit"}:
            entries = getattr(self.cache, "entries", None)
            if entries is not None:
                self._fast, self._entries, self._key_arity = "memory", entries, self.keys.memory_arity
                self._quiet_level = max(LEVELS["start"], LEVELS["success"], LEVELS["cache_hit"])

    def __reduce__(self) -> tuple[Any, ...]:
        # A decorated function defined in __main__ or a notebook travels to process workers by
        # value (cloudpickle), closure and all; the plan is rebuilt there (its locks cannot
        # travel) and keeps the parent's limiter, whose budget is shared across processes.
        return (
            _rebuild,
            (
                self.func,
                self.options,
                self.name,
                self.limiter,
                self.breaker,
                self.in_map,
                self.sticky,
                self.pace,
            ),
        )

    # -- decisions (shared by both drivers) --------------------------------------------------

    def delay(self, round_number: int) -> float:
        """Built-in backoff before round ``round_number + 1``: tenacity's ``wait_exponential``,
        ``min(max_delay, min_delay * backoff_factor ** (round_number - 1))``, plus jitter."""
        o = self.options
        wait = self._backoff
        if wait is None:
            # tenacity's strategy, imported at the first failure only: `import opero` and
            # calls that succeed never load tenacity (it pulls in tornado where installed).
            from tenacity import wait_exponential

            wait = self._backoff = wait_exponential(
                multiplier=o.min_delay, exp_base=o.backoff_factor, min=o.min_delay, max=o.max_delay
            )
        base = float(wait(_Round(round_number)))  # type: ignore[arg-type]
        jitter = o.jitter
        return base * (1.0 + _jitter() * jitter) if jitter else base

    def pause(
        self,
        round_number: int,
        error: BaseException,
        verdict: bool | float,
        state: tuple[tuple[Any, ...], dict[str, Any], float, float],
    ) -> float:
        """Seconds to sleep after round ``round_number`` failed with ``error``.

        A number returned by a ``retry_on`` predicate wins over the ``wait=`` strategy,
        which wins over the built-in backoff; a server's ``Retry-After`` (429/503) raises
        the result to at least its wait. ``state`` is ``(args, kwargs, started, slept)``.
        """
        if testing_state.active:
            return 0.0
        if not isinstance(verdict, bool):
            pause = verdict
        elif self.options.wait is not None:
            args, kwargs, started, slept = state
            rs = _RetryState(self.func, args, kwargs, round_number, error, started, slept)
            pause = max(0.0, float(self.options.wait(rs)))
        else:
            pause = self.delay(round_number)
        hint = server_wait(error)
        return pause if hint is None or hint <= pause else hint

    def sticky_start(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The first attempt's arguments: the candidates, healthy ones first.

        Only for plans with sticky fallbacks (``self.sticky``); the cache key is built from
        the call's own arguments before this.
        """
        fb, sticky = self.fallback, self.sticky
        if fb is None or sticky is None:
            return args, kwargs
        candidates = fb.candidates(args, kwargs)
        if candidates is None or len(candidates) < 2:
            if candidates is None and fb.default is None:
                no_candidates(self.name, fb.name)  # DEBUG, once per function
            return args, kwargs
        ordered = sticky.order(candidates)  # healthy first, demoted last (never skipped)
        return (args, kwargs) if ordered is candidates else fb.substitute(args, kwargs, ordered)

    def _misbound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """True when the arguments cannot bind to the function's signature (a wrong call)."""
        sig = self._signature
        if sig is None:
            try:
                sig = self._signature = inspect.signature(self.func)
            except (TypeError, ValueError):  # no signature (some builtins): cannot tell
                return False
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            return True
        return False

    def recover(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        first: Exception,
        began: float | None = None,
    ) -> Generator[Attempt | Sleep, Exception, None]:
        """Decide what happens after the first attempt failed with ``first``.

        Yields ``Attempt``/``Sleep`` steps; is sent the exception of each failed attempt.
        Raises the error itself when it is not retryable, ``AllFailedError`` (or with
        ``reraise=True`` the last error) when every round and candidate failed or the
        ``deadline`` (counted from ``began``, a ``perf_counter`` time; default: now) is reached.

        The walk: an error that moves on (``fallback_on``; by default every retryable error)
        goes to the next candidate at once; after the last candidate, or on an error that
        does not move on, the round ends: sleep, then the next round starts from the first
        (healthy) candidate, or retries the same candidate when the error did not move on.
        """
        rec, opts, name = self.recorder, self.options, self.name
        if isinstance(first, TypeError) and self._misbound(args, kwargs):
            _mark_final(first, name)
            raise first  # a wrong call: its own TypeError, at once
        started = _perf() if began is None else began
        deadline = started + opts.deadline if opts.deadline is not None else None
        fb = self.fallback
        candidates = fb.candidates(args, kwargs) if fb is not None else None
        if fb is not None and candidates is None and fb.default is None:
            no_candidates(name, fb.name)  # DEBUG, once per function (also with sticky off)
        count = len(candidates) if candidates is not None else 1
        moves = self.moves
        sticky = self.sticky if candidates is not None and count > 1 else None
        #: candidates that failed before a later one (fallback_on=None): demoted on success
        pending: list[int] = []
        errors: list[BaseException] = []
        error: Exception = first
        attempt = rnd = 1
        i = 0
        slept = 0.0
        stop = ""
        try:
            while True:
                if isinstance(error, TimeoutError):
                    rec.stats.add(timeouts=1)
                    rec.emit("timeout", attempt=attempt, round=rnd, candidate=i, error=error)
                verdict = self._verdict(error)
                if verdict is False:
                    _mark_final(error, name)
                    raise error
                errors.append(error)
                rec.emit("attempt_failed", attempt=attempt, round=rnd, candidate=i, error=error)
                moving = candidates is not None and (moves is None or moves(error))
                if moving and sticky is not None and candidates is not None:
                    if moves is not None:
                        sticky.demote(candidates[i])
                    else:
                        pending.append(i)
                if moving and i + 1 < count:
                    i += 1
                    rec.stats.add(fallbacks=1)
                    rec.emit("fallback", attempt=attempt + 1, round=rnd, candidate=i, error=error)
                else:
                    if rnd > opts.retries:
                        break
                    pause = self.pause(rnd, error, verdict, (args, kwargs, started, slept))
                    if deadline is not None and _perf() + pause >= deadline:
                        stop = f"stopped: deadline={opts.deadline}s would pass during the next backoff"
                        break
                    rec.stats.add(retries=1)
                    rec.emit("retry", attempt=attempt, round=rnd, delay=pause, error=error)
                    yield Sleep(pause)
                    slept += pause
                    rnd += 1
                    if moving:
                        i = sticky.start(candidates) if sticky is not None and candidates else 0
                if deadline is not None and _perf() >= deadline:
                    stop = f"stopped: deadline={opts.deadline}s reached"
                    break
                attempt += 1
                rec.stats.add(attempts=1)
                if candidates is not None and fb is not None:
                    a, kw = fb.substitute(args, kwargs, candidates[i:])
                else:
                    a, kw = args, kwargs
                error = yield Attempt(a, kw)
        except GeneratorExit:
            # the driver closes the generator when an attempt succeeded: candidate i worked,
            # so the ones before it that failed in this call are demoted (fallback_on=None);
            # one after it is left alone (later calls start at i or before it anyway)
            if sticky is not None and candidates is not None:
                for j in set(pending):
                    if j < i:
                        sticky.demote(candidates[j])
            raise
        if opts.reraise:
            n = len(errors)
            for k, earlier in enumerate(errors[:-1], 1):
                error.add_note(f"opero: attempt {k} of {n} failed: {type(earlier).__name__}: {earlier}")
            if stop:
                error.add_note(f"opero: {stop}")
            _mark_final(error, name)
            raise error
        final = AllFailedError(name, errors)
        if stop:
            final.add_note(f"opero: {stop}")
        raise final from error

    def _verdict(self, error: BaseException) -> bool | float:
        """``retry_on``'s answer for ``error``, after the rules no option can change."""
        if isinstance(error, RecursionError):
            return False  # retrying each level of a deep recursion explodes: (retries+1)**depth
        final = error.__dict__.get("_opero_final") if hasattr(error, "__dict__") else None
        if final == self.name or (isinstance(error, AllFailedError) and error.func_name == self.name):
            return False  # an inner call of this same function already gave up
        verdict: bool | float = self.retryable(error)
        return verdict

    # -- the interface executors use (package-internal; keeps them off the members below) ---

    def lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Cache lookup for one call: ``(key, value)``, value ``MISS`` when it must run."""
        return self._lookup(args, kwargs)

    def store(self, key: Any, value: Any) -> None:
        """Store a result computed elsewhere (a worker) under ``key`` from :meth:`lookup`."""
        self._store(key, value)

    def finish(self, ok: bool, began: float, attempts: int, error: BaseException | None = None) -> None:
        """Count the end of a call begun (``stats.begin()``) at ``began`` (``perf_counter``)."""
        self._finish(ok, began, attempts, error)

    def finish_recovery(self, steps: Generator[Attempt | Sleep, Exception, None]) -> Any:
        """Run the steps of :meth:`recover` to the end here (sync): the value, or raise."""
        return self._drive_sync(steps)

    # -- cache ---------------------------------------------------------------------------------

    def _lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
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

    def _store(self, key: Any, value: Any) -> None:
        if key is None or self.cache is None:
            return
        ttl = self.options.cache_ttl
        self.cache.set(key, value, float(ttl()) if callable(ttl) else ttl)

    def _waited(self, waited: float) -> None:
        if waited > 0:
            self.stats.add(rate_waits=1, rate_wait_seconds=waited)
            self.recorder.emit("rate_wait", delay=waited)

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

    # -- sync driver ---------------------------------------------------------------------------

    # -- pushback: the circuit breaker and the adaptive rate hear how each attempt went -------

    def _breaker_changed(self, state: str | None) -> None:
        if state is not None:
            self.recorder.emit("breaker", state=state)

    def _rate_changed(self, rate: float | None, cut: bool) -> None:
        # Every cut is an event; a climb only each time it gained 10% (not one per success).
        if rate is None or (not cut and rate < self._reported_rate * 1.1):
            return
        self._reported_rate = rate
        self.recorder.emit("rate", rate=rate)

    def _pushback(self, exc: Exception) -> tuple[bool, float | None, bool]:
        """``(throttled, server wait, counts as a breaker failure)`` for a failed attempt."""
        status = status_of(exc)
        throttled = status in (429, 503)
        # retry_on may answer seconds to wait (0.0 included): any answer but False is retryable
        failure = status != 429 and self.retryable(exc) is not False
        return throttled, server_wait(exc) if throttled else None, failure

    def _failed_sync(self, exc: Exception, epoch: float, probe: bool) -> None:
        throttled, wait, failure = self._pushback(exc)
        if throttled and self.limiter is not None:
            self._rate_changed(self.limiter.throttled(epoch, wait), True)
        if failure and self.breaker is not None:
            self._breaker_changed(self.breaker.failed(probe))

    def _succeeded_sync(self, probe: bool) -> None:
        if self.limiter is not None and self.limiter.adaptive is not None:
            self._rate_changed(self.limiter.succeeded(), False)
        # An attempt let through a closed breaker has nothing to tell it (one store operation
        # saved per call: a redis round trip); the half-open probe's success closes it.
        if self.breaker is not None and probe:
            self._breaker_changed(self.breaker.succeeded())

    # [pace] begin: a concurrency slot and the token reservation around each attempt
    def attempt_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt, paced (slot, tokens, the server's headers) around :meth:`_attempt_sync`."""
        pace = self.pace
        if pace is None:
            return self._attempt_sync(args, kwargs)
        ticket = pace.enter(args, kwargs, self.limiter, self.stats)
        try:
            value = self._attempt_sync(args, kwargs)
        except BaseException as exc:
            pace.exit(ticket, exc)
            raise
        pace.exit(ticket, None)
        return value

    async def attempt_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """:meth:`attempt_sync` of an ``async def`` function."""
        pace = self.pace
        if pace is None:
            return await self._attempt_async(args, kwargs)
        ticket = await pace.enter_async(args, kwargs, self.limiter, self.stats)
        try:
            value = await self._attempt_async(args, kwargs)
        except BaseException as exc:
            await pace.exit_async(ticket, exc)
            raise
        await pace.exit_async(ticket, None)
        return value

    # [pace] end

    def _attempt_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt: circuit breaker, rate-limit token, then the function under the timeout."""
        probe, epoch = False, 0.0
        breaker, limiter = self.breaker, self.limiter
        while True:
            if breaker is not None:
                probe = breaker.enter(self.in_map, self._breaker_changed)
            if limiter is not None:
                waited, epoch = limiter.take(self.stats)
                self._waited(waited)
            # The breaker may have opened while this attempt waited for its rate slot.
            if breaker is None or limiter is None or probe or breaker.closed():
                break
        try:
            if self.timeout is None:
                value = self.func(*args, **kwargs)
            else:
                value = _call_with_timeout(self.func, args, kwargs, self.timeout, self.name)
        except Exception as exc:
            if breaker is not None or limiter is not None:
                self._failed_sync(exc, epoch, probe)
            raise
        if probe or (limiter is not None and limiter.adaptive is not None):
            self._succeeded_sync(probe)
        return value

    def sync_entry(self) -> Callable[..., Any]:
        """The function ``@opero`` wraps: :meth:`call_sync`'s fast path with ``*args``.

        The same decisions as ``call_sync``, one frame fewer and with the plan's fixed parts
        in closure cells (cheaper to read than attributes); its mutable parts (stats swapped
        by workers, the fast-path kind that a new limiter changes) are read at every call.
        """
        plan, func, recorder, general = self, self.func, self.recorder, self._call_sync
        entries, arity, failed_first = self._entries, self._key_arity, self._failed_first_sync
        quiet = max(LEVELS["start"], LEVELS["success"], LEVELS["cache_hit"])
        tel, state = _telemetry, testing_state

        def entry(*args: Any, **kwargs: Any) -> Any:
            stats = plan.stats
            n = stats.started()
            began = _perf() if not n & _SAMPLE_MASK or n < _SAMPLE_ALL else None
            fast = plan._fast
            if (
                fast is not None
                and recorder.relay is None
                and not tel._subscribers
                and (_cached_level(quiet) is False or not _enabled(quiet))
            ):
                if fast == "plain":
                    try:
                        value = func(*args, **kwargs)
                    except BaseException as exc:
                        return failed_first(args, kwargs, exc, began)
                    stats.quick()
                    if began is not None:
                        stats.mark(_perf() - began)
                    return value
                if len(args) == arity and not kwargs and state.cache:
                    key: Any
                    if arity == 1:
                        key = (args, (type(args[0]),))
                    elif arity == 2:
                        key = (args, (type(args[0]), type(args[1])))
                    else:
                        key = (args, tuple(map(type, args)))
                    try:
                        found = entries.get(key)
                    except TypeError:
                        found = None
                    if found is not None and (found[1] is None or _monotonic() < found[1]):
                        try:
                            entries.move_to_end(key)
                        except KeyError:
                            pass
                        stats.hit()
                        if began is not None:
                            stats.mark(_perf() - began)
                        return found[0]
            return general(args, kwargs, began)

        return entry

    def async_entry(self) -> Callable[..., Any]:
        """The coroutine function ``@opero`` wraps: :meth:`call_async` as one coroutine."""
        plan, func, recorder, general = self, self.func, self.recorder, self._call_async
        failed_first, hit = self._failed_first_async, self._hit
        quiet = max(LEVELS["start"], LEVELS["success"], LEVELS["cache_hit"])
        tel = _telemetry

        async def entry(*args: Any, **kwargs: Any) -> Any:
            stats = plan.stats
            n = stats.started()
            began = _perf() if not n & _SAMPLE_MASK or n < _SAMPLE_ALL else None
            fast = plan._fast
            if (
                fast is not None
                and recorder.relay is None
                and not tel._subscribers
                and (_cached_level(quiet) is False or not _enabled(quiet))
            ):
                if fast == "plain":
                    try:
                        value = await func(*args, **kwargs)
                    except BaseException as exc:
                        return await failed_first(args, kwargs, exc, began)
                    stats.quick()
                    if began is not None:
                        stats.mark(_perf() - began)
                    return value
                if (value := hit(args, kwargs)) is not MISS:
                    stats.hit()
                    if began is not None:
                        stats.mark(_perf() - began)
                    return value
            return await general(args, kwargs, began)

        return entry

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one call of a sync function with the full policy.

        The fast path: a call whose latency is not sampled (see ``_telemetry._SAMPLE_MASK``),
        whose events nobody listens to, either runs the function at once ("plain": no cache,
        limiter or timeout) or returns a memory-cache hit, counting itself lock-free. Anything
        else (a failure, a miss, a sampled call) goes through the general driver.
        """
        stats = self.stats
        n = stats.started()
        # latency is timed for the first calls, then one call in 16 (_telemetry._SAMPLE_MASK)
        began = _perf() if not n & _SAMPLE_MASK or n < _SAMPLE_ALL else None
        fast = self._fast
        if (
            fast is not None
            # nobody listens to this call's events: no worker relay, subscriber or log line
            and self.recorder.relay is None
            and not _telemetry._subscribers
            and (_cached_level(self._quiet_level) is False or not _enabled(self._quiet_level))
        ):
            if fast == "plain":
                try:
                    value = self.func(*args, **kwargs)
                except BaseException as exc:
                    return self._failed_first_sync(args, kwargs, exc, began)
                stats.quick()
                if began is not None:
                    stats.mark(_perf() - began)
                return value
            # A memory-cache hit: the key KeyBuilder.key builds for a positional call, read
            # without binding or locking (MemoryCache.peek, inlined). Types are spelled out
            # for 1 or 2 arguments: tuple(map(type, args)) alone costs more than a whole hit.
            k = self._key_arity
            if len(args) == k and not kwargs and testing_state.cache:
                key: Any
                if k == 1:
                    key = (args, (type(args[0]),))
                elif k == 2:
                    key = (args, (type(args[0]), type(args[1])))
                else:
                    key = (args, tuple(map(type, args)))
                entries = self._entries
                try:
                    entry = entries.get(key)
                except TypeError:  # an unhashable argument: the general path hashes it
                    entry = None
                if entry is not None and (entry[1] is None or _monotonic() < entry[1]):
                    try:
                        entries.move_to_end(key)  # LRU order; another thread may have dropped it
                    except KeyError:
                        pass
                    stats.hit()
                    if began is not None:
                        stats.mark(_perf() - began)
                    return entry[0]
        return self._call_sync(args, kwargs, began)

    def _hit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A memory-cache hit read without binding or locking, or MISS (then: general path)."""
        k = self._key_arity
        if kwargs or len(args) != k or not testing_state.cache:
            return MISS
        # The key Keybuilder.key builds for these arguments; types spelled out for 1 or 2
        # arguments (tuple(map(type, args)) alone costs more than a whole hit).
        key: Any
        if k == 1:
            key = (args, (type(args[0]),))
        elif k == 2:
            key = (args, (type(args[0]), type(args[1])))
        else:
            key = (args, tuple(map(type, args)))
        try:
            entry = self._entries.get(key)
        except TypeError:  # an unhashable argument: the general path hashes it by content
            return MISS
        if entry is None or (entry[1] is not None and _monotonic() >= entry[1]):
            return MISS
        try:
            self._entries.move_to_end(key)  # LRU order; another thread may have dropped it
        except KeyError:
            pass
        return entry[0]

    def _failed_first_sync(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException, began: float | None
    ) -> Any:
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

    def _call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any], began: float | None) -> Any:
        """The general driver: cache, limiter, timeout, retries; ``began`` when timed."""
        if self.recorder.wants("start"):
            began = self._announce(began)
        flight: Flight | None = None  # single-flight: the key this call leads
        ran = 1  # single-flight: 0 while this call waits for another one's outcome
        try:
            key, value, args, kwargs = self._opening(args, kwargs, began)
            if value is not MISS:
                return value
            # -- single-flight (opero._singleflight): a call of this key is running: its outcome
            if key is not None and self.flights is not None:
                ran = 0
                flight, value = self.flights.enter_sync(key)  # raises the other call's error
                if value is not MISS:
                    self._finish(True, began, 0)
                    return value
                ran = 1
            # -- end single-flight
            start = began if began is not None else _perf()  # the deadline counts from here
            try:
                if (
                    self.limiter is None
                    and self.timeout is None
                    and self.breaker is None
                    and self.pace is None  # [pace]
                ):
                    value = self.func(*args, **kwargs)  # the common case, without a frame more
                else:
                    value = self.attempt_sync(args, kwargs)
            except Exception as exc:
                value = self._drive_sync(self.recover(args, kwargs, exc, start))
            if key is not None:
                self._store(key, value)
        except BaseException as exc:
            if flight is not None and self.flights is not None:  # single-flight: share the error
                self.flights.land(flight, False, exc)
            self._finish(False, began, ran, exc)
            raise
        if flight is not None and self.flights is not None:  # single-flight: share the value
            self.flights.land(flight, True, value)
        self._finish(True, began, 1)
        return value

    def _opening(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], began: float | None
    ) -> tuple[Any, Any, tuple[Any, ...], dict[str, Any]]:
        """Both general drivers' first steps: ``(key, cached value or MISS, args, kwargs)``.

        A cache hit is finished here; on a miss, sticky fallback arguments replace the caller's.
        """
        key, value = self._lookup(args, kwargs) if self.keys is not None else (None, MISS)
        if value is not MISS:
            self._finish(True, began, 0)
        elif self.sticky is not None:
            args, kwargs = self.sticky_start(args, kwargs)
        return key, value, args, kwargs

    def _announce(self, began: float | None) -> float:
        """Emit "start" for both drivers; return when the call began (timed from now if unsampled)."""
        # a listener (hook, DEBUG log) sees every call start, with its duration at the end
        if began is None:
            began = _perf()
        self.recorder.emit("start")
        return began

    def _drive_sync(self, steps: Generator[Attempt | Sleep, Exception, None]) -> Any:
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

    async def _attempt_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt of an ``async def`` function; the timeout really cancels it."""
        probe, epoch = False, 0.0
        breaker, limiter = self.breaker, self.limiter
        while True:
            if breaker is not None:
                probe = await breaker.enter_async(self.in_map, self._breaker_changed)
            if limiter is not None:
                waited, epoch = await limiter.take_async(self.stats)
                self._waited(waited)
            # The breaker may have opened while this attempt waited for its rate slot.
            if breaker is None or limiter is None or probe or await breaker.closed_async():
                break
        try:
            value = await self._run_async(args, kwargs)
        except Exception as exc:
            if breaker is not None or limiter is not None:
                throttled, wait, failure = self._pushback(exc)
                if throttled and limiter is not None:
                    self._rate_changed(await limiter.throttled_async(epoch, wait), True)
                if failure and breaker is not None:
                    self._breaker_changed(await breaker.failed_async(probe))
            raise
        if limiter is not None and limiter.adaptive is not None:
            self._rate_changed(await limiter.succeeded_async(), False)
        if breaker is not None and probe:  # see _succeeded_sync
            self._breaker_changed(await breaker.succeeded_async())
        return value

    async def _run_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.timeout is None:
            return await self.func(*args, **kwargs)
        try:
            async with asyncio.timeout(self.timeout):
                return await self.func(*args, **kwargs)
        except TimeoutError as exc:
            raise TimeoutError(f"{self.name}: attempt exceeded timeout={self.timeout}s") from exc

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one call of an ``async def`` function with the full policy (fast path as sync)."""
        stats = self.stats
        n = stats.started()
        began = _perf() if not n & _SAMPLE_MASK or n < _SAMPLE_ALL else None
        fast = self._fast
        if (
            fast is not None
            and self.recorder.relay is None
            and not _telemetry._subscribers
            and (_cached_level(self._quiet_level) is False or not _enabled(self._quiet_level))
        ):
            if fast == "plain":
                try:
                    value = await self.func(*args, **kwargs)
                except BaseException as exc:
                    return await self._failed_first_async(args, kwargs, exc, began)
                stats.quick()
                if began is not None:
                    stats.mark(_perf() - began)
                return value
            if (value := self._hit(args, kwargs)) is not MISS:
                stats.hit()
                if began is not None:
                    stats.mark(_perf() - began)
                return value
        return await self._call_async(args, kwargs, began)

    async def _failed_first_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException, began: float | None
    ) -> Any:
        try:
            if not isinstance(exc, Exception):
                raise exc
            value = await self._drive_async(self.recover(args, kwargs, exc, began))
        except BaseException as final:
            self._finish(False, began, 1, final)
            raise
        self._finish(True, began, 1)
        return value

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any], began: float | None) -> Any:
        """The general driver: cache, limiter, timeout, retries; ``began`` when timed."""
        if self.recorder.wants("start"):
            began = self._announce(began)
        flight: Flight | None = None  # single-flight: the key this call leads
        ran = 1  # single-flight: 0 while this call waits for another one's outcome
        try:
            key, value, args, kwargs = self._opening(args, kwargs, began)
            if value is not MISS:
                return value
            # -- single-flight (opero._singleflight): a call of this key is running: its outcome
            if key is not None and self.flights is not None:
                ran = 0
                flight, value = await self.flights.enter_async(key)  # raises the other call's error
                if value is not MISS:
                    self._finish(True, began, 0)
                    return value
                ran = 1
            # -- end single-flight
            start = began if began is not None else _perf()  # the deadline counts from here
            try:
                value = await self.attempt_async(args, kwargs)
            except Exception as exc:
                value = await self._drive_async(self.recover(args, kwargs, exc, start))
            self._store(key, value)
        except BaseException as exc:
            if flight is not None and self.flights is not None:  # single-flight: share the error
                self.flights.land(flight, False, exc)
            self._finish(False, began, ran, exc)
            raise
        if flight is not None and self.flights is not None:  # single-flight: share the value
            self.flights.land(flight, True, value)
        self._finish(True, began, 1)
        return value

    async def _drive_async(self, steps: Generator[Attempt | Sleep, Exception, None]) -> Any:
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


def _rebuild(
    func: Callable[..., Any],
    options: Options,
    name: str,
    limiter: Any,
    breaker: Any = None,
    in_map: bool = False,
    sticky: Sticky | None = None,
    pace: Pace | None = None,
) -> Plan:
    plan = Plan(
        func, options.replace(rate_limit=None, rate_limit_scope=None, circuit_breaker=None, **_NO_PACE), name
    )
    plan.limiter, plan.breaker, plan.in_map = limiter, breaker, in_map
    plan.pace = pace  # [pace] the parent's token budget and slots, shared across processes
    plan._pick_fast_path()
    plan.sticky = sticky  # demotions reach the workers and come back from them
    return plan


#: [pace] A worker's plan takes the parent's pace; it builds none of its own.
_NO_PACE = {"token_limit": None, "tokens": None, "token_budget": None, "max_concurrency": None}


def _jitter() -> float:
    # random (with bisect and hashlib's sha512) is imported at the first backoff, not at
    # `import opero`: a call that never retries never needs it.
    import random

    return random.random()
