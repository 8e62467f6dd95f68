"""opero's own process pool for ``process`` and ``async_process`` maps.

Why not loky's global reusable executor: when user code in the same process also calls
``joblib.Parallel``, the two keep replacing each other's workers, and a dead worker breaks
the whole executor, failing every pending future, so the items the dead worker held cannot
be told apart. This pool is small and exact instead:

- each worker is ``python -c "...main(...)"`` over two pipes: no fork of a threaded parent,
  no re-import of the user's ``__main__``; functions travel with cloudpickle (notebook cells
  and ``__main__`` work);
- items travel by value too (cloudpickle); an item that cannot travel fails alone, at once;
- a worker runs one chunk at a time and streams results every few milliseconds; before each
  attempt it marks the item on a shared page (``_board``), so when it dies only the attempt it
  was running fails, with ``WorkerLostError`` (the item's own policy, ``Plan.recover``, goes on
  in the parent), its chunk-mates go out again without penalty and a fresh worker takes over;
  when several attempts ran at once (``async_process``) each runs again alone, without
  penalty, until the one that crashes is found;
- with ``timeout``, attempts report when they start and end, and a worker whose attempt
  runs past the limit (a C loop holding the GIL) is killed and replaced: a hard limit;
- workers ignore SIGINT; on Ctrl-C the parent kills them. They never outlive the parent,
  whatever kills it (``_lifeline``: a parent-death signal and a watchdog on a pipe).

The scheduling loop is ``_scheduler.Scheduler``, shared with dask; this module is its
transport (:class:`PoolTransport`).

The pool is kept warm between maps (like loky's) and closed at exit. An enclosing
``joblib.parallel_config(backend=...)`` bypasses it (see ``executors.dask``).
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait

from .._errors import WorkerLostError
from ._board import Board
from ._chunks import ChunkSizer, Feed, MapCall, Outcome, Window
from ._dispatch import Remote, decode_batch, describe_exit
from ._lifeline import life_fd, spawn
from ._scheduler import Arrived, Lost, Scheduler, Started, Transport, TransportEvent
from ._worker import TICK, Message, unpack_tick

__all__ = ["Pool", "PoolTransport", "outcomes", "process_outcomes"]

_BOOT = "from opero.executors._worker import main; main({r}, {w}, {b}, {parent}, {life})"


class _Worker:
    __slots__ = ("board", "chunk_id", "inbox", "outbox", "proc", "tokens")

    def __init__(self, env: dict[str, str]) -> None:
        r1, w1 = os.pipe()  # parent -> worker
        r2, w2 = os.pipe()  # worker -> parent
        #: the attempts the worker runs now, readable here after it died
        self.board = Board()
        life = life_fd()
        boot = _BOOT.format(r=r1, w=w2, b=self.board.fd, parent=os.getpid(), life=life)
        try:
            self.proc = spawn(
                [sys.executable, "-c", boot],
                pass_fds=(r1, w2, self.board.fd, life),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(r1)
            os.close(w2)
        self.inbox = Connection(w1, readable=False)
        self.outbox = Connection(r2, writable=False)
        self.tokens: set[str] = set()
        #: the chunk this worker runs (None when idle)
        self.chunk_id: int | None = None

    def send(self, message: Message) -> None:
        self.inbox.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def kill(self) -> None:
        for conn in (self.inbox, self.outbox):
            try:
                conn.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel is slow to reap
            pass
        self.board.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # the folder holding the opero package (this file is opero/executors/processes.py)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    env["OPERO_WORKER_PATH"] = os.pathsep.join(paths)
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    return env


class Pool:
    """``size`` worker processes owned by opero.

    Args:
        size: number of worker processes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        env = _env()
        self._env = env
        self.workers = [_Worker(env) for _ in range(size)]
        self.busy = threading.Lock()
        self.broken = False

    def replace(self, worker: _Worker) -> _Worker:
        """Kill ``worker`` (if still alive) and start a fresh one in its place."""
        worker.kill()
        fresh = _Worker(self._env)
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        """Stop every worker now."""
        self.broken = True
        for w in self.workers:
            w.kill()


_shared: Pool | None = None
_shared_lock = threading.Lock()


def acquire_pool(size: int) -> tuple[Pool, bool]:
    """The warm shared pool of ``size`` workers, or a private one when it is in use.

    Returns the pool and whether it is private (close it after the map).
    """
    global _shared
    with _shared_lock:
        pool = _shared
        if pool is not None and (pool.broken or pool.size != size):
            if pool.busy.acquire(blocking=False):
                pool.close()
                pool.busy.release()
                _shared = pool = None
            else:
                return Pool(size), True
        if pool is None:
            pool = _shared = Pool(size)
        if pool.busy.acquire(blocking=False):
            return pool, False
    return Pool(size), True


def release_pool(pool: Pool, private: bool) -> None:
    """Give back a pool from :func:`acquire_pool`."""
    if private:
        pool.close()
    else:
        pool.busy.release()


@atexit.register
def _close_shared() -> None:
    if _shared is not None:
        _shared.close()


def outcomes(call: MapCall, source: Iterator[tuple[int, object]], window: Window) -> Iterator[list[Outcome]]:
    """``process`` and ``async_process`` modes: the items of ``call`` on opero's pool."""
    concurrency = 1
    if call.mode == "async_process" and call.plan.is_async:
        # a chunk's items run at once on the worker's loop: chunks of that size
        per = -(-call.total // call.workers) if call.total else 16
        concurrency = max(1, min(64, per))
    return process_outcomes(call, source, window, concurrency)


def process_outcomes(
    call: MapCall, source: Iterator[tuple[int, object]], window: Window, concurrency: int = 1
) -> Iterator[list[Outcome]]:
    """Run ``call``'s items on the pool; yield outcome batches as they arrive."""
    remote = Remote(call, concurrency)
    cap = 1000 if concurrency == 1 else max(1, concurrency)
    fixed = call.chunksize if call.chunksize is not None or concurrency == 1 else concurrency
    feed = Feed(source, window, ChunkSizer(0.05, cap, call.total, call.workers, fixed))
    transport = PoolTransport(call.workers, remote.spec_bytes)
    return Scheduler(call, feed, window, remote, transport).run()


class PoolTransport(Transport):
    """The scheduler's way to opero's pool: one chunk per worker, over its pipes.

    Attempts report their start and end under a timeout (hard limits), and a dead worker's
    board names the attempts it was running.
    """

    ticks = True

    def __init__(self, workers: int, spec: bytes) -> None:
        self.spec = spec
        self.token = os.urandom(8).hex()
        self.pool, self.private = acquire_pool(workers)
        self.by_chunk: dict[int, _Worker] = {}
        #: each chunk's item indices in the order sent (a dead worker's board names positions)
        self.order: dict[int, list[int]] = {}
        self.pending: list[TransportEvent] = []

    def room(self) -> int:
        """Idle workers."""
        return sum(1 for w in self.pool.workers if w.chunk_id is None)

    def send(self, chunk_id: int, indices: list[int], blob: bytes) -> None:
        """Give the chunk to an idle worker (its map's setup first, once per worker)."""
        worker = next(w for w in self.pool.workers if w.chunk_id is None)
        worker.chunk_id = chunk_id
        self.by_chunk[chunk_id] = worker
        self.order[chunk_id] = indices
        try:
            if self.token not in worker.tokens:
                worker.send(("setup", self.token, self.spec))
                worker.tokens.add(self.token)
            worker.send(("chunk", self.token, (chunk_id, indices, blob)))
        except OSError:
            self.pending.append(self._lost(worker))

    def poll(self, timeout: float) -> list[TransportEvent]:
        """Results, attempt starts and deaths of the busy workers."""
        if self.pending:
            events, self.pending = self.pending, []
            return events
        busy = {w.outbox: w for w in self.pool.workers if w.chunk_id is not None}
        out: list[TransportEvent] = []
        for conn in wait(list(busy), timeout=timeout):
            out.append(self._read(busy[conn]))  # type: ignore[index]
        return out

    def _read(self, worker: _Worker) -> TransportEvent:
        chunk_id = worker.chunk_id
        assert chunk_id is not None
        try:
            raw = worker.outbox.recv_bytes()
        except (EOFError, OSError):
            return self._lost(worker)
        if raw[:1] == TICK:
            idx, started = unpack_tick(raw)
            return Started(chunk_id, idx, started)
        batch = decode_batch(raw[1:])
        final = batch.final or batch.rejected
        if final:
            worker.chunk_id = None
            self.by_chunk.pop(chunk_id, None)
            self.order.pop(chunk_id, None)
        return Arrived(chunk_id, batch, final)

    def _lost(self, worker: _Worker) -> Lost:
        """The worker died: what its board says it was running, and a fresh worker."""
        try:
            code = worker.proc.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        chunk_id = worker.chunk_id
        assert chunk_id is not None
        self.by_chunk.pop(chunk_id, None)
        order = self.order.pop(chunk_id, [])
        running = worker.board.running()  # async attempts in flight
        span_id, first, end = worker.board.span()
        if span_id == chunk_id:  # the sync sub-batch that was running
            running.update(order[first:end])
        detail = describe_exit(worker.proc.pid, code)
        self.pool.replace(worker)
        return Lost(chunk_id, WorkerLostError(detail, code), running)

    def cancel(self, chunk_id: int) -> None:
        """Kill the worker running ``chunk_id`` and start a fresh one."""
        worker = self.by_chunk.pop(chunk_id, None)
        self.order.pop(chunk_id, None)
        if worker is not None:
            self.pool.replace(worker)

    def close(self, clean: bool) -> None:
        """Drop this map's setup from the workers, or (interrupted) stop them all."""
        pool = self.pool
        if not clean:
            # Interrupted (Ctrl-C, an abandoned stream, an error): workers may be busy with
            # our items; stop them all now rather than wait.
            pool.close()
        for w in pool.workers if clean else ():
            try:
                if self.token in w.tokens:
                    w.send(("drop", self.token, None))
                    w.tokens.discard(self.token)
            except OSError:
                pass
        release_pool(pool, self.private)
