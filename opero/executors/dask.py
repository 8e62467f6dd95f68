"""Items run on other machinery: a dask.distributed cluster, or an enclosing joblib backend.

- ``dask``: chunks as tasks on the active ``distributed.Client`` or a LocalCluster it starts.
- Inside an enclosing ``joblib.parallel_config(backend=...)``, thread and process maps run
  their chunks through ``joblib.Parallel`` on the configured backend instead.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, cast

from .._errors import WorkerLostError
from ._chunks import ChunkSizer, Feed, MapCall, Outcome, Window, run_chunk_sync
from ._scheduler import Arrived, Failed, Lost, Scheduler, Transport, TransportEvent

if TYPE_CHECKING:
    from ._dispatch import Remote

from .._compat import joblib_config

__all__ = ["DaskTransport", "joblib_config", "joblib_outcomes", "outcomes"]


# -- joblib (an enclosing parallel_config) ---------------------------------------------------


def joblib_outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window
) -> Iterator[list[Outcome]]:
    """Thread and process maps inside an enclosing ``joblib.parallel_config``: one joblib
    task per chunk, run in this process (thread backends) or through the worker protocol."""
    from joblib import Parallel

    # Here, not at the top: `import opero` reaches this module (joblib_config) and must not
    # pay for the process-pool protocol (pickle, the worker module) until a map needs it.
    from ._dispatch import Remote, decode_batch

    config = joblib_config()
    assert config is not None
    backend, n_jobs = config
    workers = call.workers if n_jobs is None else n_jobs
    feed = Feed(source, window, ChunkSizer(0.02, 1000, call.total, max(1, abs(workers)), call.chunksize))
    # joblib's results are untyped: each task returns the list its function returns
    runner = Parallel(n_jobs=workers, return_as="generator_unordered")
    if getattr(backend, "uses_threads", False):
        yield from cast("Iterator[list[Outcome]]", runner(_local_tasks(call, feed)))
        return
    remote = Remote(call)
    hits: list[Outcome] = []
    for got in cast("Iterator[list[bytes]]", runner(_remote_tasks(feed, remote, hits))):
        if hits:
            ready, hits[:] = list(hits), []
            yield ready
        outs: list[Outcome] = []
        for raw in got:
            batch = decode_batch(raw)
            # a chunk the worker could not unpickle: its items fail one by one (no re-send)
            outs.extend(remote.receive(batch) if not batch.rejected else remote.rejected(batch, {}))
        yield outs
    if hits:
        yield list(hits)


def _local_tasks(call: MapCall, feed: Feed) -> Iterator[object]:
    """One joblib task per chunk, run in this process (a thread backend)."""
    from joblib import delayed

    while pairs := feed.next():
        yield delayed(run_chunk_sync)(call.plan, pairs, call.prefix, call.args, call.kwargs)


def _remote_tasks(feed: Feed, remote: Remote, hits: list[Outcome]) -> Iterator[object]:
    """One joblib task per chunk through the worker protocol; cache hits go to ``hits``
    without a task."""
    from joblib import delayed

    from ._worker import run_task

    token = os.urandom(8).hex()
    cid = 0
    while pairs := feed.next():
        cid += 1
        items, blob = remote.pack(remote.admit(pairs, hits), hits)
        if items:
            yield delayed(run_task)(token, remote.spec_bytes, cid, [i for i, _, _ in items], blob)


# -- dask -----------------------------------------------------------------------------------


def outcomes(call: MapCall, source: Iterator[tuple[int, object]], window: Window) -> Iterator[list[Outcome]]:
    """``dask`` mode: chunks as tasks on the active ``Client`` or a LocalCluster it starts."""
    from ._dispatch import Remote

    remote = Remote(call)
    feed = Feed(source, window, ChunkSizer(0.05, 1000, call.total, call.workers, call.chunksize))
    return Scheduler(call, feed, window, remote, DaskTransport(call.workers, remote.spec_bytes)).run()


class _Task(Protocol):
    """What this transport uses of a ``distributed.Future`` (one chunk's task)."""

    def result(self) -> list[bytes]:
        """The task's pickled batches, or raise how it failed."""
        ...

    def cancel(self) -> object:
        """Drop the task if it has not run."""
        ...

    def add_done_callback(self, fn: Callable[[_Task], None]) -> None:
        """Call ``fn`` with this task when it ends."""
        ...


class _Closing(Protocol):
    """A client or cluster this map started."""

    def close(self) -> object:
        """Release it."""
        ...


class DaskTransport(Transport):
    """The scheduler's way to a dask.distributed cluster: one task per chunk.

    Up to two chunks per worker are queued. A task whose worker died (``KilledWorker``, after
    dask's own retries) charges every item it still held: dask does not say which was running.
    """

    #: chunks wait in dask's queue: send-to-result time does not measure the items
    measured = False

    def __init__(self, workers: int, spec: bytes) -> None:
        from distributed import Client

        try:
            self.client = Client.current()  # type: ignore[no-untyped-call]
            #: the client and cluster this map started (closed with it)
            self.owned: tuple[_Closing, _Closing] | None = None
        except ValueError:
            from distributed import LocalCluster

            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                silence_logs=40,
                # no dashboard: the scheduler's options exactly as dashboard_address=None sets
                # them (the parameter's inferred type is str, so they go in directly)
                scheduler_kwargs={"dashboard": False, "dashboard_address": None},
            )
            self.client = Client(cluster, set_as_default=False)  # type: ignore[no-untyped-call]
            self.owned = (self.client, cluster)
        self.workers = workers
        self.token = os.urandom(8).hex()
        self.spec = self.client.scatter(spec, broadcast=True) if len(spec) > 100_000 else spec
        self.futures: dict[_Task, int] = {}
        # completion callbacks (not distributed.wait, which wants a default client)
        self.finished: queue.SimpleQueue[_Task] = queue.SimpleQueue()

    def room(self) -> int:
        """Two queued chunks per worker."""
        return 2 * self.workers - len(self.futures)

    def send(self, chunk_id: int, indices: list[int], blob: bytes) -> None:
        """Submit the chunk as one task."""
        from ._worker import run_task

        fut: _Task = self.client.submit(run_task, self.token, self.spec, chunk_id, indices, blob, pure=False)
        self.futures[fut] = chunk_id
        fut.add_done_callback(self.finished.put)

    def poll(self, timeout: float) -> list[TransportEvent]:
        """The tasks that finished: their batches, or how they failed."""
        try:
            first = self.finished.get(timeout=timeout)
        except queue.Empty:
            return []
        events: list[TransportEvent] = []
        for fut in [first, *(self.finished.get() for _ in range(self.finished.qsize()))]:
            events.extend(self._done(fut))
        return events

    def _done(self, fut: _Task) -> list[TransportEvent]:
        from ._dispatch import decode_batch

        chunk_id = self.futures.pop(fut)
        try:
            raws = fut.result()
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":  # the worker died (more than once)
                return [Lost(chunk_id, WorkerLostError(f"dask worker lost: {exc!r}"), None)]
            return [Failed(chunk_id, exc)]  # dask itself failed the task: not a lost worker
        last = len(raws) - 1
        return [Arrived(chunk_id, decode_batch(raw), k == last) for k, raw in enumerate(raws)]

    def close(self, clean: bool) -> None:
        """Cancel what is still queued; close the cluster this map started."""
        for fut in self.futures:
            fut.cancel()
        if self.owned is not None:
            self.owned[0].close()
            self.owned[1].close()
