"""Executors: where the items of a map run (thread, process, async, async_process, dask).

Every executor takes ``(index, item)`` pairs lazily from one iterator and hands back lists of
outcomes ``(index, ok, value, item)`` as they complete (``_exec_run``); ordering, progress and
results are the map's business (``_map``). Items travel in chunks sized from measured item
times, and each item runs through the Plan directly: no executor future per item.

- ``thread``: ``workers`` threads pulling chunks (cheap enough that 20,000 tiny items take a
  few milliseconds); an ``async def`` function gets one event loop per thread.
- ``process`` / ``async_process``: opero's own process pool (``_exec_pool``).
- ``async``: one event loop, ``workers`` lanes pulling items: at most ``workers`` in flight.
- ``dask``: chunks as tasks on the active ``distributed.Client`` or a LocalCluster.

Inside an enclosing ``joblib.parallel_config(backend=...)``, thread and process maps run
their chunks through ``joblib.Parallel`` on the configured backend instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._exec_remote import MapCall, Remote, Sent
from ._exec_run import ChunkSizer, Outcome, Window, compose, run_chunk_async, run_chunk_sync, take
from ._exec_worker import Batch

__all__ = ["async_outcomes", "default_workers", "joblib_config", "sync_outcomes"]

_DONE = object()


def default_workers(mode: str) -> int:
    """SPEC §5 defaults: threads min(32, cpus+4), processes cpus, async 64."""
    cpus = os.cpu_count() or 1
    if mode == "thread":
        return min(32, cpus + 4)
    if mode == "async":
        return 64
    return cpus


def joblib_config() -> tuple[Any, int | None] | None:
    """The backend and n_jobs of an enclosing ``joblib.parallel_config``, if one is active."""
    import sys

    if "joblib.parallel" not in sys.modules:  # nobody configured joblib in this process
        return None
    from joblib.parallel import _backend, default_parallel_config

    config = getattr(_backend, "config", None)
    if not config or config["backend"] is default_parallel_config["backend"]:
        return None
    n_jobs = config["n_jobs"]
    return config["backend"], n_jobs if isinstance(n_jobs, int) else None


def sync_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> Iterator[list[Outcome]]:
    """The executor for ``call.mode``, run from synchronous code."""
    mode = call.mode
    if mode in ("thread", "process") and joblib_config() is not None:
        return _joblib_outcomes(call, source, window)
    if mode == "thread" or (mode == "async" and not call.plan.is_async):
        return _thread_outcomes(call, source, window)
    if mode == "process" or mode == "async_process":
        from ._exec_pool import process_outcomes

        concurrency = 1
        if mode == "async_process" and call.plan.is_async:
            # a chunk's items run at once on the worker's loop: chunks of that size
            per = -(-call.total // call.workers) if call.total else 16
            concurrency = max(1, min(64, per))
        return process_outcomes(call, source, window, concurrency)
    if mode == "dask":
        return _dask_outcomes(call, source, window)
    # async mode of an async function from sync code: its own loop (a helper thread when
    # a loop already runs in this thread, see _bridge)
    return _async_in_thread(call, source, window)


# -- thread -------------------------------------------------------------------------------


def _thread_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> Iterator[list[Outcome]]:
    plan = call.plan
    n = call.workers if call.total is None else max(1, min(call.workers, call.total))
    sizer = ChunkSizer(0.002, 1024, call.total, n, call.chunksize)
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    lock = threading.Lock()
    stop = call.stop
    prefix, args, kwargs = call.prefix, call.args, call.kwargs

    def lane() -> None:
        loop: asyncio.AbstractEventLoop | None = None
        try:
            while not stop.is_set():
                want = window.acquire(sizer.next())
                if want == 0:
                    break
                with lock:
                    chunk, _ = take(source, want, window)
                if not chunk:
                    break
                t0 = time.perf_counter()
                if plan.is_async:
                    if loop is None:
                        loop = asyncio.new_event_loop()
                    outs = loop.run_until_complete(run_chunk_async(plan, chunk, prefix, args, kwargs))
                else:
                    outs = run_chunk_sync(plan, chunk, prefix, args, kwargs)
                sizer.observe(len(chunk), time.perf_counter() - t0)
                results.put(outs)
        except BaseException as exc:  # the input iterator raised: the caller sees it
            results.put(exc)
        finally:
            if loop is not None:
                loop.close()
            results.put(_DONE)

    threads = [threading.Thread(target=lane, name=f"opero-map-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    running = n
    try:
        while running:
            got = results.get()
            if got is _DONE:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield got
    finally:
        stop.set()
        window.close()


# -- async --------------------------------------------------------------------------------


async def async_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> AsyncIterator[list[Outcome]]:
    """``workers`` lanes on the running loop pulling one item at a time."""
    plan = call.plan
    n = call.workers if call.total is None else max(1, min(call.workers, call.total))
    done: asyncio.Queue[Any] = asyncio.Queue()
    prefix, args, kwargs = call.prefix, call.args, call.kwargs
    loop = asyncio.get_running_loop()
    pool = None
    if not plan.is_async:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(n, thread_name_prefix="opero-async")

    async def lane() -> None:
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
            done.put_nowait(_DONE)

    tasks = [asyncio.ensure_future(lane()) for _ in range(n)]
    running = n
    try:
        while running:
            got = await done.get()
            batch: list[Outcome] = []
            while True:
                if got is _DONE:
                    running -= 1
                elif isinstance(got, BaseException):
                    raise got
                else:
                    batch.append(got)
                if done.empty():
                    break
                got = done.get_nowait()
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


def _async_in_thread(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> Iterator[list[Outcome]]:
    """Drive :func:`async_outcomes` on a private loop in a helper thread, from sync code."""
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()

    async def main() -> None:
        try:
            async for batch in async_outcomes(call, source, window):
                out.put(batch)
        except BaseException as exc:
            out.put(exc)
        finally:
            out.put(_DONE)

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="opero-async-map", daemon=True)
    thread.start()
    try:
        while True:
            got = out.get()
            if got is _DONE:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        call.stop.set()
        window.close()
        thread.join(2)


# -- joblib (an enclosing parallel_config) ---------------------------------------------------


def _joblib_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> Iterator[list[Outcome]]:
    import cloudpickle
    from joblib import Parallel, delayed

    from ._exec_worker import run_task

    config = joblib_config()
    assert config is not None
    backend, n_jobs = config
    workers = call.workers if n_jobs is None else n_jobs
    in_process = bool(getattr(backend, "uses_threads", False))
    remote = None if in_process else Remote(call)
    token = os.urandom(8).hex()
    sizer = ChunkSizer(0.02, 1000, call.total, max(1, abs(workers)), call.chunksize)
    plan = call.plan
    hits: list[Outcome] = []

    def tasks() -> Iterator[Any]:
        cid = 0
        while True:
            want = window.acquire(sizer.next())
            if want == 0:
                return
            pairs, _ = take(source, want, window)
            if not pairs:
                return
            cid += 1
            if remote is None:
                yield delayed(run_chunk_sync)(plan, pairs, call.prefix, call.args, call.kwargs)
                continue
            items = remote.admit(pairs, hits)
            if items:
                yield delayed(run_task)(token, remote.spec_bytes, cid, items)

    runner = Parallel(n_jobs=workers, return_as="generator_unordered")
    for got in runner(tasks()):
        if hits:
            ready, hits[:] = list(hits), []
            yield ready
        if remote is None:
            yield got
            continue
        outs: list[Outcome] = []
        for raw in got:
            outs.extend(remote.receive(cloudpickle.loads(raw)))
        yield outs
    if hits:
        yield list(hits)


# -- dask -----------------------------------------------------------------------------------


def _dask_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> Iterator[list[Outcome]]:
    import cloudpickle
    from distributed import Client

    from ._exec_worker import run_task

    try:
        client = Client.current()  # type: ignore[no-untyped-call]
        owned = None
    except ValueError:
        from distributed import LocalCluster

        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=call.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        )
        client = Client(cluster, set_as_default=False)  # type: ignore[no-untyped-call]
        owned = (client, cluster)
    remote = Remote(call)
    token = os.urandom(8).hex()
    sizer = ChunkSizer(0.05, 1000, call.total, call.workers, call.chunksize)
    held: dict[Any, list[Sent]] = {}
    # completion callbacks (not distributed.wait, which wants a default client)
    finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
    spec = (
        client.scatter(remote.spec_bytes, broadcast=True)
        if len(remote.spec_bytes) > 100_000
        else remote.spec_bytes
    )
    exhausted = False
    cid = 0

    def submit(items: list[Sent]) -> None:
        nonlocal cid
        cid += 1
        fut = client.submit(run_task, token, spec, cid, items, pure=False)
        held[fut] = items
        fut.add_done_callback(finished.put)

    try:
        while True:
            ready: list[Outcome] = []
            while remote.retry:
                submit([remote.retry.popleft()])
            while not exhausted and len(held) < 2 * call.workers:
                want = window.try_acquire(sizer.next())
                if want == 0:
                    break
                pairs, exhausted = take(source, want, window)
                items = remote.admit(pairs, ready)
                if items:
                    submit(items)
            if ready:
                yield ready
                continue
            if not held:
                if exhausted:
                    break
                if window.acquire(1):
                    window.release(1)
                continue
            try:
                first = finished.get(timeout=0.2)
            except queue.Empty:
                if call.stop.is_set():
                    raise KeyboardInterrupt from None
                continue
            for fut in [first, *(finished.get() for _ in range(finished.qsize()))]:
                items = held.pop(fut)
                try:
                    raws = fut.result()
                except Exception as exc:  # KilledWorker: the worker died (more than once)
                    lost = {i: (item, used) for i, item, used in items}
                    ready.extend(remote.lose(lost, f"dask worker lost: {exc!r}", None))
                    continue
                for raw in raws:
                    batch: Batch = cloudpickle.loads(raw)
                    ready.extend(remote.receive(batch))
            yield ready
            if call.stop.is_set():
                raise KeyboardInterrupt
    finally:
        for fut in held:
            fut.cancel()
        if owned is not None:
            owned[0].close()  # type: ignore[no-untyped-call]
            owned[1].close()  # type: ignore[no-untyped-call]
