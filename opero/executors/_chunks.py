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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._policy import Plan

__all__ = [
    "ChunkSizer",
    "MapCall",
    "Outcome",
    "Spread",
    "Feed",
    "Window",
    "compose",
    "run_chunk_async",
    "run_chunk_sync",
]

Outcome = tuple[int, bool, Any, Any]
Chunk = list[tuple[int, Any]]

#: index of the item whose call runs in this thread or task (read by a worker's hard
#: timeout to tell the parent which attempt is running)
RUNNING: contextvars.ContextVar[int] = contextvars.ContextVar("opero_running_item", default=-1)

_perf = time.perf_counter


class Spread(NamedTuple):
    """An item that is a whole argument list (a pandas row over several columns)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class MapCall:
    """One call of an opmap'd function: the plan, the mode and the call's own arguments."""

    plan: Plan
    mode: str
    workers: int
    chunksize: int | None
    prefix: tuple[Any, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    total: int | None
    #: set when the caller gave up (Ctrl-C in another thread, a cancelled await)
    stop: threading.Event = field(default_factory=threading.Event)


def compose(
    prefix: tuple[Any, ...], item: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of one item's call: ``func(*prefix, item, *args, **kwargs)``."""
    if type(item) is Spread:
        return (*prefix, *item.args, *args), {**kwargs, **item.kwargs}
    return (*prefix, item, *args), kwargs


def _fast(plan: Plan) -> bool:
    rec = plan.recorder
    return (
        plan.keys is None
        and plan.limiter is None
        and plan.breaker is None
        and plan.timeout is None
        and not rec.wants("success")
        and not rec.wants("failure")
    )


def run_chunk_sync(
    plan: Plan, chunk: Chunk, prefix: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[Outcome]:
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
    func = plan.func
    lat: list[float] = []
    lap = lat.append
    failures = 0
    first = time.time()
    for idx, item in chunk:
        t0 = _perf()
        try:
            if type(item) is Spread:
                value = func(*prefix, *item.args, *args, **kwargs, **item.kwargs)
            else:
                value = func(*prefix, item, *args, **kwargs)
        except Exception as exc:
            try:
                value = plan.finish_recovery(plan.recover(*compose(prefix, item, args, kwargs), exc))
            except Exception as final:
                lap(_perf() - t0)
                failures += 1
                append((idx, False, final, item))
                continue
        lap(_perf() - t0)
        append((idx, True, value, None))
    n = len(chunk)
    # One lock round trip per chunk instead of two per item (begin/end).
    plan.stats.merge(
        {
            "calls": n,
            "successes": n - failures,
            "failures": failures,
            "attempts": n,
            "latencies": lat,
            "first": first,
            "last": time.time(),
        }
    )
    return out


async def run_chunk_async(
    plan: Plan,
    chunk: Chunk,
    prefix: tuple[Any, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
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
                # Keep about 4 chunks per worker for the remainder: balanced tail.
                left = self.total - self._handed
                size = max(1, min(size, left // (self.workers * 4) or 1))
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

    def __init__(self, source: Iterator[tuple[int, Any]], window: Window, sizer: ChunkSizer) -> None:
        self.source = source
        self.window = window
        self.sizer = sizer
        #: the input ran out
        self.dry = False
        self._lock = threading.Lock()

    def next(self, block: bool = True) -> Chunk:
        """The next chunk; empty when the input ran dry, the window closed, or (not
        ``block``) there is no room right now."""
        if self.dry:
            return []
        want = self.sizer.next()
        got = self.window.acquire(want) if block else self.window.try_acquire(want)
        if got == 0:
            return []
        with self._lock:
            chunk, dry = take(self.source, got, self.window)
        if dry:
            self.dry = True
        return chunk


def take(source: Iterator[tuple[int, Any]], n: int, window: Window) -> tuple[Chunk, bool]:
    """Up to ``n`` items from ``source`` for ``n`` slots of ``window``; unused slots go back.

    Returns the items and whether ``source`` ran dry.
    """
    out: Chunk = []
    for pair in source:
        out.append(pair)
        if len(out) >= n:
            break
    dry = len(out) < n
    if dry:
        window.release(n - len(out))
    return out, dry
