"""opero's own process pool for ``process`` and ``async_process`` maps.

Why not loky's global reusable executor: when user code in the same process also calls
``joblib.Parallel``, the two keep replacing each other's workers, and a dead worker breaks
the whole executor, failing every pending future, so the items the dead worker held cannot
be told apart (TESTING.md). This pool is small and exact instead:

- each worker is ``python -c "...main(r, w)"`` over two pipes: no fork of a threaded parent,
  no re-import of the user's ``__main__``; functions travel with cloudpickle (notebook cells
  and ``__main__`` work);
- items travel by value too (cloudpickle); an item that cannot travel fails alone, at once;
- a worker runs one chunk at a time and streams results every few milliseconds, so when it
  dies, exactly the items it still held lose one attempt with ``WorkerLostError`` (their own
  policy, ``Plan.recover``, goes on in the parent) and a fresh worker takes over;
- with ``timeout``, attempts report when they start and end, and a worker whose attempt
  runs past the limit (a C loop holding the GIL) is killed and replaced: a hard limit;
- workers ignore SIGINT; on Ctrl-C the parent kills them, and they exit by themselves when
  the parent's pipe closes, so no orphan survives even a killed parent.

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
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from .._errors import WorkerLostError
from ._board import Board
from ._chunks import ChunkSizer, Feed, MapCall, Outcome, Window
from ._dispatch import Remote, decode_batch, describe_exit
from ._lifeline import life_fd, spawn
from ._worker import TICK, Sent, unpack_tick

__all__ = ["Pool", "outcomes", "process_outcomes"]

_BOOT = "from opero.executors._worker import main; main({r}, {w}, {b}, {parent}, {life})"


class _Worker:
    __slots__ = (
        "board", "chunk_id", "held", "inbox", "outbox", "proc", "sent_at", "size", "started", "tokens"
    )

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
        #: the chunk this worker runs (None when idle) and the items it has not answered yet
        self.chunk_id: int | None = None
        self.held: dict[int, tuple[Any, bool]] = {}
        #: attempts running now under a timeout: index -> when the worker said it started
        self.started: dict[int, float] = {}
        self.sent_at = 0.0
        self.size = 0

    def send(self, message: tuple[str, str, Any]) -> None:
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


def outcomes(call: MapCall, source: Iterator[tuple[int, Any]], window: Window) -> Iterator[list[Outcome]]:
    """``process`` and ``async_process`` modes: the items of ``call`` on opero's pool."""
    concurrency = 1
    if call.mode == "async_process" and call.plan.is_async:
        # a chunk's items run at once on the worker's loop: chunks of that size
        per = -(-call.total // call.workers) if call.total else 16
        concurrency = max(1, min(64, per))
    return process_outcomes(call, source, window, concurrency)


#: how long past ``timeout`` an attempt may run before its worker is killed (the worker's
#: own soft limit answers first whenever the attempt lets it, e.g. while it sleeps)
HARD_GRACE = 0.5


def process_outcomes(
    call: MapCall, source: Iterator[tuple[int, Any]], window: Window, concurrency: int = 1
) -> Iterator[list[Outcome]]:
    """Run ``call``'s items on the pool; yield outcome batches as they arrive."""
    remote = Remote(call, concurrency)
    token = os.urandom(8).hex()
    pool, private = acquire_pool(call.workers)
    cap = 1000 if concurrency == 1 else max(1, concurrency)
    fixed = call.chunksize if call.chunksize is not None or concurrency == 1 else concurrency
    feed = Feed(source, window, ChunkSizer(0.05, cap, call.total, call.workers, fixed))
    hard = call.plan.timeout + HARD_GRACE if call.plan.timeout is not None else None
    next_id = 0
    clean = False
    try:
        while True:
            ready: list[Outcome] = []
            pause = remote.due()
            # 1. give every idle worker a chunk: re-sent items alone, then fresh ones
            for worker in list(pool.workers):
                if worker.chunk_id is not None:
                    continue
                items: list[Sent] = []
                if remote.retry:
                    items = [remote.retry.popleft()]
                elif remote.again:
                    items = remote.take_again(feed.sizer.next())
                while not items:
                    pairs = feed.next(block=False)
                    if not pairs:
                        break
                    items = remote.admit(pairs, ready)
                if not items:
                    continue
                items, blob = remote.pack(items, ready)
                if not items:
                    continue
                next_id += 1
                held = {i: (payload, single) for i, payload, single in items}
                try:
                    if token not in worker.tokens:
                        worker.send(("setup", token, remote.spec_bytes))
                        worker.tokens.add(token)
                    worker.send(("chunk", token, (next_id, [i for i, _, _ in items], blob)))
                except OSError:
                    worker.held = held
                    ready.extend(_lost(pool, worker, remote))
                    continue
                worker.chunk_id = next_id
                worker.held = held
                worker.sent_at = time.perf_counter()
                worker.size = len(items)
            if ready:
                yield ready
                continue
            busy = [w for w in pool.workers if w.chunk_id is not None]
            if not busy:
                if feed.dry and not remote.retry and not remote.again and not remote.waiting:
                    break
                if remote.waiting or remote.retry:
                    # items wait for their backoff: nothing else to do until the first is due
                    time.sleep(min(0.2, max(0.0, pause or 0.0)))
                    continue
                # every item is waiting for the consumer to release room: wait for it
                if window.acquire(1):
                    window.release(1)
                continue
            # 2. wait for results, deaths, or an attempt over its hard timeout
            wait_for = 0.2 if pause is None else max(0.0, min(0.2, pause))
            if hard is not None:
                wait_for = min(wait_for, _next_overdue(busy, hard))
            for conn in wait([w.outbox for w in busy], timeout=wait_for):
                worker = next(w for w in busy if w.outbox is conn)
                try:
                    raw = worker.outbox.recv_bytes()
                except (EOFError, OSError):
                    ready.extend(_lost(pool, worker, remote))
                    continue
                if raw[:1] == TICK:
                    idx, started = unpack_tick(raw)
                    if started:
                        worker.started[idx] = time.perf_counter()
                    else:
                        worker.started.pop(idx, None)
                    continue
                batch = decode_batch(raw[1:])
                if batch.rejected:
                    ready.extend(remote.rejected(batch, worker.held))
                    worker.chunk_id = None
                    worker.held = {}
                    continue
                for i, *_ in batch.outcomes:
                    worker.held.pop(i, None)
                if batch.final:
                    feed.sizer.observe(worker.size, time.perf_counter() - worker.sent_at)
                    worker.chunk_id = None
                    worker.held = {}
                    worker.started.clear()
                ready.extend(remote.receive(batch))
            if hard is not None:
                for worker in busy:
                    if worker.chunk_id is not None and worker in pool.workers:
                        ready.extend(_overdue(pool, worker, remote, hard, call))
            if call.stop.is_set():
                raise KeyboardInterrupt
            if ready:
                yield ready
        clean = True
    finally:
        if clean:
            for w in pool.workers:
                try:
                    if token in w.tokens:
                        w.send(("drop", token, None))
                        w.tokens.discard(token)
                except OSError:
                    pass
            release_pool(pool, private)
        else:
            # Interrupted (Ctrl-C, an abandoned stream, an error): workers may be busy with
            # our items; stop them all now rather than wait.
            pool.close()
            release_pool(pool, private)


def _next_overdue(busy: list[_Worker], hard: float) -> float:
    """Seconds until the first running attempt passes its hard limit."""
    now = time.perf_counter()
    starts = [t for w in busy for t in w.started.values()]
    return max(0.0, min(starts) + hard - now) if starts else 0.2


def _overdue(pool: Pool, worker: _Worker, remote: Remote, hard: float, call: MapCall) -> list[Outcome]:
    """Kill ``worker`` when one of its attempts ran past the hard limit (SPEC: ``timeout`` is
    a hard limit in process modes); that attempt fails with ``TimeoutError``, the worker's
    other items go back to be sent again as they were (they did nothing wrong)."""
    now = time.perf_counter()
    late = [i for i, t in worker.started.items() if now - t > hard]
    if not late:
        return []
    held = worker.held
    worker.held = {}
    pool.replace(worker)
    timeout = call.plan.timeout
    error = TimeoutError(f"{call.plan.name}: attempt exceeded timeout={timeout}s (worker replaced)")
    out = remote.lose({i: held[i] for i in late if i in held}, error)
    remote.again.extend((i, payload, single) for i, (payload, single) in held.items() if i not in late)
    return out


def _lost(pool: Pool, worker: _Worker, remote: Remote) -> list[Outcome]:
    try:
        code = worker.proc.wait(2)
    except subprocess.TimeoutExpired:
        code = None
    held = worker.held
    running = worker.board.running() & held.keys()
    detail = describe_exit(worker.proc.pid, code)
    pool.replace(worker)
    return remote.died(held, running, WorkerLostError(detail, code))
