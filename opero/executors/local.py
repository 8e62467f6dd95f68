"""Items run in this process: chunked threads, or lanes on one event loop.

- ``thread``: ``workers`` threads pulling chunks (cheap enough that 20,000 tiny items take a
  few milliseconds); an ``async def`` function gets one event loop per thread.
- ``async``: one event loop, ``workers`` lanes pulling items: at most ``workers`` in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor

from .._policy import ItemPlan
from .._threads import iterate_async_in_thread
from ._chunks import (
    ChunkSizer,
    Feed,
    ListSource,
    MapCall,
    Outcome,
    Run,
    Span,
    Window,
    compose,
    run_chunk_async,
    run_chunk_sync,
    run_consecutive,
)

__all__ = ["async_outcomes", "outcomes"]

#: what a thread lane hands the map: a chunk's outcomes, the error that stopped the input,
#: or None when the lane is done
_LaneNews = list[Outcome] | Run | BaseException | None
#: what an async lane hands the map: one item's outcome, an error, or None when it is done
_ItemNews = Outcome | BaseException | None


def outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> Iterator[list[Outcome] | Run]:
    """Thread mode, and async mode driven from sync code (a private loop in a helper thread)."""
    if call.mode == "thread" or not call.plan.is_async:
        return _thread_outcomes(call, source, window)
    return _async_in_thread(call, source, window)


# -- thread -------------------------------------------------------------------------------


class _LanePool:
    """Daemon threads kept between maps, so a map hands its lanes over without a thread start.

    Starting a thread waits for it to run (a GIL round trip each); on a busy machine a
    20,000-item map of tiny items spent most of its time there. Idle lanes wait for the next
    task and leave after ``idle`` seconds; each task runs in a fresh ``contextvars.Context``
    so nothing one map set leaks into the next. Daemon threads: a hung item never blocks
    interpreter exit.
    """

    def __init__(self, idle: float = 30.0) -> None:
        self.idle = idle
        self._lock = threading.Lock()
        self._waiting: list[queue.SimpleQueue[Callable[[], None]]] = []
        self._names = itertools.count()

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task`` in an idle lane, or in a new one."""
        with self._lock:
            inbox = self._waiting.pop() if self._waiting else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            name = f"opero-map-{next(self._names)}"
            threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()
        inbox.put(task)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            try:
                task = inbox.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:
                    if inbox in self._waiting:  # nobody picked this lane meanwhile: leave
                        self._waiting.remove(inbox)
                        return
                continue  # picked just now: its task is on the way
            contextvars.Context().run(task)
            # An idle lane must not keep the last map's closure (its plan, limiter and
            # limiter file) alive while it waits for the next task.
            del task
            with self._lock:
                self._waiting.append(inbox)


_lanes = _LanePool()


def _thread_outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> Iterator[list[Outcome] | Run]:
    n = call.workers if call.total is None else max(1, min(call.workers, call.total))
    # ~2 ms of work a chunk; the cap only binds items under 0.5 µs, for which each chunk's
    # hand-off to the map costs more than the work (4096 rather than 1024: 1.2x ThreadPool.map
    # on 20,000 tiny items instead of 1.4x, measured in one quiet run of each)
    sizer = ChunkSizer(0.002, 4096, call.total, n, call.chunksize)
    results: queue.SimpleQueue[_LaneNews] = queue.SimpleQueue()
    feed = Feed(source, window, sizer)
    for _ in range(n):
        _lanes.submit(functools.partial(_lane, call, feed, sizer, results))
    running = n
    try:
        while running:
            got = results.get()
            if got is None:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield got
    finally:
        call.stop.set()
        window.close()


def _lane(call: MapCall, feed: Feed, sizer: ChunkSizer, results: queue.SimpleQueue[_LaneNews]) -> None:
    """One thread-mode lane: run chunks from ``feed`` until it is empty or the map stops."""
    plan: ItemPlan = call.plan
    stop = call.stop
    prefix, args, kwargs = call.prefix, call.args, call.kwargs
    plain = not (prefix or args or kwargs)
    spans = isinstance(feed.source, ListSource)  # a plain map over a list: slices of it
    loop: asyncio.AbstractEventLoop | None = None
    try:
        while not stop.is_set():
            chunk = feed.next_span() if spans else feed.next()
            if not chunk:
                break
            t0 = time.perf_counter()
            outs: list[Outcome] | Run
            if isinstance(chunk, Span):
                outs = run_consecutive(plan, chunk)
            elif plan.is_async:
                if loop is None:
                    loop = asyncio.new_event_loop()
                outs = loop.run_until_complete(run_chunk_async(plan, chunk, prefix, args, kwargs))
            elif plain:  # consecutive items from the feed: one Run, placed by slices
                outs = run_consecutive(plan, chunk)
            else:
                outs = run_chunk_sync(plan, chunk, prefix, args, kwargs)
            sizer.observe(len(chunk), time.perf_counter() - t0)
            results.put(outs)
    except BaseException as exc:  # the input iterator raised: the caller sees it
        results.put(exc)
    finally:
        if loop is not None:
            loop.close()
        results.put(None)


# -- async --------------------------------------------------------------------------------


async def async_outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> AsyncIterator[list[Outcome]]:
    """``workers`` lanes on the running loop pulling one item at a time."""
    n = call.workers if call.total is None else max(1, min(call.workers, call.total))
    done: asyncio.Queue[_ItemNews] = asyncio.Queue()
    pool = None
    if not call.plan.is_async:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(n, thread_name_prefix="opero-async")
    tasks = [asyncio.ensure_future(_async_lane(call, source, window, done, pool)) for _ in range(n)]
    running = [n]
    try:
        while running[0]:
            batch = _batch(await done.get(), done, running)
            if batch:
                yield batch
    finally:
        call.stop.set()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


async def _async_lane(
    call: MapCall,
    source: Iterator[tuple[int, object]],
    window: Window,
    done: asyncio.Queue[_ItemNews],
    pool: Executor | None,
) -> None:
    """One async-mode lane: items one at a time (in ``pool`` for a sync function)."""
    plan: ItemPlan = call.plan
    prefix, args, kwargs = call.prefix, call.args, call.kwargs
    loop = asyncio.get_running_loop()
    try:
        while not call.stop.is_set():
            while not window.try_acquire(1):
                if window.closed:
                    return
                # backpressure: the consumer has not taken enough results yet
                await asyncio.sleep(0.002)
            pair = next(source, None)
            if pair is None:
                window.release(1)
                return
            idx, item = pair
            try:
                if pool is not None:
                    value = await loop.run_in_executor(
                        pool, plan.call_sync, *compose(prefix, item, args, kwargs)
                    )
                else:
                    value = await plan.call_async(*compose(prefix, item, args, kwargs))
                done.put_nowait((idx, True, value, None))
            except Exception as exc:
                done.put_nowait((idx, False, exc, item))
    except BaseException as exc:
        done.put_nowait(exc)
        raise
    finally:
        done.put_nowait(None)


def _batch(got: _ItemNews, done: asyncio.Queue[_ItemNews], running: list[int]) -> list[Outcome]:
    """``got`` and every outcome already queued behind it; counts lanes that ended."""
    batch: list[Outcome] = []
    while True:
        if got is None:
            running[0] -= 1
        elif isinstance(got, BaseException):
            raise got
        else:
            batch.append(got)
        if done.empty():
            return batch
        got = done.get_nowait()


def _async_in_thread(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> Iterator[list[Outcome]]:
    """Drive :func:`async_outcomes` on a private loop in a helper thread, from sync code."""

    def stop() -> None:
        call.stop.set()
        window.close()

    try:
        yield from iterate_async_in_thread(
            lambda: async_outcomes(call, source, window), "opero-async-map", on_close=stop
        )
    finally:
        stop()
