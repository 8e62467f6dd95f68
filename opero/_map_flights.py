"""Each distinct call once, inside a map: duplicates are held before dispatch.

Of the items of one map whose cache key is in flight, only the first goes to the executor
(thread lanes, event loop, worker processes, dask); the others are held aside, without a
worker, and receive the leader's outcome (value or error) when it arrives. Held items take
room in the map's window, so a streamed map stays bounded. Plain calls have their own
single-flight (``opero._singleflight``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator

from ._policy import Plan
from ._testing import state as testing_state
from .executors._chunks import Outcome, Window, compose

__all__ = ["MapFlights"]


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
        prefix: tuple[object, ...],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        window: Window,
    ) -> None:
        self.plan = plan
        self.prefix, self.args, self.kwargs = prefix, args, kwargs
        self.window = window
        self._lock = threading.Lock()
        #: index of a keyed item sent to the executor -> its key
        self._leaders: dict[int, Hashable] = {}
        #: key in flight -> the held items waiting for its outcome
        self._followers: dict[Hashable, list[tuple[int, object]]] = {}

    @staticmethod
    def wanted(plan: Plan) -> bool:
        """Whether a map of ``plan`` dedupes: it caches, and caching is on (``opero.testing``)."""
        return plan.keys is not None and plan.cache is not None and testing_state.cache

    def _key(self, item: object) -> Hashable | None:
        keys = self.plan.keys
        assert keys is not None
        try:
            return keys.key(*compose(self.prefix, item, self.args, self.kwargs))
        except Exception:  # a key that cannot be built: the item runs, uncached, as before
            return None

    def source(self, pairs: Iterator[tuple[int, object]]) -> Iterator[tuple[int, object]]:
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

    def expand(self, batch: list[Outcome]) -> list[Outcome]:
        """``batch`` plus one outcome for each held item whose leader is in it.

        (Runs of consecutive items come only from plans without a cache, so never here.)
        """
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


def _shared(held: list[tuple[int, object]], ok: bool, value: object) -> Iterator[Outcome]:
    # The same value or error object for every duplicate, as a cache hit (or a
    # concurrent.futures.Future shared by several waiters) would give.
    for idx, item in held:
        yield (idx, True, value, None) if ok else (idx, False, value, item)
