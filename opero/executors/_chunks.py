"""Running a chunk of items through one Plan, in any thread, event loop or worker process.

An *outcome* is ``(index, ok, value, item)``: the item's position in the input, whether it
succeeded, its result or exception, and for a failure the item itself (the dashboard shows
the latest errors with their item). Successes leave ``item`` None so results travel light.

The sync chunk runner has a fast path: when the plan has no cache, limiter or timeout and
nobody listens to per-call events, an item that succeeds at once costs one call and two clock
reads; counters are merged once per chunk. Only a failing item enters the plan's retry
machinery (``Plan.recover``), so every item still gets the full retry policy.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import operator
import threading
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from .._decisions import Args, Kwargs
from .._policy import ItemPlan, Plan

__all__ = [
    "ChunkSizer",
    "MapCall",
    "Outcome",
    "Run",
    "run_consecutive",
    "Spread",
    "Feed",
    "Window",
    "compose",
    "run_chunk_async",
    "run_chunk_sync",
]

#: ``(index, ok, value, item)``: ``value`` is the result, or (``ok`` False) the exception,
#: which the flag cannot narrow for a type checker; ``item`` is set for a failure only
Outcome = tuple[int, bool, Any, object]
#: ``(index, item)`` pairs, in input order
Chunk = list[tuple[int, object]]

#: index of the item whose call runs in this thread or task (read by a worker's hard
#: timeout to tell the parent which attempt is running)
RUNNING: contextvars.ContextVar[int] = contextvars.ContextVar("opero_running_item", default=-1)

_perf = time.perf_counter


class Spread(NamedTuple):
    """An item that is a whole argument list (a pandas row over several columns)."""

    args: Args
    kwargs: Kwargs


@dataclass
class MapCall:
    """One call of an opmap'd function: the plan, the mode and the call's own arguments."""

    #: the map layer's plan; executors read it as an ``ItemPlan`` (items run here) or a
    #: ``RemotePlan`` (items run in other processes)
    plan: Plan
    mode: str
    workers: int
    chunksize: int | None
    prefix: Args
    args: Args
    kwargs: Kwargs
    total: int | None
    #: set when the caller gave up (Ctrl-C in another thread, a cancelled await)
    stop: threading.Event = field(default_factory=threading.Event)


def compose(prefix: Args, item: object, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs]:
    """The arguments of one item's call: ``func(*prefix, item, *args, **kwargs)``."""
    if type(item) is Spread:
        return (*prefix, *item.args, *args), {**kwargs, **item.kwargs}
    return (*prefix, item, *args), kwargs


def _fast(plan: ItemPlan) -> bool:
    # the plan's one rule (Plan.fast_now): only "plain" plans run items straight through
    return plan.fast_now() == "plain"


def run_chunk_sync(plan: ItemPlan, chunk: Chunk, prefix: Args, args: Args, kwargs: Kwargs) -> list[Outcome]:
    """Run each item of ``chunk`` with the full policy; one outcome per item, in order."""
    out: list[Outcome] = []
    append = out.append
    if not _fast(plan):
        call = plan.call_sync
        for idx, item in chunk:
            try:
                append((idx, True, call(*compose(prefix, item, args, kwargs)), None))
            except Exception as exc:
                append((idx, False, exc, item))
        return out
    return _run_items(plan, chunk, prefix, args, kwargs)


class Run:
    """The outcomes of a chunk of consecutive items ``start, start + 1, ...``, in order.

    What a thread lane hands the map instead of a list of outcome tuples: ``values`` holds
    each item's result (or final exception) in order, ``failed`` maps a failed item's
    position to its item. The map places a whole run with one slice assignment; iterating
    it still gives ``(index, ok, value, item)`` tuples, built on demand.
    """

    __slots__ = ("failed", "start", "values")

    def __init__(self, start: int, values: list[Any], failed: dict[int, object]) -> None:
        self.start = start
        self.values = values
        self.failed = failed

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[Outcome]:
        failed = self.failed
        for pos, value in enumerate(self.values):
            if pos in failed:
                yield (self.start + pos, False, value, failed[pos])
            else:
                yield (self.start + pos, True, value, None)


#: In the fast chunk loops, one item in this many is timed for the latency stats; the others
#: run without a clock read (two of them cost more than a tiny item). Through ``map()`` in
#: C a run of items costs ~40 ns each, so the sample there is sparser.
_SEGMENT = 16
_RUN_SEGMENT = 128
_second = operator.itemgetter(1)


def run_consecutive(plan: ItemPlan, chunk: Chunk | Span) -> Run | list[Outcome]:
    """A thread lane's chunk of consecutive items, as a :class:`Run`.

    ``func(item)`` for each item with the full policy, like :func:`run_chunk_sync`; when
    the plan allows the fast path (no cache, limiter, timeout or listener) items go through
    ``map()`` in runs, and only failures step into the plan's recovery one by one.
    """
    if isinstance(chunk, Span):
        if not _fast(plan) or type(chunk.items[0]) is Spread:
            return run_chunk_sync(plan, list(chunk), (), (), {})
        return _run_list(plan, chunk.start, chunk.items)
    start = chunk[0][0]
    if not _fast(plan) or type(chunk[0][1]) is Spread or chunk[-1][0] - start != len(chunk) - 1:
        return run_chunk_sync(plan, chunk, (), (), {})
    return _run_list(plan, start, list(map(_second, chunk)))


def _run_list(plan: ItemPlan, start: int, items: list[object]) -> Run:
    # items start, start + 1, ... through map() in runs of _RUN_SEGMENT
    func = plan.func
    n = len(items)
    values: list[object] = []
    extend, push = values.extend, values.append
    lat: list[float] = []
    rescue = _Rescue(plan, items, push)
    first = time.time()
    plan.stats.started()  # the item this lane runs counts in flight (see _merge)
    i = 0
    while i < n:
        t0 = _perf()
        try:
            push(func(items[i]))
        except Exception as exc:
            rescue(i, exc)
        lat.append(_perf() - t0)
        i += 1
        end = min(n, i + _RUN_SEGMENT - 1)
        while i < end:
            try:
                extend(map(func, items[i:end]))
            except Exception as exc:  # items before the failing one are in values already
                rescue(len(values), exc)
            i = len(values)
    _merge(plan, n, len(rescue.failed), lat, first)
    return Run(start, values, rescue.failed)


class _Rescue:
    """A failed item of a run: the plan's recovery (retries, fallbacks) appends its outcome."""

    __slots__ = ("failed", "items", "plan", "push")

    def __init__(self, plan: ItemPlan, items: list[object], push: Callable[[object], None]) -> None:
        self.plan = plan
        self.items = items
        self.push = push
        #: position in the chunk -> item, of the items that failed for good
        self.failed: dict[int, object] = {}

    def __call__(self, pos: int, exc: Exception) -> None:
        item = self.items[pos]
        try:
            self.push(self.plan.rescue_sync((item,), {}, exc))
        except Exception as final:
            self.failed[pos] = item
            self.push(final)
            self.plan.recorder.emit("failure", error=final, duration=None)


def _run_items(plan: ItemPlan, chunk: Chunk, prefix: Args, args: Args, kwargs: Kwargs) -> list[Outcome]:
    """The fast loop for items with extra arguments or spread rows: one item at a time."""
    func = plan.func
    out: list[Outcome] = []
    append = out.append
    lat: list[float] = []
    failures = 0
    first = time.time()
    plan.stats.started()  # the item this lane runs counts in flight (see _merge)
    for k, (idx, item) in enumerate(chunk):
        t0 = _perf() if not k % _SEGMENT else None
        try:
            if type(item) is Spread:
                value = func(*prefix, *item.args, *args, **kwargs, **item.kwargs)
            else:
                value = func(*prefix, item, *args, **kwargs)
        except Exception as exc:
            try:
                value = plan.rescue_sync(*compose(prefix, item, args, kwargs), exc)
            except Exception as final:
                failures += 1
                append((idx, False, final, item))
                plan.recorder.emit("failure", error=final, duration=None)
                continue
            finally:
                if t0 is not None:
                    lat.append(_perf() - t0)
        else:
            if t0 is not None:
                lat.append(_perf() - t0)
        append((idx, True, value, None))
    _merge(plan, len(chunk), failures, lat, first)
    return out


def _merge(plan: ItemPlan, n: int, failures: int, lat: list[float], first: float) -> None:
    # One lock round trip per chunk instead of two per item (begin/end). The chunk counted
    # one call when it began: while it runs, stats.in_flight shows one item per busy lane
    # (the item running now), never more than the lanes; the other n - 1 are counted here.
    plan.stats.merge(
        {
            "calls": n - 1,
            "successes": n - failures,
            "failures": failures,
            "attempts": n,
            "latencies": lat,
            "first": first,
            "last": time.time(),
        }
    )


async def run_chunk_async(
    plan: ItemPlan,
    chunk: Chunk,
    prefix: Args,
    args: Args,
    kwargs: Kwargs,
    concurrency: int = 1,
) -> list[Outcome]:
    """Run an ``async def`` plan over ``chunk`` on the running loop, ``concurrency`` at a time."""
    out: list[Outcome] = []
    call = plan.call_async
    items = iter(chunk)

    async def lane() -> None:
        for idx, item in items:
            RUNNING.set(idx)
            try:
                out.append((idx, True, await call(*compose(prefix, item, args, kwargs)), None))
            except Exception as exc:
                out.append((idx, False, exc, item))

    lanes = max(1, min(concurrency, len(chunk)))
    if lanes == 1:
        await lane()
    else:
        await asyncio.gather(*(lane() for _ in range(lanes)))
    return out


class ChunkSizer:
    """Picks chunk sizes so each chunk takes about ``target`` seconds, adapting as items run.

    The first chunks hold one item (a slow item must not drag others with it); later sizes
    follow the measured seconds per item, never so big that the last chunks leave workers idle.

    Args:
        target: seconds of work one chunk should take.
        cap: largest chunk.
        total: number of items when known.
        workers: how many chunks run at once.
        fixed: a user-given chunksize (no adaptation).
    """

    __slots__ = ("_handed", "_lock", "_per_item", "cap", "fixed", "target", "total", "workers")

    def __init__(
        self, target: float, cap: int, total: int | None, workers: int, fixed: int | None = None
    ) -> None:
        self.target = target
        self.cap = cap
        self.total = total
        self.workers = max(1, workers)
        self.fixed = fixed
        self._per_item: float | None = None
        self._handed = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        """Size of the next chunk."""
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            per = self._per_item
            if per is None:
                size = 1
            else:
                size = int(self.target / per) if per > 0 else self.cap
                size = max(1, min(self.cap, size))
            if self.total is not None:
                # Keep about 4 chunks per worker for the remainder: balanced tail. But never
                # below a quarter of the target's worth of items: for tiny items the tail would
                # otherwise decay into dozens of one-item chunks, each costing more than its item.
                left = self.total - self._handed
                floor = int(self.target / 4 / per) if per else 1
                size = max(1, min(size, max(left // (self.workers * 4), floor)))
            self._handed += size
            return size

    def observe(self, items: int, seconds: float) -> None:
        """Record that ``items`` items took ``seconds`` in one chunk."""
        if items <= 0:
            return
        per = seconds / items
        with self._lock:
            self._per_item = per if self._per_item is None else 0.5 * self._per_item + 0.5 * per


class Window:
    """Backpressure: at most ``limit`` items taken from the input and not yet released.

    Executors acquire before pulling items; the map releases them when their results have
    been handed to the caller, so a streamed map keeps bounded memory even when an early,
    slow item holds back ordered output.
    """

    __slots__ = ("_cond", "_free", "closed", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._cond = threading.Condition()
        self.closed = False

    def acquire(self, n: int) -> int:
        """Block until up to ``n`` items may be taken; return how many (0 when closed)."""
        with self._cond:
            while self._free <= 0 and not self.closed:
                self._cond.wait(0.5)
            if self.closed:
                return 0
            got = min(n, self._free)
            self._free -= got
            return got

    def try_acquire(self, n: int) -> int:
        """Take up to ``n`` items' room without waiting; return how many (maybe 0)."""
        with self._cond:
            got = max(0, min(n, self._free))
            self._free -= got
            return got

    def release(self, n: int) -> None:
        """Give back ``n`` items' room."""
        if n <= 0:
            return
        with self._cond:
            self._free += n
            self._cond.notify_all()

    def close(self) -> None:
        """Wake and stop every waiter (the map is over or interrupted)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Span:
    """A chunk of consecutive items of a list: ``items[start:start + len]``, without an
    ``(index, item)`` pair per item (building those cost a thread map of tiny items about as
    much as running them). Iterating it still gives the pairs, for any loop that wants them.
    """

    __slots__ = ("items", "start")

    def __init__(self, start: int, items: list[object]) -> None:
        self.start, self.items = start, items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, object]]:
        return zip(itertools.count(self.start), self.items)


class ListSource:
    """The items of a list, taken as spans: the source of a plain thread-mode map over a list.

    A thread lane takes ``items[taken:taken + n]`` by one slice; ``taken`` is how far the
    lanes have read (what the progress bar counts as handed over). It is still an iterator
    of ``(index, item)`` pairs for a consumer that does not take spans.
    """

    __slots__ = ("items", "taken")

    def __init__(self, items: list[object]) -> None:
        self.items = items
        self.taken = 0

    def __iter__(self) -> Iterator[tuple[int, object]]:
        return self

    def __next__(self) -> tuple[int, object]:
        pos = self.taken
        if pos >= len(self.items):
            raise StopIteration
        self.taken = pos + 1
        return pos, self.items[pos]

    def span(self, n: int) -> Span:
        """The next ``n`` items (fewer at the end), as one slice."""
        start = self.taken
        piece = self.items[start : start + n]
        self.taken = start + len(piece)
        return Span(start, piece)


C = TypeVar("C", bound=Sized)
_NO_SPAN = Span(0, [])


class Feed:
    """The chunk feed loop, written once: room in the window, a chunk size, the items.

    Every executor takes its chunks from one ``Feed`` (thread lanes, the process pool,
    dask, joblib). Safe to share between threads: pulling from the input is locked.

    Args:
        source: ``(index, item)`` pairs, consumed lazily.
        window: backpressure (items taken and not yet released).
        sizer: the next chunk's size.
    """

    __slots__ = ("_lock", "dry", "sizer", "source", "window")

    def __init__(self, source: Iterator[tuple[int, object]], window: Window, sizer: ChunkSizer) -> None:
        self.source = source
        self.window = window
        self.sizer = sizer
        #: the input ran out
        self.dry = False
        self._lock = threading.Lock()

    def next(self, block: bool = True) -> Chunk:
        """The next chunk; empty when the input ran dry, the window closed, or (not
        ``block``) there is no room right now."""
        source = self.source
        # islice in C: no Python step per item
        return self._pull(lambda n: list(itertools.islice(source, n)), [], block)

    def next_span(self) -> Span:
        """The next chunk of a :class:`ListSource` as one slice (a thread lane of a plain map)."""
        source = self.source
        assert isinstance(source, ListSource)
        return self._pull(source.span, _NO_SPAN, True)

    def _pull(self, take: Callable[[int], C], empty: C, block: bool) -> C:
        # Up to a chunk's size of items for as many slots of the window; unused slots go back.
        if self.dry:
            return empty
        want = self.sizer.next()
        got = self.window.acquire(want) if block else self.window.try_acquire(want)
        if got == 0:
            return empty
        with self._lock:
            chunk = take(got)
        if len(chunk) < got:
            self.dry = True
            self.window.release(got - len(chunk))
        return chunk
