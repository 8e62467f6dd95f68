"""One attempt with its feedback, for both drivers: the circuit breaker's gate, a rate-limit
token, the function under its timeout, then what the attempt tells the breaker and the
adaptive rate (a 429/503 cuts the rate and holds the budget for the server's Retry-After).

The sync and async attempts differ only in awaiting the limiter and breaker; what a result
means for them is decided once (:meth:`Gate.pushback`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

from ._breaker import Breaker
from ._hints import server_wait, status_of
from ._limit import Limiter
from ._pace import Pace, Ticket
from ._telemetry import Recorder
from ._threads import call_with_timeout

__all__ = ["AttemptAsync", "AttemptSync", "Gate"]

#: One attempt of a sync function: ``(args, kwargs) -> its value``.
AttemptSync = Callable[[tuple[object, ...], dict[str, object]], object]
#: One attempt of an ``async def`` function: ``(args, kwargs) -> awaitable of its value``.
AttemptAsync = Callable[[tuple[object, ...], dict[str, object]], Awaitable[object]]


class Gate:
    """Runs one attempt of a function through its breaker, limiter and timeout.

    Args:
        func: the function.
        name: its qualified name (for timeout messages).
        timeout: seconds per attempt, or None.
        recorder: where counters and events go (its ``stats`` may be swapped by workers).
        retryable: ``retry_on`` as a predicate (a breaker counts only retryable failures).
        limiter: the rate limiter, or None.
        breaker: the circuit breaker, or None.
        pace: ``max_concurrency`` slots, the token budget and the server's headers, or None.

    :attr:`attempt_sync` and :attr:`attempt_async` give the attempt for the current pace:
    without one, the gated attempt itself, so an unpaced attempt pays no wrapper call. The
    plan takes them each time its pace is set (the gate keeps no bound method of its own: a
    reference cycle would keep a worker's rebuilt plans, and their files, alive until a
    garbage collection).
    """

    __slots__ = (
        "_awaited",
        "_reported_rate",
        "breaker",
        "func",
        "in_map",
        "limiter",
        "name",
        "pace",
        "recorder",
        "retryable",
        "timeout",
    )

    def __init__(
        self,
        func: Callable[..., object],
        name: str,
        timeout: float | None,
        recorder: Recorder,
        retryable: Callable[[BaseException], object],
        limiter: Limiter | None,
        breaker: Breaker | None,
        pace: Pace | None = None,
    ) -> None:
        self.func, self.name, self.timeout = func, name, timeout
        #: the same function seen from the async attempt, which awaits what it returns
        self._awaited = cast("Callable[..., Awaitable[object]]", func)
        self.recorder, self.retryable = recorder, retryable
        self.limiter: Limiter | None = limiter
        self.breaker: Breaker | None = breaker
        self.pace: Pace | None = pace
        #: items of a map wait for a half-open probe instead of failing fast (set by opmap)
        self.in_map = False
        self._reported_rate = limiter.rate if limiter is not None else 0.0

    @property
    def attempt_sync(self) -> AttemptSync:
        """One attempt: paced (slot, tokens, the server's headers) around the gated attempt."""
        return self._attempt_sync if self.pace is None else self._paced_sync

    @property
    def attempt_async(self) -> AttemptAsync:
        """:attr:`attempt_sync` of an ``async def`` function."""
        return self._attempt_async if self.pace is None else self._paced_async

    # -- what an attempt's outcome means (both drivers) -------------------------------------

    def waited(self, waited: float) -> None:
        """Count a wait for the rate limit."""
        if waited > 0:
            self.recorder.stats.add(rate_waits=1, rate_wait_seconds=waited)
            self.recorder.emit("rate_wait", delay=waited)

    def breaker_changed(self, state: str | None) -> None:
        """Report a new breaker state."""
        if state is not None:
            self.recorder.emit("breaker", state=state)

    def rate_changed(self, rate: float | None, cut: bool) -> None:
        """Report a new adaptive rate: every cut, a climb each time it gained 10%."""
        if rate is None or (not cut and rate < self._reported_rate * 1.1):
            return
        self._reported_rate = rate
        self.recorder.emit("rate", rate=rate)

    def pushback(self, exc: Exception) -> tuple[bool, float | None, bool]:
        """``(throttled, server wait, counts as a breaker failure)`` for a failed attempt."""
        status = status_of(exc)
        throttled = status in (429, 503)
        # retry_on may answer seconds to wait (0.0 included): any answer but False is retryable
        failure = status != 429 and self.retryable(exc) is not False
        return throttled, server_wait(exc) if throttled else None, failure

    # -- paced: a concurrency slot and the token reservation around each attempt -----------

    def _paced_sync(self, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        pace = self.pace
        assert pace is not None  # bound only with a pace
        ticket = pace.enter(Ticket(pace, args, kwargs, self.limiter), self.recorder.stats)
        try:
            value = self._attempt_sync(args, kwargs)
        except BaseException as exc:
            pace.exit(ticket, exc)
            raise
        pace.exit(ticket, None)
        return value

    async def _paced_async(self, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        pace = self.pace
        assert pace is not None  # bound only with a pace
        ticket = await pace.enter_async(Ticket(pace, args, kwargs, self.limiter), self.recorder.stats)
        try:
            value = await self._attempt_async(args, kwargs)
        except BaseException as exc:
            await pace.exit_async(ticket, exc)
            raise
        await pace.exit_async(ticket, None)
        return value

    # -- sync --------------------------------------------------------------------------------

    def _attempt_sync(self, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        """One attempt: circuit breaker, rate-limit token, then the function under the timeout."""
        probe, epoch = False, 0.0
        breaker, limiter = self.breaker, self.limiter
        while True:
            if breaker is not None:
                probe = breaker.enter(self.in_map, self.breaker_changed)
            if limiter is not None:
                waited, epoch = limiter.take(self.recorder.stats)
                self.waited(waited)
            # The breaker may have opened while this attempt waited for its rate slot.
            if breaker is None or limiter is None or probe or breaker.closed():
                break
        try:
            if self.timeout is None:
                value = self.func(*args, **kwargs)
            else:
                value = call_with_timeout(self.func, args, kwargs, self.timeout, self.name)
        except Exception as exc:
            if breaker is not None or limiter is not None:
                self._failed_sync(exc, epoch, probe)
            raise
        if probe or (limiter is not None and limiter.adaptive is not None):
            self._succeeded_sync(probe)
        return value

    def _failed_sync(self, exc: Exception, epoch: float, probe: bool) -> None:
        throttled, wait, failure = self.pushback(exc)
        if throttled and self.limiter is not None:
            self.rate_changed(self.limiter.throttled(epoch, wait), True)
        if failure and self.breaker is not None:
            self.breaker_changed(self.breaker.failed(probe))

    def _succeeded_sync(self, probe: bool) -> None:
        if self.limiter is not None and self.limiter.adaptive is not None:
            self.rate_changed(self.limiter.succeeded(), False)
        # An attempt let through a closed breaker has nothing to tell it (one store operation
        # saved per call: a redis round trip); the half-open probe's success closes it.
        if self.breaker is not None and probe:
            self.breaker_changed(self.breaker.succeeded())

    # -- async -------------------------------------------------------------------------------

    async def _attempt_async(self, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        """One attempt of an ``async def`` function; the timeout really cancels it."""
        probe, epoch = False, 0.0
        breaker, limiter = self.breaker, self.limiter
        while True:
            if breaker is not None:
                probe = await breaker.enter_async(self.in_map, self.breaker_changed)
            if limiter is not None:
                waited, epoch = await limiter.take_async(self.recorder.stats)
                self.waited(waited)
            # The breaker may have opened while this attempt waited for its rate slot.
            if breaker is None or limiter is None or probe or await breaker.closed_async():
                break
        try:
            value = await self._run_async(args, kwargs)
        except Exception as exc:
            if breaker is not None or limiter is not None:
                throttled, wait, failure = self.pushback(exc)
                if throttled and limiter is not None:
                    self.rate_changed(await limiter.throttled_async(epoch, wait), True)
                if failure and breaker is not None:
                    self.breaker_changed(await breaker.failed_async(probe))
            raise
        if limiter is not None and limiter.adaptive is not None:
            self.rate_changed(await limiter.succeeded_async(), False)
        if breaker is not None and probe:  # see _succeeded_sync
            self.breaker_changed(await breaker.succeeded_async())
        return value

    async def _run_async(self, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        if self.timeout is None:
            return await self._awaited(*args, **kwargs)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._awaited(*args, **kwargs)
        except TimeoutError as exc:
            raise TimeoutError(f"{self.name}: attempt exceeded timeout={self.timeout}s") from exc
