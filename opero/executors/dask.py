"""Items run on other machinery: a dask.distributed cluster, or an enclosing joblib backend.

- ``dask``: chunks as tasks on the active ``distributed.Client`` or a LocalCluster it starts.
- Inside an enclosing ``joblib.parallel_config(backend=...)``, thread and process maps run
  their chunks through ``joblib.Parallel`` on the configured backend instead.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._errors import WorkerLostError
from ._chunks import ChunkSizer, Feed, MapCall, Outcome, Window, run_chunk_sync

if TYPE_CHECKING:
    from ._worker import Sent

from .._compat import joblib_config

__all__ = ["joblib_config", "joblib_outcomes", "outcomes"]


# -- joblib (an enclosing parallel_config) ---------------------------------------------------


def joblib_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window
) -> Iterator[list[Outcome]]:
    from joblib import Parallel, delayed

    # Here, not at the top: `import opero` reaches this module (joblib_config) and must not
    # pay for the process-pool protocol (pickle, the worker module) until a map needs it.
    from ._dispatch import Remote, decode_batch
    from ._worker import run_task

    config = joblib_config()
    assert config is not None
    backend, n_jobs = config
    workers = call.workers if n_jobs is None else n_jobs
    in_process = bool(getattr(backend, "uses_threads", False))
    remote = None if in_process else Remote(call)
    token = os.urandom(8).hex()
    feed = Feed(source, window, ChunkSizer(0.02, 1000, call.total, max(1, abs(workers)), call.chunksize))
    plan = call.plan
    hits: list[Outcome] = []

    def tasks() -> Iterator[Any]:
        cid = 0
        while True:
            pairs = feed.next()
            if not pairs:
                return
            cid += 1
            if remote is None:
                yield delayed(run_chunk_sync)(plan, pairs, call.prefix, call.args, call.kwargs)
                continue
            items, blob = remote.pack(remote.admit(pairs, hits), hits)
            if items:
                yield delayed(run_task)(token, remote.spec_bytes, cid, [i for i, _, _ in items], blob)

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
            batch = decode_batch(raw)
            # a chunk the worker could not unpickle: its items fail one by one (no re-send)
            outs.extend(remote.receive(batch) if not batch.rejected else remote.rejected(batch, {}))
        yield outs
    if hits:
        yield list(hits)


# -- dask -----------------------------------------------------------------------------------


def outcomes(call: MapCall, source: Iterator[tuple[int, Any]], window: Window) -> Iterator[list[Outcome]]:
    from distributed import Client

    from ._dispatch import Remote, decode_batch
    from ._worker import run_task

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
    feed = Feed(source, window, ChunkSizer(0.05, 1000, call.total, call.workers, call.chunksize))
    held: dict[Any, list[Sent]] = {}
    # completion callbacks (not distributed.wait, which wants a default client)
    finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
    spec = (
        client.scatter(remote.spec_bytes, broadcast=True)
        if len(remote.spec_bytes) > 100_000
        else remote.spec_bytes
    )
    cid = 0

    def submit(items: list[Sent], ready: list[Outcome]) -> None:
        nonlocal cid
        items, blob = remote.pack(items, ready)
        if not items:
            return
        cid += 1
        fut = client.submit(run_task, token, spec, cid, [i for i, _, _ in items], blob, pure=False)
        held[fut] = items
        fut.add_done_callback(finished.put)

    try:
        while True:
            ready: list[Outcome] = []
            pause = remote.due()
            while remote.retry:
                submit([remote.retry.popleft()], ready)
            while len(held) < 2 * call.workers:
                pairs = feed.next(block=False)
                if not pairs:
                    break
                items = remote.admit(pairs, ready)
                if items:
                    submit(items, ready)
            if ready:
                yield ready
                continue
            if not held:
                if feed.dry and not remote.waiting:
                    break
                if remote.waiting:
                    time.sleep(min(0.2, max(0.0, pause or 0.0)))
                    continue
                if window.acquire(1):
                    window.release(1)
                continue
            try:
                first = finished.get(timeout=0.2 if pause is None else max(0.0, min(0.2, pause)))
            except queue.Empty:
                if call.stop.is_set():
                    raise KeyboardInterrupt from None
                continue
            for fut in [first, *(finished.get() for _ in range(finished.qsize()))]:
                items = held.pop(fut)
                lost = {i: (payload, single) for i, payload, single in items}
                try:
                    raws = fut.result()
                except Exception as exc:
                    if type(exc).__name__ == "KilledWorker":  # the worker died (more than once)
                        ready.extend(remote.lose(lost, WorkerLostError(f"dask worker lost: {exc!r}")))
                    else:  # dask itself failed the task: that error, not a lost worker
                        why = "failed in dask"
                        ready.extend(remote.refuse((i, p, s), exc, why) for i, (p, s) in lost.items())
                    continue
                for raw in raws:
                    batch = decode_batch(raw)
                    if batch.rejected:
                        ready.extend(remote.rejected(batch, lost))
                    else:
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
