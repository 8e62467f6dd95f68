"""One call: cache lookup -> retry rounds -> fallback candidates -> rate limit -> timeout -> func.

The decisions live once, in :meth:`Plan.recover`, a generator that yields what to do next
(``Attempt`` or ``Sleep``) and is told how each attempt failed. The sync and async drivers
(:meth:`Plan.call_sync`, :meth:`Plan.call_async`) only differ in how they sleep and await.
A call that succeeds at once never builds the generator (fast happy path).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, NamedTuple

from tenacity import wait_exponential

from ._errors import AllFailedError
from ._keys import KeyBuilder
from ._options import Options
from ._telemetry import Recorder
from ._testing import state as testing_state
from ._threads import call_with_timeout as _call_with_timeout
from .stores import MISS, CacheBackend, get_limiter, make_cache

__all__ = ["Attempt", "Plan", "Sleep"]

_perf = time.perf_counter


class Attempt(NamedTuple):
    """Run the function once with these arguments."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Sleep(NamedTuple):
    """Back off before the next round."""

    delay: float


class _RoundState:
    """The one field tenacity's wait strategies read from a RetryCallState."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


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


def _retry_predicate(retry_on: Any) -> Callable[[BaseException], bool]:
    if isinstance(retry_on, type | tuple):
        classes = retry_on
        return lambda exc: isinstance(exc, classes)
    return lambda exc: bool(retry_on(exc))


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
        self.retryable = _retry_predicate(options.retry_on)
        self.fallback = _Fallback(func, options.arg_fallback) if options.arg_fallback else None
        self.recorder = Recorder(name, options)
        self.stats = self.recorder.stats
        self.limiter = get_limiter(options, name)
        cache = make_cache(func, options)
        self.keys: KeyBuilder | None = cache[0] if cache is not None else None
        self.cache: CacheBackend | None = cache[1] if cache is not None else None
        self.timeout = options.timeout
        self._wait = wait_exponential(
            multiplier=options.min_delay,
            exp_base=options.backoff_factor,
            min=options.min_delay,
            max=options.max_delay,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # A decorated function defined in __main__ or a notebook travels to process workers by
        # value (cloudpickle), closure and all; the plan is rebuilt there (its locks cannot
        # travel) and keeps the parent's limiter, whose budget is shared across processes.
        return (_rebuild, (self.func, self.options, self.name, self.limiter))

    # -- decisions (shared by both drivers) --------------------------------------------------

    def delay(self, round_number: int) -> float:
        """Backoff before round ``round_number + 1``: tenacity's exponential wait plus jitter."""
        base = float(self._wait(_RoundState(round_number)))  # type: ignore[arg-type]
        jitter = self.options.jitter
        return base * (1.0 + random.random() * jitter) if jitter else base

    def recover(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], first: Exception
    ) -> Generator[Attempt | Sleep, Exception, None]:
        """Decide what happens after the first attempt failed with ``first``.

        Yields ``Attempt``/``Sleep`` steps; is sent the exception of each failed attempt.
        Raises the error itself when it is not retryable, ``AllFailedError`` when every
        round and candidate failed.
        """
        rec, opts = self.recorder, self.options
        candidates = self.fallback.candidates(args, kwargs) if self.fallback else None
        count = len(candidates) if candidates is not None else 1
        errors: list[BaseException] = []
        error: Exception = first
        attempt = 1
        for rnd in range(1, opts.retries + 2):
            for i in range(count):
                if rnd > 1 or i > 0:  # (round 1, candidate 0) is the attempt already made
                    attempt += 1
                    rec.stats.add(attempts=1)
                    if i > 0:
                        rec.stats.add(fallbacks=1)
                        rec.emit("fallback", attempt=attempt, round=rnd, candidate=i, error=error)
                    if candidates is not None and self.fallback is not None:
                        a, kw = self.fallback.substitute(args, kwargs, candidates[i:])
                    else:
                        a, kw = args, kwargs
                    error = yield Attempt(a, kw)
                if isinstance(error, TimeoutError):
                    rec.stats.add(timeouts=1)
                    rec.emit("timeout", attempt=attempt, round=rnd, candidate=i, error=error)
                if not self.retryable(error):
                    raise error
                errors.append(error)
                rec.emit("attempt_failed", attempt=attempt, round=rnd, candidate=i, error=error)
            if rnd <= opts.retries:
                pause = 0.0 if testing_state.active else self.delay(rnd)
                rec.stats.add(retries=1)
                rec.emit("retry", attempt=attempt, round=rnd, delay=pause, error=error)
                yield Sleep(pause)
        raise AllFailedError(self.name, errors) from error

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

    def _finish(self, ok: bool, began: float, attempts: int, error: BaseException | None = None) -> None:
        self.stats.end(ok, _perf() - began, attempts)
        if ok:
            if self.recorder.wants("success"):
                self.recorder.emit("success")
        else:
            self.recorder.emit("failure", error=error)

    # -- sync driver ---------------------------------------------------------------------------

    def attempt_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt: rate-limit token, then the function under the per-attempt timeout."""
        if self.limiter is not None:
            self._waited(self.limiter.acquire())
        if self.timeout is None:
            return self.func(*args, **kwargs)
        return _call_with_timeout(self.func, args, kwargs, self.timeout, self.name)

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one call of a sync function with the full policy."""
        stats = self.stats
        stats.begin()
        began = _perf()
        try:
            key, value = self._lookup(args, kwargs) if self.keys is not None else (None, MISS)
            if value is not MISS:
                self._finish(True, began, 0)
                return value
            try:
                if self.limiter is None and self.timeout is None:
                    value = self.func(*args, **kwargs)  # the common case, without a frame more
                else:
                    value = self.attempt_sync(args, kwargs)
            except Exception as exc:
                value = self._drive_sync(self.recover(args, kwargs, exc))
            if key is not None:
                self._store(key, value)
        except BaseException as exc:
            self._finish(False, began, 1, exc)
            raise
        self._finish(True, began, 1)
        return value

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

    async def attempt_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt of an ``async def`` function; the timeout really cancels it."""
        if self.limiter is not None:
            self._waited(await self.limiter.acquire_async())
        if self.timeout is None:
            return await self.func(*args, **kwargs)
        try:
            async with asyncio.timeout(self.timeout):
                return await self.func(*args, **kwargs)
        except TimeoutError as exc:
            raise TimeoutError(f"{self.name}: attempt exceeded timeout={self.timeout}s") from exc

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one call of an ``async def`` function with the full policy."""
        self.stats.begin()
        began = _perf()
        try:
            key, value = self._lookup(args, kwargs)
            if value is not MISS:
                self._finish(True, began, 0)
                return value
            try:
                value = await self.attempt_async(args, kwargs)
            except Exception as exc:
                value = await self._drive_async(self.recover(args, kwargs, exc))
            self._store(key, value)
        except BaseException as exc:
            self._finish(False, began, 1, exc)
            raise
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


def _rebuild(func: Callable[..., Any], options: Options, name: str, limiter: Any) -> Plan:
    plan = Plan(func, options.replace(rate_limit=None, rate_limit_scope=None), name)
    plan.limiter = limiter
    return plan
