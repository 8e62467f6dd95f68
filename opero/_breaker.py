"""The circuit breaker's decisions: closed -> open -> half-open probe -> closed.

``circuit_breaker={"failures": F, "window": W, "open": O, "fail_fast": False}``: when F
attempts failed within W seconds the breaker *opens* for O seconds; every call then fails fast
with :class:`~opero.CircuitOpenError` without touching the API (in a map, items wait for the
probe instead, unless ``fail_fast``). After O seconds exactly one caller gets a *half-open
probe*; its success closes the breaker (so does any success), its failure opens it for O
seconds more. A probe that never reports back (its process died) is replaced after O seconds.

What counts as a failure: an attempt that failed with an error ``retry_on`` accepts, except a
429 (the server is up, only busy: that is the adaptive rate's business). Errors that are not
retried (a 404, a bug) say nothing about the API's health.

The state is one small record (``[state, opened_until, probe_until, head, *failure times]``)
shared like the rate budget: per function or per ``rate_limit_scope``, by threads, by the
processes of this host (``stores/host.py``) and by machines (``stores/redis.py`` runs the
three steps below as Lua on the server's clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ._errors import CircuitOpenError
from ._limit import Record
from ._options import BreakerSettings
from ._testing import state as testing_state

__all__ = [
    "STATES",
    "Breaker",
    "breaker_before",
    "breaker_failure",
    "breaker_success",
    "initial",
]

#: State codes in the record, and their names in events.
CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATES = ("closed", "open", "half_open")
#: ``breaker_before`` verdicts.
ALLOW, PROBE, DENY, PENDING = 0, 1, 2, 3
#: Layout of a breaker record (the failure ring follows).
_STATE, _OPENED_UNTIL, _PROBE_UNTIL, _HEAD, _RING = range(5)
#: How often map items waiting for a half-open probe look at its outcome (seconds), and the
#: longest they sleep while the breaker is open (a success elsewhere may close it early).
POLL = 0.02
NAP = 0.25


def initial(failures: int) -> list[float]:
    """A closed breaker's record."""
    return [0.0, 0.0, 0.0, 0.0] + [float("-inf")] * failures


def breaker_before(now: float, v: list[float], open_s: float, skip_wait: float) -> tuple[float, float, float]:
    """May an attempt start? ``(verdict, retry_in, new_state or -1)``: ALLOW, PROBE (this
    attempt is the half-open probe), DENY (open for ``retry_in`` more seconds) or PENDING (a
    probe is out; it is given up after ``retry_in`` seconds).

    ``skip_wait`` (testing mode) treats the open period as over.
    """
    state = v[_STATE]
    if state == CLOSED:
        return ALLOW, 0.0, -1.0
    if state == OPEN:
        if now < v[_OPENED_UNTIL] and not skip_wait:
            return DENY, v[_OPENED_UNTIL] - now, -1.0
        v[_STATE] = HALF_OPEN
        v[_PROBE_UNTIL] = now + open_s
        return PROBE, 0.0, float(HALF_OPEN)
    if now >= v[_PROBE_UNTIL] or skip_wait:  # the probe never reported back: another one
        v[_PROBE_UNTIL] = now + open_s
        return PROBE, 0.0, -1.0
    return PENDING, v[_PROBE_UNTIL] - now, -1.0


def breaker_success(now: float, v: list[float]) -> float:
    """An attempt succeeded: the API works, close. Return the new state or -1."""
    if v[_STATE] == CLOSED:
        return -1.0
    v[_STATE] = CLOSED
    v[_HEAD] = 0.0
    for i in range(_RING, len(v)):
        v[i] = float("-inf")
    return float(CLOSED)


def breaker_failure(
    now: float, v: list[float], failures: float, window: float, open_s: float, probe: float
) -> float:
    """An attempt failed: count it, open at ``failures`` within ``window``; a failed probe
    reopens. Return the new state or -1."""
    state = v[_STATE]
    if state == HALF_OPEN:
        if not probe:
            return -1.0  # an attempt granted before the breaker opened
        v[_STATE] = OPEN
        v[_OPENED_UNTIL] = now + open_s
        return float(OPEN)
    if state == OPEN:
        return -1.0
    n = int(failures)
    head = int(v[_HEAD])
    v[_RING + head % n] = now
    v[_HEAD] = float((head + 1) % n)
    oldest = v[_RING + (head + 1) % n]  # the n-th most recent failure
    if oldest >= now - window:
        v[_STATE] = OPEN
        v[_OPENED_UNTIL] = now + open_s
        return float(OPEN)
    return -1.0


class Breaker:
    """One function's (or scope's) circuit breaker over a shared record.

    Args:
        name: the function or scope, for errors and events.
        record: the shared state (see :func:`initial`).
        settings: ``Options.breaker``: failures, window, open, fail_fast.
    """

    __slots__ = ("fail_fast", "failures", "name", "open", "record", "window")

    def __init__(self, name: str, record: Record, settings: BreakerSettings) -> None:
        self.name = name
        self.record = record
        self.failures = int(settings["failures"])
        self.window = float(settings["window"])
        self.open = float(settings["open"])
        self.fail_fast = bool(settings["fail_fast"])

    def __reduce__(self) -> tuple[object, ...]:
        settings = {"failures": self.failures, "window": self.window, "open": self.open}
        return (Breaker, (self.name, self.record, {**settings, "fail_fast": self.fail_fast}))

    def state(self) -> str:
        """The state now: "closed", "open" or "half_open"."""
        return STATES[int(self.record.apply("breaker_state", _read_state))]

    def closed(self) -> bool:
        """Whether the breaker is closed now (one read of the shared state)."""
        return bool(self.record.apply("breaker_state", _read_state) == CLOSED)

    async def closed_async(self) -> bool:
        """:meth:`closed` without blocking the event loop."""
        return bool(await self.record.apply_async("breaker_state", _read_state) == CLOSED)

    def enter(self, wait: bool, changed: Callable[[str], None]) -> bool:
        """Before an attempt: return True when it is the half-open probe.

        Args:
            wait: wait for the probe while open (a map item) instead of failing fast.
            changed: told the new state's name when this caller changed it.

        Raises:
            CircuitOpenError: the breaker is open and the caller does not wait.
        """
        wait = wait and not self.fail_fast
        while True:
            verdict, retry_in, new = self.record.apply(
                "breaker_before", breaker_before, self.open, 1.0 if testing_state.active and wait else 0.0
            )
            admitted = self._admit(verdict, retry_in, new, wait, changed)
            if admitted is not None:
                return admitted
            time.sleep(_nap(verdict, retry_in))

    async def enter_async(self, wait: bool, changed: Callable[[str], None]) -> bool:
        """:meth:`enter` without blocking the event loop."""
        wait = wait and not self.fail_fast
        while True:
            verdict, retry_in, new = await self.record.apply_async(
                "breaker_before", breaker_before, self.open, 1.0 if testing_state.active and wait else 0.0
            )
            admitted = self._admit(verdict, retry_in, new, wait, changed)
            if admitted is not None:
                return admitted
            await asyncio.sleep(_nap(verdict, retry_in))

    def _admit(
        self, verdict: float, retry_in: float, new: float, wait: bool, changed: Callable[[str], None]
    ) -> bool | None:
        """The decision after one ``breaker_before`` step (both drivers): admitted (True for
        the probe), or None when the caller waits and asks again; raises when it does not wait."""
        if new >= 0:
            changed(STATES[int(new)])
        if verdict <= PROBE:
            return bool(verdict == PROBE)
        if not wait:
            raise CircuitOpenError(self.name, retry_in)
        return None

    def succeeded(self) -> str | None:
        """An attempt succeeded; return the new state's name when this closed the breaker."""
        new = self.record.apply("breaker_success", breaker_success)
        return STATES[int(new)] if new >= 0 else None

    def failed(self, probe: bool) -> str | None:
        """An attempt failed; return the new state's name when this opened the breaker."""
        new = self.record.apply(
            "breaker_failure", breaker_failure, self.failures, self.window, self.open, float(probe)
        )
        return STATES[int(new)] if new >= 0 else None

    async def succeeded_async(self) -> str | None:
        """:meth:`succeeded` without blocking the event loop."""
        new = await self.record.apply_async("breaker_success", breaker_success)
        return STATES[int(new)] if new >= 0 else None

    async def failed_async(self, probe: bool) -> str | None:
        """:meth:`failed` without blocking the event loop."""
        new = await self.record.apply_async(
            "breaker_failure", breaker_failure, self.failures, self.window, self.open, float(probe)
        )
        return STATES[int(new)] if new >= 0 else None

    def __repr__(self) -> str:
        return (
            f"<Breaker {self.name!r}: {self.failures} failures in {self.window:g}s open it for "
            f"{self.open:g}s, store {type(self.record).__name__}>"
        )


def _read_state(now: float, v: list[float]) -> float:
    return v[_STATE]


def _nap(verdict: float, retry_in: float) -> float:
    # Open: sleep towards the probe time, but look again now and then (a success elsewhere
    # may close it). Half-open: poll the probe's outcome.
    if verdict == PENDING:
        return POLL
    return max(0.001, min(retry_in, NAP))
