"""The fast path, written once: which calls may skip the general driver, and the hot path.

A call that succeeds at once, or a memory-cache hit, costs a few hundred nanoseconds: it
never builds the retry machinery, takes no lock and emits no event, as long as nobody
would notice (:meth:`FastPath.fast_now`, the one rule). ``@opero``'s wrappers are the
entries themselves (:meth:`FastPath.sync_entry`, :meth:`FastPath.async_entry`);
:meth:`FastPath.call_sync`/:meth:`FastPath.call_async` (executors, the cell magic) go
through them, and the thread executors' chunk loops ask the same rule.

A fast call is one whose latency is not sampled (see ``_telemetry.SAMPLE_MASK``) and that
the rule lets skip the driver: it runs the function at once or returns a memory-cache hit,
counting itself lock-free. Anything else (a failure, a miss, a listener) goes through the
general driver. The plan's fixed parts sit in the entries' closure cells; its mutable
parts (stats swapped by workers, the fast kind a new limiter changes) are read per call.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import cast

from . import _telemetry
from ._breaker import Breaker
from ._compat import level_cache
from ._decisions import Args, Kwargs
from ._keys import KeyBuilder
from ._limit import Limiter
from ._options import Options
from ._pace import Pace
from ._sticky import Sticky
from ._telemetry import LEVELS, SAMPLE_ALL, SAMPLE_MASK, FunctionStats, Recorder, logger
from ._testing import state as testing_state
from .stores import MISS, CacheBackend

__all__ = ["FastPath"]

_perf = time.perf_counter
_enabled = logger.isEnabledFor
_level_cache = level_cache(logger)  # see _compat.level_cache
_cached_level = _level_cache.get
_monotonic = time.monotonic
#: a fast call skips its start, success and cache_hit events: only while the logger drops them
_QUIET = max(LEVELS["start"], LEVELS["success"], LEVELS["cache_hit"])


class FastPath:
    """The fast-path half of :class:`~opero._policy.Plan` (a mixin: the plan provides the rest)."""

    # provided by the plan
    func: Callable[..., object]
    options: Options
    stats: FunctionStats
    recorder: Recorder
    keys: KeyBuilder | None
    cache: CacheBackend | None
    timeout: float | None
    limiter: Limiter | None
    breaker: Breaker | None
    pace: Pace | None
    sticky: Sticky | None
    _entry_sync: Callable[..., object] | None
    _entry_async: Callable[..., Awaitable[object]] | None

    def _call_sync(self, args: Args, kwargs: Kwargs, began: float | None) -> object:
        raise NotImplementedError

    def _call_async(
        self, args: Args, kwargs: Kwargs, began: float | None
    ) -> Coroutine[object, object, object]:
        raise NotImplementedError

    def _failed_first_sync(
        self, args: Args, kwargs: Kwargs, exc: BaseException, began: float | None
    ) -> object:
        raise NotImplementedError

    def _failed_first_async(
        self, args: Args, kwargs: Kwargs, exc: BaseException, began: float | None
    ) -> Coroutine[object, object, object]:
        raise NotImplementedError

    def _pick_fast_path(self) -> None:
        """Decide once which calls may skip the general driver (see ``call_sync``)."""
        callbacks = self.recorder.callbacks
        #: "plain": no cache, limiter or timeout; "memory": a memory cache hit can return at
        #: once; None: every call takes the general path.
        self._fast: str | None = None
        #: a fast call skips its events (start, success, cache_hit): it may only while the
        #: logger would drop all of them, i.e. below the highest of their levels
        self._quiet_level = max(LEVELS["start"], LEVELS["success"])
        #: positional arguments a memory key can be built from without binding (-1: never)
        self._key_arity = -1
        #: the memory cache's entries (key -> (value, expiry)), read by "memory" fast calls
        self._entries: OrderedDict[Hashable, tuple[object, float | None]] = OrderedDict()
        if self.keys is None:
            if (
                self.limiter is None
                and self.breaker is None
                and self.timeout is None
                and self.pace is None
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

    def fast_now(self) -> str | None:
        """The one rule for skipping the general driver: the fast kind, or None.

        "plain" (run the function at once) or "memory" (a memory-cache hit returns at once)
        when the plan allows it (see ``_pick_fast_path``) and nobody listens to this call's
        events right now: no worker relay, no subscriber, a logger that drops them. Read by
        ``@opero``'s entries (sync and async), :meth:`call_sync`/:meth:`call_async` (the
        executors and the cell magic) and the thread executors' chunk loops.
        """
        fast = self._fast
        if (
            fast is not None
            and self.recorder.relay is None
            and not _telemetry.subscribers
            and (_cached_level(self._quiet_level) is False or not _enabled(self._quiet_level))
        ):
            return fast
        return None

    def sync_entry(self, plan: FastPath | None = None) -> Callable[..., object]:
        """The sync hot path, written once: the function ``@opero`` wraps (see the module).

        ``plan``: what the entry reads the plan through (default: this plan; :meth:`call_sync`
        passes a weak proxy, so the entry it keeps makes no reference cycle with the plan).
        """
        plan = self if plan is None else plan
        func, recorder, tel, state = self.func, self.recorder, _telemetry, testing_state
        quiet = _QUIET  # the highest level of the events a fast call skips

        def entry(*args: object, **kwargs: object) -> object:
            stats = plan.stats
            n = stats.started()
            # latency is timed for the first calls, then one call in 16 (SAMPLE_MASK)
            began = _perf() if not n & SAMPLE_MASK or n < SAMPLE_ALL else None
            # fast_now(), inlined (a method call costs a third of a fast call)
            fast = plan._fast
            if fast is not None and (
                recorder.relay is not None
                or tel.subscribers
                or (_cached_level(quiet) is not False and _enabled(quiet))
            ):
                fast = None
            if fast == "plain":
                try:
                    value = func(*args, **kwargs)
                except BaseException as exc:
                    return plan._failed_first_sync(args, kwargs, exc, began)
                stats.quick()
            elif fast is None or len(args) != plan._key_arity or kwargs or not state.cache:
                return plan._call_sync(args, kwargs, began)
            else:
                # a memory-cache hit, as _hit reads it, inlined: a call costs a sixth of a hit
                key: tuple[tuple[object, ...], tuple[type, ...]]
                if len(args) == 1:
                    key = (args, (type(args[0]),))
                elif len(args) == 2:
                    key = (args, (type(args[0]), type(args[1])))
                else:
                    key = (args, tuple(map(type, args)))
                try:
                    found = plan._entries.get(key)
                except TypeError:  # an unhashable argument: the general path hashes it
                    found = None
                if found is None or (found[1] is not None and _monotonic() >= found[1]):
                    return plan._call_sync(args, kwargs, began)
                try:
                    plan._entries.move_to_end(key)  # LRU order; another thread may have dropped it
                except KeyError:
                    pass
                stats.hit()
                value = found[0]
            if began is not None:
                stats.mark(_perf() - began)
            return value

        return entry

    def async_entry(self, plan: FastPath | None = None) -> Callable[..., Awaitable[object]]:
        """The async hot path, written once: the coroutine function ``@opero`` wraps."""
        plan = self if plan is None else plan
        # an async plan's function is a coroutine function (said once here, not per call)
        func = cast("Callable[..., Awaitable[object]]", self.func)
        recorder, tel = self.recorder, _telemetry
        quiet = _QUIET  # the highest level of the events a fast call skips

        async def entry(*args: object, **kwargs: object) -> object:
            stats = plan.stats
            n = stats.started()
            began = _perf() if not n & SAMPLE_MASK or n < SAMPLE_ALL else None
            # fast_now(), inlined (a method call costs a third of a fast call)
            fast = plan._fast
            if fast is not None and (
                recorder.relay is not None
                or tel.subscribers
                or (_cached_level(quiet) is not False and _enabled(quiet))
            ):
                fast = None
            if fast == "plain":
                try:
                    value = await func(*args, **kwargs)
                except BaseException as exc:
                    return await plan._failed_first_async(args, kwargs, exc, began)
                stats.quick()
            elif fast is None or (value := plan._hit(args, kwargs)) is MISS:
                return await plan._call_async(args, kwargs, began)
            else:
                stats.hit()
            if began is not None:
                stats.mark(_perf() - began)
            return value

        return entry

    def call_sync(self, args: Args, kwargs: Kwargs) -> object:
        """Run one call of a sync function with the full policy (the hot path of :meth:`sync_entry`)."""
        entry = self._entry_sync
        if entry is None:
            # through a weak proxy: an entry kept on the plan must not keep the plan alive
            # (a cycle frees its limiter file only at the next garbage collection)
            entry = self._entry_sync = self.sync_entry(weakref.proxy(self))
        return entry(*args, **kwargs)

    async def call_async(self, args: Args, kwargs: Kwargs) -> object:
        """Run one call of an ``async def`` function with the full policy (:meth:`async_entry`)."""
        entry = self._entry_async
        if entry is None:
            entry = self._entry_async = self.async_entry(weakref.proxy(self))
        return await entry(*args, **kwargs)

    def _hit(self, args: Args, kwargs: Kwargs) -> object:
        """A memory-cache hit read without binding or locking, or MISS (then: general path)."""
        k = self._key_arity
        if kwargs or len(args) != k or not testing_state.cache:
            return MISS
        # The key KeyBuilder.key builds for these arguments; types spelled out for 1 or 2
        # arguments (tuple(map(type, args)) alone costs more than a whole hit).
        key: tuple[tuple[object, ...], tuple[type, ...]]
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
