"""The worker side of process, async_process and dask maps.

A worker rebuilds the Plan from ``(func, options)`` (a Plan holds locks and cannot travel),
but keeps the parent's limiter so every worker spends one shared budget. Caching is
done by the parent (hits are never dispatched; results land in the parent's cache), so the
worker plan runs uncached. Callbacks run in the parent too: the worker relays its events and
its counters home with each batch of results.

:func:`main` is the loop of an opero pool worker process: it reads ``setup``/``chunk``/``drop``
messages and answers with result batches.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import pickle
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

from .._attempt import Gate
from .._decisions import Args, Attempt, Kwargs
from .._errors import RemoteError, portable, stand_in
from .._limit import Limiter
from .._policy import ItemPlan, PlanParts, rebuild
from .._telemetry import Event, FunctionStats
from .._testing import state as testing_state
from .._threads import call_with_timeout
from ._board import Board
from ._chunks import RUNNING, Chunk, Outcome, run_chunk_async, run_chunk_sync
from ._lifeline import guard

__all__ = [
    "BATCH",
    "TICK",
    "Batch",
    "ChunkBody",
    "ChunkRunner",
    "Message",
    "Sent",
    "Spec",
    "encode_batch",
    "run_task",
    "unpack_tick",
]

_NO_CALLBACKS: dict[str, object] = {
    "on_retry": None,
    "on_success": None,
    "on_failure": None,
    "on_cache_hit": None,
}


@dataclass
class Spec:
    """What a worker needs to run one map's items (sent once per worker per map)."""

    #: the parent's plan, to rebuild (its limiter None when it could not travel)
    parts: PlanParts
    #: when the limiter could not travel: the rate this worker may use on its own
    rate_share: float | None
    prefix: Args
    args: Args
    kwargs: Kwargs
    #: items of a chunk run at once on the worker's event loop (async_process)
    concurrency: int = 1
    #: events to send home: True (all), or the kinds the parent listens to (none: no relay)
    relay: bool | frozenset[str] = True
    #: the parent's ``opero.testing()`` mode (active, cache), applied in the worker too
    testing: tuple[bool, bool] = (False, True)


@dataclass
class Batch:
    """Results of (part of) a chunk, with the counters and events that produced them."""

    chunk_id: int
    outcomes: list[Outcome]
    stats: dict[str, object]
    events: list[Event]
    final: bool
    #: the worker could not unpickle the chunk's items (``outcomes`` hold that error)
    rejected: bool = False


#: where a worker hands each batch of results (to the parent's pipe, or a task's return)
Flush = Callable[[Batch], None]

#: an item on its way to a worker: ``(index, payload, single)``. A full item runs with the
#: whole policy (``payload`` is the item); a single one runs exactly one attempt, the
#: ``Attempt`` in ``payload``, because the parent drives its policy (an earlier attempt
#: died with a worker).
Sent = tuple[int, object, bool]

#: the body of a ``chunk`` message: ``(chunk_id, indices, blob)``, ``blob`` the pickled ``Sent`` list
ChunkBody = tuple[int, list[int], bytes]
#: a message from the parent to a pool worker: ``(kind, map token, body)``; the body of a
#: ``setup`` is the pickled :class:`Spec`, of a ``chunk`` a :data:`ChunkBody`, of a ``drop``
#: or an ``exit`` None
Message = tuple[str, str, bytes | ChunkBody | None]


class _Group(NamedTuple):
    """A run of items of one kind (full items, or single attempts) within a chunk."""

    chunk_id: int
    #: position of its first item in the chunk
    base: int
    items: Chunk
    singles: _Singles | None
    #: the chunk's last group: its last batch is final
    last: bool


class ChunkRunner:
    """Runs one map's chunks in a worker process: the plan rebuilt from its :class:`Spec`.

    Each thread of the process gets its own plan (a dask worker runs several chunks at
    once), so the counters a batch exports are exactly that batch's. The plan is reached as
    an :class:`~opero._policy.ItemPlan`, its single attempts through its ``Gate``.
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._local = threading.local()
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def hard(self) -> bool:
        """Whether attempts report their start and end (the parent enforces ``timeout``)."""
        return self.spec.parts.options.timeout is not None and _tick is not None

    def plan(self) -> ItemPlan:
        """This thread's plan for the map."""
        return self._own()[0]

    def _own(self) -> tuple[ItemPlan, Gate]:
        """This thread's plan and its attempt gate, rebuilt on first use (:func:`rebuild`)."""
        own: tuple[ItemPlan, Gate] | None = getattr(self._local, "own", None)
        if own is None:
            spec = self.spec
            plan = rebuild(self._parts())
            plan.recorder.relay = [] if spec.relay else None
            plan.recorder.relay_kinds = spec.relay if isinstance(spec.relay, frozenset) else None
            own = (plan, plan.gate)
            self._local.own = own
        return own

    def _parts(self) -> PlanParts:
        """The parent's parts as this worker runs them: uncached, no callbacks, in a map."""
        spec = self.spec
        parts = spec.parts
        # the parent's breaker travels in the parts (its state is shared through the store)
        opts = parts.options.replace(cache=False, circuit_breaker=None, **_NO_CALLBACKS)
        func = parts.func
        if self.hard and _tick is not None and opts.timeout is not None:
            # the wrapper applies the timeout (soft here, hard in the parent)
            func = _reporting(func, opts.timeout, parts.name, _tick)
            opts = opts.replace(timeout=None)
        if _board is not None and inspect.iscoroutinefunction(func):
            # several attempts at once: each marks its item (the parent reads it if we die)
            func = _board.watch(func, RUNNING.get)
        limiter = parts.limiter
        if limiter is None and spec.rate_share is not None:
            limiter = Limiter(parts.name, spec.rate_share, opts.rate_burst)
        return parts._replace(func=func, options=opts, limiter=limiter, in_map=True)

    def fresh_stats(self, plan: ItemPlan) -> FunctionStats:
        """Swap in empty counters so each batch exports a delta (this thread's plan only)."""
        st = FunctionStats(self.spec.parts.name)
        plan.stats = st
        plan.recorder.stats = st
        return st

    def run(self, chunk_id: int, items: list[Sent], flush: Flush) -> None:
        """Run ``items``; call ``flush`` with batches of outcomes.

        Sync plans flush every few milliseconds, so when this process dies only the items
        it held since the last flush are lost.
        """
        spec = self.spec
        testing_state.active, testing_state.cache = spec.testing
        plan, gate = self._own()
        # consecutive runs of full items and of single attempts, in the order sent
        groups: list[tuple[bool, Chunk]] = []
        for idx, payload, single in items:
            if not groups or groups[-1][0] != single:
                groups.append((single, []))
            groups[-1][1].append((idx, payload))
        base = 0  # position of the group's first item in the chunk
        for g, (single, chunk) in enumerate(groups):
            runner = _Singles(gate, chunk) if single else None
            group = _Group(chunk_id, base, chunk, runner, g == len(groups) - 1)
            (self._run_async if plan.is_async else self._run_sync)(plan, group, flush)
            base += len(chunk)

    def _run_async(self, plan: ItemPlan, group: _Group, flush: Flush) -> None:
        """A group of items on this worker's event loop, ``concurrency`` at once; one batch."""
        spec, singles = self.spec, group.singles
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        st = self.fresh_stats(plan)
        if singles is not None:
            outs = self.loop.run_until_complete(singles.run_async(spec.concurrency))
        else:
            outs = self.loop.run_until_complete(
                run_chunk_async(plan, group.items, spec.prefix, spec.args, spec.kwargs, spec.concurrency)
            )
        flush(self._batch(group.chunk_id, plan, st, outs, group.last))

    def _run_sync(self, plan: ItemPlan, group: _Group, flush: Flush) -> None:
        """A group of items in order, flushed in sub-batches about 5 ms apart, each marked on
        the board before it runs."""
        spec = self.spec
        chunk_id, base, chunk, singles, last = group
        start = 0
        step = 1
        while start < len(chunk):
            st = self.fresh_stats(plan)
            t0 = time.perf_counter()
            part = chunk[start : start + step]
            if _board is not None:
                _board.running_span(chunk_id, base + start, base + start + len(part))
            if self.hard:  # one item per batch: the attempt's ticks name it
                RUNNING.set(part[0][0])
            if singles is not None:
                outs = singles.run_sync(start, start + len(part))
            else:
                outs = run_chunk_sync(plan, part, spec.prefix, spec.args, spec.kwargs)
            start += len(part)
            took = time.perf_counter() - t0
            # Grow the sub-batch while items are fast: ~5 ms between flushes. Under a hard
            # timeout, one item per batch (its end must reach the parent at once).
            step = max(1, min(len(chunk), int(step * 0.005 / took) if took > 0 else step * 2))
            if self.hard:
                step = 1
            flush(self._batch(chunk_id, plan, st, outs, last and start >= len(chunk)))

    @staticmethod
    def _batch(chunk_id: int, plan: ItemPlan, st: FunctionStats, outs: list[Outcome], final: bool) -> Batch:
        relay = plan.recorder.relay
        events: list[Event] = []
        if relay:
            events = list(relay)
            relay.clear()
        return Batch(chunk_id, outs, st.export(), events, final)


class _Singles:
    """A group of single attempts (the parent drives their policy): one attempt each, through
    the plan's gate; the parent counts them and decides what follows."""

    __slots__ = ("gate", "steps")

    def __init__(self, gate: Gate, chunk: Chunk) -> None:
        self.gate = gate
        #: each payload of a single item is an ``Attempt`` (see ``Sent``)
        self.steps = [(idx, step) for idx, step in chunk if isinstance(step, Attempt)]

    def run_sync(self, start: int, end: int) -> list[Outcome]:
        """The attempts at positions ``start:end``, in order."""
        out: list[Outcome] = []
        for idx, step in self.steps[start:end]:
            RUNNING.set(idx)
            try:
                out.append((idx, True, self.gate.attempt_sync(step.args, step.kwargs), None))
            except Exception as exc:
                out.append((idx, False, exc, None))
        return out

    async def run_async(self, concurrency: int) -> list[Outcome]:
        """All the attempts on the running loop, ``concurrency`` at once."""
        out: list[Outcome] = []
        steps = iter(self.steps)
        attempt = self.gate.attempt_async

        async def lane() -> None:
            for idx, step in steps:
                RUNNING.set(idx)
                try:
                    out.append((idx, True, await attempt(step.args, step.kwargs), None))
                except Exception as exc:
                    out.append((idx, False, exc, None))

        await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, len(self.steps))))))
        return out


# -- hard timeouts: attempts tell the parent when they start and end ----------------------

#: message tags on the worker -> parent pipe: a result batch, or an attempt's start/end
BATCH = b"B"
TICK = b"T"
_TICK = struct.Struct("<q?")

#: set in an opero pool worker: tell the parent an attempt of item ``idx`` started/ended
_tick: Callable[[int, bool], None] | None = None
#: set in an opero pool worker: the page naming the attempts running now (read if we die)
_board: Board | None = None


def unpack_tick(raw: bytes) -> tuple[int, bool]:
    """``(index, started)`` of a tick message."""
    idx, started = _TICK.unpack(raw[1:])
    return int(idx), bool(started)


def _reporting(
    func: Callable[..., object], timeout: float, name: str, tick: Callable[[int, bool], None]
) -> Callable[..., object]:
    """``func`` under the soft ``timeout``, telling the parent when each attempt starts and
    ends, so the parent can kill this worker when an attempt holds on past the limit (a C
    loop holding the GIL never lets the soft limit fire)."""
    if inspect.iscoroutinefunction(func):
        coro = func  # narrowed: the closure awaits an ``async def``

        @functools.wraps(func)  # the signature stays the function's (arg_fallback reads it)
        async def attempt_async(*args: object, **kwargs: object) -> object:
            idx = RUNNING.get()
            tick(idx, True)
            try:
                async with asyncio.timeout(timeout):
                    return await coro(*args, **kwargs)
            except TimeoutError as exc:
                raise TimeoutError(f"{name}: attempt exceeded timeout={timeout}s") from exc
            finally:
                tick(idx, False)

        return attempt_async

    @functools.wraps(func)
    def attempt(*args: object, **kwargs: object) -> object:
        idx = RUNNING.get()
        tick(idx, True)
        try:
            return call_with_timeout(func, args, kwargs, timeout, name)
        finally:
            tick(idx, False)

    return attempt


# -- tasks for dask / joblib backends: one call per chunk, the plan cached per process --------

_runners: dict[str, ChunkRunner] = {}
_runners_lock = threading.Lock()


def run_task(token: str, spec_bytes: bytes, chunk_id: int, indices: list[int], blob: bytes) -> list[bytes]:
    """Run one chunk in a dask or joblib worker; returns the pickled batches."""
    items = load_items(chunk_id, indices, blob)
    if isinstance(items, Batch):
        return [encode_batch(items)]
    with _runners_lock:  # the threads of one dask worker share the runner, not its plans
        wp = _runners.get(token)
        if wp is None:
            import cloudpickle

            # No _quiet_logger() here: a dask worker may be a thread of the caller's own
            # process (LocalCluster(processes=False)), and disabling the logger would silence
            # the caller for good. Relayed events are not delivered here anyway.
            wp = _runners[token] = ChunkRunner(cloudpickle.loads(spec_bytes))
            while len(_runners) > 8:  # keep only recent maps' runners
                _runners.pop(next(iter(_runners)))
    out: list[bytes] = []
    wp.run(chunk_id, items, lambda b: out.append(encode_batch(b)))
    return out


def _quiet_logger() -> None:
    # The parent logs relayed events; logging them here too would print them twice.
    from .._telemetry import logger

    logger.disabled = True


def encode_batch(batch: Batch) -> bytes:
    """Pickle a batch for the parent so that one bad value costs only its own item.

    The wire form is a plain ``pickle`` of builtins (it always loads in the parent):
    ``(chunk_id, final, stats, ok_indices, ok_blob, failures, events_blob, rejected)``.

    - Results of the successful items travel together in ``ok_blob`` (cloudpickle: fast
      for many small values). A result that cannot be pickled fails its item alone.
    - Each failure travels on its own: ``(index, blob, stand_in)``, where ``blob`` is the
      cloudpickled ``(exception, item)`` (made :func:`~opero._errors.portable` here, so an
      exception that cannot be rebuilt arrives as a ``RemoteError``) and ``stand_in`` the
      plain-valued form the parent uses if the blob still cannot be loaded there.
    - Events carry portable errors; events that cannot be pickled are dropped.
    """
    import cloudpickle

    ok_idx: list[int] = []
    ok_values: list[object] = []
    failures: list[tuple[int, bytes, BaseException]] = []
    for idx, ok, value, item in batch.outcomes:
        if ok:
            ok_idx.append(idx)
            ok_values.append(value)
        else:
            failures.append(_pack_failure(idx, value, item))
    try:
        ok_blob = bytes(cloudpickle.dumps(ok_values))
    except Exception:
        ok_blob, kept = _pack_results(ok_idx, ok_values, failures)
        ok_idx = kept
    events_blob = _pack_events(batch.events)
    wire = (batch.chunk_id, batch.final, batch.stats, ok_idx, ok_blob, failures, events_blob, batch.rejected)
    return pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)


def _pack_events(events: list[Event]) -> bytes:
    """The events with portable errors, pickled; those that cannot be pickled are dropped."""
    import cloudpickle

    events = [e if e.error is None else replace(e, error=portable(e.error)) for e in events]
    try:
        return bytes(cloudpickle.dumps(events))
    except Exception:
        good = []
        for ev in events:
            try:
                cloudpickle.dumps(ev)
            except Exception:
                continue
            good.append(ev)
        return bytes(cloudpickle.dumps(good))


def _pack_failure(idx: int, error: BaseException, item: object) -> tuple[int, bytes, BaseException]:
    import cloudpickle

    sent = portable(error)
    try:
        blob = bytes(cloudpickle.dumps((sent, item)))
    except Exception:
        # the item came from the parent, so this is rare: keep the error, drop the item
        blob = bytes(cloudpickle.dumps((sent, None)))
    # the parent's fallback when the blob cannot be loaded there: a stand-in of plain values
    return idx, blob, sent if sent is not error else stand_in(error)


def _pack_results(
    idx: list[int], values: list[object], failures: list[tuple[int, bytes, BaseException]]
) -> tuple[bytes, list[int]]:
    """Some result cannot be pickled: find which, fail those items, keep the rest."""
    import cloudpickle

    kept_idx: list[int] = []
    kept: list[object] = []
    for i, value in zip(idx, values, strict=True):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            err = RemoteError(
                "opero.UnpicklableResult",
                f"the result of this item ({type(value).__module__}.{type(value).__qualname__}) "
                f"cannot be pickled to leave the worker: {type(exc).__name__}: {exc}",
            )
            failures.append((i, bytes(cloudpickle.dumps((err, None))), err))
            continue
        kept_idx.append(i)
        kept.append(value)
    return bytes(cloudpickle.dumps(kept)), kept_idx


def load_items(chunk_id: int, indices: list[int], blob: bytes) -> list[Sent] | Batch:
    """The chunk's items, or a rejected batch naming why they cannot be unpickled here."""
    import cloudpickle

    try:
        items: list[Sent] = cloudpickle.loads(blob)
        return items
    except BaseException as exc:
        error = portable(exc)
        return Batch(chunk_id, [(i, False, error, None) for i in indices], {}, [], True, True)


# -- pool worker main loop ------------------------------------------------------------------


def main(read_fd: int, write_fd: int, board_fd: int, parent: int, life_fd: int) -> None:
    """Serve one opero pool worker until the parent closes the pipe (or dies)."""
    import signal
    from multiprocessing.connection import Connection

    guard(parent, life_fd)  # never outlive the parent, whatever kills it
    # Ctrl-C goes to the whole process group; the parent decides and terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra = [p for p in os.environ.get("OPERO_WORKER_PATH", "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in extra if p not in sys.path]
    _quiet_logger()
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    plans: dict[str, ChunkRunner | _Broken] = {}

    def flush(batch: Batch) -> None:
        outbox.send_bytes(BATCH + encode_batch(batch))

    def tick(idx: int, started: bool) -> None:
        outbox.send_bytes(TICK + _TICK.pack(idx, started))

    global _tick, _board
    _tick = tick
    _board = Board(board_fd)

    while True:
        try:
            raw = inbox.recv_bytes()
        except (EOFError, OSError):
            return
        kind, token, body = pickle.loads(raw)  # see Message
        if kind == "exit":
            return
        if kind == "setup":
            plans[token] = _setup(body)
        elif kind == "chunk":
            _chunk(plans, token, body, flush)
        elif kind == "drop":
            plans.pop(token, None)


def _setup(body: bytes) -> ChunkRunner | _Broken:
    """A map's ``setup`` message: its runner, or (it cannot load here) why."""
    import cloudpickle

    try:
        return ChunkRunner(cloudpickle.loads(body))
    except BaseException as exc:
        # The parent sees the error on each chunk of this map instead of a hang.
        return _Broken(exc)


def _chunk(plans: dict[str, ChunkRunner | _Broken], token: str, body: ChunkBody, flush: Flush) -> None:
    """A ``chunk`` message: run its items with the map's runner, or fail them with its error."""
    chunk_id, indices, blob = body
    items = load_items(chunk_id, indices, blob)
    if isinstance(items, Batch):
        flush(items)
        return
    wp = plans.get(token)
    if isinstance(wp, ChunkRunner):
        try:
            wp.plan()  # a plan that cannot be built here fails the items, not the worker
        except Exception as exc:
            wp = plans[token] = _Broken(exc)
        else:
            wp.run(chunk_id, items, flush)
            return
    err = wp.error if wp is not None else RuntimeError("opero: worker lost its setup")
    flush(Batch(chunk_id, [(i, False, err, it) for i, it, _ in items], {}, [], True))


class _Broken:
    def __init__(self, error: BaseException) -> None:
        self.error = RuntimeError(f"opero: the mapped function could not be loaded in a worker: {error!r}")
