"""Each distinct call once: single-flight for plain calls and inside maps.

With ``cache=True``, calls with the same cache key that overlap in time run the function
once; the others receive its outcome, a failure included (they do not call again at once).

- :class:`Flights` serves plain calls (``Plan``'s general drivers, after a cache miss): the
  first call of a key leads, later ones wait for its outcome (threads block, tasks await,
  across threads and event loops). A leader that is interrupted (``KeyboardInterrupt``, a
  cancelled task) hands the key over: one waiting call runs it instead.
- maps dedupe their items before dispatch (``opero._map_flights``), so worker processes and
  dask workers get each distinct key once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Hashable
from typing import Final

from .stores import MISS

__all__ = ["Flight", "Flights"]

#: what a leader that was interrupted leaves its followers: "run it yourself"
_HANDED_OVER: Final = object()


class Flight:
    """One key in flight: the leader's outcome, once known, for every follower."""

    __slots__ = ("future", "key", "owner")

    def __init__(self, key: Hashable, owner: int) -> None:
        self.key = key
        self.owner = owner
        #: made by the first follower (under the lock): a flight nobody waits for costs no Future
        self.future: concurrent.futures.Future[object] | None = None


class Flights:
    """The keys of one function in flight (plain calls; see the module docstring).

    Only a cache miss reaches it: a cache hit and an uncached call never pay for it.
    """

    __slots__ = ("_lock", "_running")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Flight] = {}

    def _claim(self, key: Hashable, owner: int) -> tuple[Flight | None, Flight | None]:
        """``(led, followed)``: the flight this call now leads, or the one it must wait for.

        Both None when the key is led by this very thread or task already: a recursive call
        would wait for itself, so it runs on its own.
        """
        with self._lock:
            running = self._running.get(key)
            if running is None:
                led = self._running[key] = Flight(key, owner)
                return led, None
            if running.owner == owner:
                return None, None
            if running.future is None:
                running.future = concurrent.futures.Future()
            return None, running

    def enter_sync(self, key: Hashable) -> tuple[Flight | None, object]:
        """Before running a missed call: ``(flight to land, MISS)`` when this call runs it,
        ``(None, value)`` when another call did; raises that call's error."""
        owner = threading.get_ident()
        while True:
            led, followed = self._claim(key, owner)
            if followed is None:
                return led, MISS
            assert followed.future is not None
            value = followed.future.result()
            if value is not _HANDED_OVER:
                return None, value
            # the leader was interrupted: claim the key again (this call may now lead it)

    async def enter_async(self, key: Hashable) -> tuple[Flight | None, object]:
        """:meth:`enter_sync` for a task: waits without blocking the loop (the leader may run
        in another thread or on another loop)."""
        owner = id(asyncio.current_task())
        while True:
            led, followed = self._claim(key, owner)
            if followed is None:
                return led, MISS
            assert followed.future is not None
            value = await asyncio.wrap_future(followed.future)
            if value is not _HANDED_OVER:
                return None, value

    def land(self, flight: Flight, ok: bool, value: object) -> None:
        """The leader's outcome: a value, an ``Exception`` (shared with the followers), or
        anything else (``KeyboardInterrupt``, a cancelled task): a follower runs the call."""
        with self._lock:
            if self._running.get(flight.key) is flight:
                del self._running[flight.key]
            future = flight.future  # no follower can attach any more
        if future is None:
            return
        if ok:
            future.set_result(value)
        elif isinstance(value, Exception):
            future.set_exception(value)
        else:
            future.set_result(_HANDED_OVER)
