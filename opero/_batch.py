"""``@opmap(batch_size=N)``: one request per batch of up to N items, results per item.

The map's items are looked up in the cache and deduplicated one by one first (only missing,
distinct items are sent); the rest are cut into batches of up to N, and each batch is one
call of the function, ``func(batch, *args, **kwargs)``, through its own plan: retries,
fallbacks, timeout, rate limit, ``max_concurrency`` and circuit breaker apply per batch call,
in every mode (the executors see each batch as one item): one rate token and one
concurrency slot per request. ``tokens=`` is called per item (the item in the batch's place)
and summed for the batch call's estimate, on the function's own token budget.

The function returns a list of as many results, in order; an element that is an exception
instance fails that item alone. A batch whose call still fails after its retries is split in
halves and each half called again, down to single items, so one poison item fails alone
(about 2·log2(N) extra calls); the halves run where the map's results arrive (the caller's
thread or loop). A returned list of the wrong length fails the batch's items with a
``ConfigurationError`` naming both lengths.

``fn.stats`` counts requests: calls, attempts, retries and failures are batch calls; the
items answered from the cache (or by a duplicate) are cache hits. Progress counts items.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator
from typing import TypeVar

from ._errors import ConfigurationError
from ._pace import Pace
from ._policy import Plan, PlanParts, rebuild
from ._progress import MapProgress
from ._telemetry import registry
from ._testing import state as testing_state
from .executors import sync_outcomes
from .executors._chunks import MapCall, Outcome, Spread, Window, compose
from .stores import MISS

__all__ = ["AsyncDriver", "BatchMap", "SummedTokens", "batch_plan", "chunks"]

T = TypeVar("T")

#: the map's async source of outcomes: ``(call, pairs, window) -> batches of outcomes``
AsyncDriver = Callable[[MapCall, Iterator[tuple[int, object]], Window], AsyncIterator[list[Outcome]]]

_UNBOUNDED = 1 << 62


def batch_plan(plan: Plan) -> Plan:
    """The plan of the batch calls: ``plan``'s function and options, without its cache (the
    cache is per item), sharing its counters, rate budget, breaker, sticky fallbacks, token
    budget and concurrency slots (one rate token and one slot per request)."""
    # rebuilt as a worker's plan is: the item plan's shared parts, none opened again
    parts = PlanParts(plan.func, plan.options.replace(cache=False), plan.name, plan.limiter)
    batches = rebuild(
        parts._replace(breaker=plan.breaker, in_map=True, sticky=plan.sticky, pace=_batch_pace(plan))
    )
    batches.stats = batches.recorder.stats = plan.stats
    batches._pick_fast_path()  # the fast path must see the pace (it skips it)
    registry.put(plan.name, plan.stats)  # building the plan registered fresh counters
    return batches


class SummedTokens:
    """A batch call's ``tokens=`` estimate: the user's per-item ``tokens`` summed over the batch.

    It receives the batch call's arguments by name, as ``tokens`` does; the batch (a list)
    sits in the item's parameter, ``param``, and each item is put in its place in turn.

    Args:
        tokens: the user's per-item estimate.
        param: the name of the parameter that receives the batch (set per map call).
    """

    __slots__ = ("param", "tokens")

    def __init__(self, tokens: Callable[..., float], param: str | None) -> None:
        self.tokens = tokens
        self.param = param

    def __call__(self, /, **bound: object) -> float:
        param = self.param
        batch = bound.get(param) if param is not None else None
        if param is None or not isinstance(batch, list):
            return float(self.tokens(**bound))  # not a batch call's arguments: as given
        total = 0.0
        for item in batch:
            bound[param] = item
            total += float(self.tokens(**bound))
        bound[param] = batch
        return total


def _batch_pace(plan: Plan) -> Pace | None:
    """The item plan's pace for batch calls: the same record and slots, ``tokens`` summed."""
    pace = plan.pace
    if pace is None:
        return None
    tokens = SummedTokens(pace.tokens, _item_param(plan.func, 0)) if pace.tokens is not None else None
    return Pace(
        pace.name, tokens, pace.token_rate, pace.budget, pace.max_delay, pace.record, pace.slots, pace.func
    )


def _item_param(func: Callable[..., object], position: int) -> str | None:
    """The name of the parameter at ``position`` (the one that receives a batch), or None."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if position < len(params) and params[position].kind in positional:
        return params[position].name
    return None


class _Slots:
    """The items of one batch map: which are answered, which are sent, in which batch."""

    def __init__(self, items: list[object]) -> None:
        self.items = items
        #: batch number -> the item indices it carries
        self.batches: list[list[int]] = []
        #: leader index -> indices of its duplicates (same cache key)
        self.followers: dict[int, list[int]] = {}
        self.keys: dict[int, Hashable] = {}


class BatchMap:
    """One list map with ``batch_size``: cache, dedupe, batches, bisection, per-item outcomes.

    Args:
        call: the map call (its plan is the item plan: keys and cache).
        batches: the plan of the batch calls (:func:`batch_plan`).
        size: ``batch_size``.
        account: the map's bookkeeping of a list of outcomes (failure log, progress).
    """

    def __init__(
        self,
        call: MapCall,
        batches: Plan,
        size: int,
        account: Callable[[list[Outcome], MapProgress], None],
    ) -> None:
        self.call = call
        self.plan = call.plan
        self.batches = batches
        self.size = size
        self.account = account
        tokens = batches.pace.tokens if batches.pace is not None else None
        if isinstance(tokens, SummedTokens) and call.prefix:
            # a bound method's map: the batch goes after ``self`` (the prefix)
            tokens.param = _item_param(self.plan.func, len(call.prefix))

    # -- before dispatch ---------------------------------------------------------------------

    def prepare(self, items: list[object], results: list[object], progress: MapProgress) -> _Slots:
        """Answer cache hits and duplicates' leaders; cut the rest into batches."""
        for item in items:
            if type(item) is Spread:
                raise ConfigurationError(
                    f"{self.plan.name}: batch_size maps one column (a list of items); "
                    "several columns per row cannot be batched"
                )
        slots = _Slots(items)
        plan = self.plan
        caching = plan.keys is not None and plan.cache is not None and testing_state.cache
        leaders: dict[Hashable, int] = {}
        send: list[int] = []
        hits: list[Outcome] = []
        for idx, item in enumerate(items):
            key = None
            if caching:
                key, value = self._lookup(item)
                if value is not MISS:
                    hits.append((idx, True, value, None))
                    continue
            if key is not None:
                first = leaders.setdefault(key, idx)
                if first != idx:
                    slots.followers.setdefault(first, []).append(idx)
                    continue
                slots.keys[idx] = key
            send.append(idx)
        if hits:
            self._answered(hits, results, progress)
        slots.batches = [send[i : i + self.size] for i in range(0, len(send), self.size)]
        return slots

    def _lookup(self, item: object) -> tuple[Hashable | None, object]:
        began = time.perf_counter()
        call = self.call
        key, value = self.plan.lookup(*compose(call.prefix, item, call.args, call.kwargs))
        if value is not MISS:
            stats = self.plan.stats
            stats.begin()
            self.plan.finish(True, began, 0)
        return key, value

    def pairs(self, slots: _Slots) -> Iterator[tuple[int, object]]:
        """What the executor runs: ``(batch number, [items])``."""
        items = slots.items
        for b, indices in enumerate(slots.batches):
            yield b, [items[i] for i in indices]

    # -- results -----------------------------------------------------------------------------

    def land(self, slots: _Slots, batch: int, ok: bool, value: object) -> tuple[list[Outcome], list[int]]:
        """Per-item outcomes of one finished batch call, and the indices to bisect (if any)."""
        indices = slots.batches[batch]
        if not ok:
            if len(indices) > 1:
                return [], indices
            return [(indices[0], False, value, slots.items[indices[0]])], []
        return self._split(slots, indices, value), []

    def _split(self, slots: _Slots, indices: list[int], value: object) -> list[Outcome]:
        items = slots.items
        try:
            values = list(value) if isinstance(value, Iterable) else None
        except TypeError:
            values = None
        if values is None or len(values) != len(indices):
            got = "a " + type(value).__name__ if values is None else f"{len(values)} results"
            error = ConfigurationError(
                f"{self.plan.name} got a batch of {len(indices)} items and returned {got}: "
                f"a batch function must return a list of {len(indices)} results, one per item, in order"
            )
            return [(i, False, error, items[i]) for i in indices]
        out: list[Outcome] = []
        for i, v in zip(indices, values):
            if isinstance(v, BaseException):
                out.append((i, False, v, items[i]))
            else:
                out.append((i, True, v, None))
        return out

    def finish(
        self, slots: _Slots, outs: list[Outcome], results: list[object], progress: MapProgress
    ) -> None:
        """Store successes per item, copy outcomes to duplicates, place and count them."""
        plan = self.plan
        shared: list[Outcome] = []
        for idx, ok, value, _ in outs:
            key = slots.keys.pop(idx, None)
            if ok and key is not None:
                plan.store(key, value)
            for j in slots.followers.pop(idx, ()):
                # a duplicate answered by its leader: a call without an attempt (a cache hit)
                plan.stats.begin()
                if ok:
                    plan.stats.add(cache_hits=1)
                plan.finish(ok, time.perf_counter(), 0, None if ok else value)
                shared.append((j, ok, value, None if ok else slots.items[j]))
        self._answered([*outs, *shared], results, progress)

    def _answered(self, outs: list[Outcome], results: list[object], progress: MapProgress) -> None:
        self.account(outs, progress)
        for idx, _, value, _ in outs:
            results[idx] = value

    # -- bisection -----------------------------------------------------------------------------

    @staticmethod
    def halves(indices: list[int]) -> list[list[int]]:
        """The two halves of a failed batch's items."""
        mid = len(indices) // 2
        return [indices[:mid], indices[mid:]]

    def bisect_sync(self, slots: _Slots, indices: list[int]) -> list[Outcome]:
        """Call the halves of a failed batch, splitting again, down to single items."""
        out: list[Outcome] = []
        todo = self.halves(indices)
        while todo:
            part = todo.pop(0)
            ok, value = self._call_sync(slots, part)
            out.extend(self._part(slots, part, ok, value, todo))
        return out

    async def bisect_async(self, slots: _Slots, indices: list[int]) -> list[Outcome]:
        """:meth:`bisect_sync` for ``async def`` functions."""
        out: list[Outcome] = []
        todo = self.halves(indices)
        while todo:
            part = todo.pop(0)
            ok, value = await self._call_async(slots, part)
            out.extend(self._part(slots, part, ok, value, todo))
        return out

    def _part(
        self, slots: _Slots, part: list[int], ok: bool, value: object, todo: list[list[int]]
    ) -> list[Outcome]:
        if ok:
            return self._split(slots, part, value)
        if len(part) > 1:
            todo[:0] = self.halves(part)
            return []
        return [(part[0], False, value, slots.items[part[0]])]

    def _args(self, slots: _Slots, part: list[int]) -> tuple[tuple[object, ...], dict[str, object]]:
        call = self.call
        return compose(call.prefix, [slots.items[i] for i in part], call.args, call.kwargs)

    def _call_sync(self, slots: _Slots, part: list[int]) -> tuple[bool, object]:
        args, kwargs = self._args(slots, part)
        try:
            return True, self.batches.call_sync(args, kwargs)
        except Exception as exc:
            return False, exc

    async def _call_async(self, slots: _Slots, part: list[int]) -> tuple[bool, object]:
        args, kwargs = self._args(slots, part)
        try:
            if self.batches.is_async:
                return True, await self.batches.call_async(args, kwargs)
            return True, await asyncio.to_thread(self.batches.call_sync, args, kwargs)
        except Exception as exc:
            return False, exc

    # -- the two drivers ---------------------------------------------------------------------

    def run_sync(self, items: list[object], results: list[object], progress: MapProgress) -> None:
        """The whole map from sync code: ``results[i]`` gets item i's result (or exception)."""
        slots = self.prepare(items, results, progress)
        if not slots.batches:
            return
        bcall = self._batch_call(len(slots.batches))
        for outs in sync_outcomes(bcall, self.pairs(slots), Window(_UNBOUNDED)):
            for b, ok, value, _ in outs:
                done, failed = self.land(slots, b, ok, value)
                if failed:
                    done = self.bisect_sync(slots, failed)
                self.finish(slots, done, results, progress)

    async def run_async(
        self,
        items: list[object],
        results: list[object],
        progress: MapProgress,
        batches: AsyncDriver,
    ) -> None:
        """The whole map from async code (``batches``: the map's async outcome source)."""
        slots = self.prepare(items, results, progress)
        if not slots.batches:
            return
        bcall = self._batch_call(len(slots.batches))
        async for outs in batches(bcall, self.pairs(slots), Window(_UNBOUNDED)):
            for b, ok, value, _ in outs:
                done, failed = self.land(slots, b, ok, value)
                if failed:
                    done = await self.bisect_async(slots, failed)
                self.finish(slots, done, results, progress)

    def _batch_call(self, total: int) -> MapCall:
        # the executors see each batch as one item of the batch plan
        c = self.call
        return dataclasses.replace(c, plan=self.batches, total=total)


def chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """Consecutive segments of ``items`` (a streamed batch map runs one segment at a time)."""
    while True:
        seg: list[T] = []
        for item in items:
            seg.append(item)
            if len(seg) >= size:
                break
        if not seg:
            return
        yield seg
