"""Each distinct call once: single-flight for plain calls and inside maps.

With ``cache=True``, calls with the same cache key that overlap in time run the function
once; the others receive its outcome, a failure included (they do not call again at once).

- :class:`Flights` serves plain calls (``Plan``'s general drivers, after a cache miss): the
  first call of a key leads, later ones wait for its outcome (threads block, tasks await,
  across threads and event loops). A leader that is interrupted (``KeyboardInterrupt``, a
  cancelled task) hands the key over: one waiting call runs it instead.
- :class:`MapFlights` serves maps, before dispatch: of the items of one map whose key is in
  flight, only the first goes to the executor (thread lanes, event loop, worker processes,
  dask); the others are held aside, without a worker, and receive the leader's outcome when
  it arrives. Held items take room in the map's window, so a streamed map stays bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Any

from ._testing import state as testing_state

if TYPE_CHECKING:
    from ._policy import Plan
    from .executors._chunks import Outcome, Run, Window

__all__ = ["Flight", "Flights", "MapFlights"]

#: what a leader that was interrupted leaves its followers: "run it yourself"
_HANDED_OVER: Any = object()


def _owner() -> tuple[int, int]:
    """Who runs this call: the thread, and the task when one runs (recursion detection)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        task = None
    return threading.get_ident(), id(task) if task is not None else 0


class Flight:
    """One key in flight: the leader's outcome, once known, for every follower."""

    __slots__ = ("future", "key", "owner")

    def __init__(self, key: Hashable, owner: tuple[int, int]) -> None:
        self.key = key
        self.owner = owner
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class Flights:
    """The keys of one function in flight (plain calls; see the module docstring)."""

    __slots__ = ("_lock", "_running")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Flight] = {}

    def claim(self, key: Hashable) -> tuple[Flight | None, Flight | None]:
        """``(led, followed)``: the flight this call leads, or the one it must wait for.

        Both None when the key is already led by this very thread or task (a recursive
        call would wait for itself): the call then runs on its own.
        """
        owner = _owner()
        with self._lock:
            running = self._running.get(key)
            if running is None:
                led = self._running[key] = Flight(key, owner)
                return led, None
        if running.owner == owner:
            return None, None
        return None, running

    def land(self, flight: Flight, ok: bool, value: Any) -> None:
        """The leader's outcome: a value, an ``Exception`` (shared), or anything else
        (``KeyboardInterrupt``, a cancelled task): the followers run the call themselves."""
        with self._lock:
            if self._running.get(flight.key) is flight:
                del self._running[flight.key]
        if ok:
            flight.future.set_result(value)
        elif isinstance(value, Exception):
            flight.future.set_exception(value)
        else:
            flight.future.set_result(_HANDED_OVER)

    def follow_sync(self, flight: Flight) -> Any:
        """Wait for ``flight`` in this thread: its value, or raise its error; ``_HANDED_OVER``."""
        return flight.future.result()

    async def follow_async(self, flight: Flight) -> Any:
        """Await ``flight`` without blocking the loop (its leader may run on another one)."""
        return await asyncio.wrap_future(flight.future)


def handed_over(value: Any) -> bool:
    """True when a followed leader was interrupted: the follower runs the call itself."""
    return value is _HANDED_OVER


# -- maps -------------------------------------------------------------------------------------


class MapFlights:
    """Single-flight over one map's items, in the map layer, before dispatch.

    Args:
        plan: the map's plan (its cache keys decide what is a duplicate).
        prefix, args, kwargs: the map call's own arguments (they are part of every key).
        window: the map's backpressure; every held item takes one slot, like a running one.
    """

    __slots__ = ("_followers", "_leaders", "_lock", "args", "kwargs", "plan", "prefix", "window")

    def __init__(
        self,
        plan: Plan,
        prefix: tuple[Any, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        window: Window,
    ) -> None:
        self.plan = plan
        self.prefix, self.args, self.kwargs = prefix, args, kwargs
        self.window = window
        self._lock = threading.Lock()
        #: index of a keyed item sent to the executor -> its key
        self._leaders: dict[int, Hashable] = {}
        #: key in flight -> the held items waiting for its outcome
        self._followers: dict[Hashable, list[tuple[int, Any]]] = {}

    @staticmethod
    def wanted(plan: Plan) -> bool:
        """Whether a map of ``plan`` dedupes: it caches, and caching is on (``opero.testing``)."""
        return plan.keys is not None and plan.cache is not None and testing_state.cache

    def _key(self, item: Any) -> Hashable | None:
        from .executors._chunks import compose

        keys = self.plan.keys
        assert keys is not None
        try:
            return keys.key(*compose(self.prefix, item, self.args, self.kwargs))
        except Exception:  # a key that cannot be built: the item runs, uncached, as before
            return None

    def source(self, pairs: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        """The pairs to dispatch: a duplicate of a key in flight is held, not yielded."""
        lock, leaders, followers, window = self._lock, self._leaders, self._followers, self.window
        for idx, item in pairs:
            key = self._key(item)
            if key is None:
                yield idx, item
                continue
            with lock:
                held = followers.get(key)
                # A held item takes a window slot of its own; with no room left it runs
                # instead (it will most likely find the leader's result in the cache).
                if held is not None and window.try_acquire(1):
                    held.append((idx, item))
                    continue
                if held is None:
                    followers[key] = []
                    leaders[idx] = key
            yield idx, item

    def expand(self, batch: list[Outcome] | Run) -> list[Outcome] | Run:
        """``batch`` plus one outcome for each held item whose leader is in it."""
        if not self._leaders:
            return batch
        extra: list[Outcome] = []
        with self._lock:
            leaders, followers = self._leaders, self._followers
            for idx, ok, value, _item in batch:
                key = leaders.pop(idx, None)
                if key is None:
                    continue
                held = followers.pop(key, None)
                if held:
                    extra.extend(_shared(held, ok, value))
        if not extra:
            return batch
        self._count(extra)
        return [*batch, *extra]

    def _count(self, shared: list[Outcome]) -> None:
        # A held item is a call answered without running: counted like a cache hit (or,
        # when the leader failed, a failed call with no attempt of its own).
        plan = self.plan
        stats = plan.stats
        now = time.perf_counter()
        for _, ok, value, _ in shared:
            stats.begin()
            if ok:
                stats.add(cache_hits=1)
                plan.finish(True, now, 0)
            else:
                plan.finish(False, now, 0, value)


def _shared(held: list[tuple[int, Any]], ok: bool, value: Any) -> Iterator[Outcome]:
    # The same value or error object for every duplicate, as a cache hit (or a
    # concurrent.futures.Future shared by several waiters) would give.
    for idx, item in held:
        yield (idx, True, value, None) if ok else (idx, False, value, item)
