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
import os
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .._errors import RemoteError, portable, stand_in
from .._limit import Limiter
from .._options import Options
from .._policy import Plan
from .._telemetry import Event, FunctionStats
from .._testing import state as testing_state
from ._chunks import Chunk, Outcome, run_chunk_async, run_chunk_sync

__all__ = ["Batch", "Spec", "WorkerPlan", "encode_batch", "run_task"]

_NO_CALLBACKS = {"on_retry": None, "on_success": None, "on_failure": None, "on_cache_hit": None}


@dataclass
class Spec:
    """What a worker needs to run one map's items (sent once per worker per map)."""

    func: Callable[..., Any]
    options: Options
    name: str
    limiter: Limiter | None
    #: when the limiter could not travel: the rate this worker may use on its own
    rate_share: float | None
    prefix: tuple[Any, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: items of a chunk run at once on the worker's event loop (async_process)
    concurrency: int = 1
    #: relayed event kinds are skipped when the parent has no listener for them
    relay: bool = True
    #: the parent's ``opero.testing()`` mode (active, cache), applied in the worker too
    testing: tuple[bool, bool] = (False, True)


@dataclass
class Batch:
    """Results of (part of) a chunk, with the counters and events that produced them."""

    chunk_id: int
    outcomes: list[Outcome]
    stats: dict[str, Any]
    events: list[Event]
    final: bool
    #: the worker could not unpickle the chunk's items (``outcomes`` hold that error)
    rejected: bool = False


class WorkerPlan:
    """A Plan rebuilt in a worker, plus variants with fewer retries for items re-sent after
    their worker died (those deaths already used some of the item's rounds)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._plans: dict[int, Plan] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def plan(self, used_rounds: int = 0) -> Plan:
        """The plan for an item whose earlier ``used_rounds`` rounds died with their worker."""
        plan = self._plans.get(used_rounds)
        if plan is None:
            spec = self.spec
            opts = spec.options.replace(
                cache=False, retries=max(0, spec.options.retries - used_rounds), **_NO_CALLBACKS
            )
            plan = Plan(spec.func, opts, spec.name)
            if spec.limiter is not None:
                plan.limiter = spec.limiter
            elif spec.rate_share is not None and plan.limiter is not None:
                plan.limiter = Limiter(spec.name, spec.rate_share, plan.limiter.burst)
            plan.recorder.relay = [] if spec.relay else None
            self._plans[used_rounds] = plan
        return plan

    def fresh_stats(self, plan: Plan) -> FunctionStats:
        """Swap in empty counters so each batch exports a delta."""
        st = FunctionStats(self.spec.name)
        plan.stats = st
        plan.recorder.stats = st
        return st

    def run(self, chunk_id: int, items: list[tuple[int, Any, int]], flush: Callable[[Batch], None]) -> None:
        """Run ``items`` (index, item, used_rounds); call ``flush`` with batches of outcomes.

        Sync plans flush every few milliseconds, so when this process dies only the items
        it held since the last flush are lost.
        """
        spec = self.spec
        testing_state.active, testing_state.cache = spec.testing
        by_rounds: dict[int, Chunk] = {}
        for idx, item, used in items:
            by_rounds.setdefault(used, []).append((idx, item))
        groups = list(by_rounds.items())
        for g, (used, chunk) in enumerate(groups):
            plan = self.plan(used)
            last_group = g == len(groups) - 1
            if plan.is_async:
                if self.loop is None:
                    self.loop = asyncio.new_event_loop()
                st = self.fresh_stats(plan)
                outs = self.loop.run_until_complete(
                    run_chunk_async(plan, chunk, spec.prefix, spec.args, spec.kwargs, spec.concurrency)
                )
                flush(self._batch(chunk_id, plan, st, outs, last_group))
                continue
            start = 0
            step = 1
            while start < len(chunk):
                st = self.fresh_stats(plan)
                t0 = time.perf_counter()
                part = chunk[start : start + step]
                outs = run_chunk_sync(plan, part, spec.prefix, spec.args, spec.kwargs)
                start += len(part)
                took = time.perf_counter() - t0
                # Grow the sub-batch while items are fast: ~5 ms between flushes.
                step = max(1, min(len(chunk), int(step * 0.005 / took) if took > 0 else step * 2))
                flush(self._batch(chunk_id, plan, st, outs, last_group and start >= len(chunk)))

    @staticmethod
    def _batch(chunk_id: int, plan: Plan, st: FunctionStats, outs: list[Outcome], final: bool) -> Batch:
        relay = plan.recorder.relay
        events: list[Event] = []
        if relay:
            events = list(relay)
            relay.clear()
        return Batch(chunk_id, outs, st.export(), events, final)


# -- tasks for dask / joblib backends: one call per chunk, the plan cached per process --------

_plans: dict[str, WorkerPlan] = {}


def run_task(token: str, spec_bytes: bytes, chunk_id: int, indices: list[int], blob: bytes) -> list[bytes]:
    """Run one chunk in a dask or joblib worker; returns the pickled batches."""
    items = load_items(chunk_id, indices, blob)
    if isinstance(items, Batch):
        return [encode_batch(items)]
    wp = _plans.get(token)
    if wp is None:
        import cloudpickle

        _quiet_logger()
        wp = _plans[token] = WorkerPlan(cloudpickle.loads(spec_bytes))
        while len(_plans) > 8:  # keep only recent maps' plans
            _plans.pop(next(iter(_plans)))
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
    ok_values: list[Any] = []
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
    events = [e if e.error is None else replace(e, error=portable(e.error)) for e in batch.events]
    try:
        events_blob = bytes(cloudpickle.dumps(events))
    except Exception:
        good = []
        for ev in events:
            try:
                cloudpickle.dumps(ev)
            except Exception:
                continue
            good.append(ev)
        events_blob = bytes(cloudpickle.dumps(good))
    wire = (batch.chunk_id, batch.final, batch.stats, ok_idx, ok_blob, failures, events_blob, batch.rejected)
    return pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)


def _pack_failure(idx: int, value: Any, item: Any) -> tuple[int, bytes, BaseException]:
    import cloudpickle

    error = portable(value) if isinstance(value, BaseException) else value
    try:
        blob = bytes(cloudpickle.dumps((error, item)))
    except Exception:
        # the item came from the parent, so this is rare: keep the error, drop the item
        blob = bytes(cloudpickle.dumps((error, None)))
    return idx, blob, stand_in(value) if isinstance(value, BaseException) else error


def _pack_results(
    idx: list[int], values: list[Any], failures: list[tuple[int, bytes, BaseException]]
) -> tuple[bytes, list[int]]:
    """Some result cannot be pickled: find which, fail those items, keep the rest."""
    import cloudpickle

    kept_idx: list[int] = []
    kept: list[Any] = []
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


def load_items(chunk_id: int, indices: list[int], blob: bytes) -> list[tuple[int, Any, int]] | Batch:
    """The chunk's items, or a rejected batch naming why they cannot be unpickled here."""
    import cloudpickle

    try:
        items: list[tuple[int, Any, int]] = cloudpickle.loads(blob)
        return items
    except BaseException as exc:
        error = portable(exc)
        return Batch(chunk_id, [(i, False, error, None) for i in indices], {}, [], True, True)


# -- pool worker main loop ------------------------------------------------------------------


def main(read_fd: int, write_fd: int) -> None:
    """Serve one opero pool worker until the parent closes the pipe."""
    import signal
    from multiprocessing.connection import Connection

    import cloudpickle

    # Ctrl-C goes to the whole process group; the parent decides and terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra = [p for p in os.environ.get("OPERO_WORKER_PATH", "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in extra if p not in sys.path]
    _quiet_logger()
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    plans: dict[str, WorkerPlan] = {}

    def flush(batch: Batch) -> None:
        outbox.send_bytes(encode_batch(batch))

    while True:
        try:
            raw = inbox.recv_bytes()
        except (EOFError, OSError):
            return
        kind, token, body = pickle.loads(raw)
        if kind == "setup":
            try:
                plans[token] = WorkerPlan(cloudpickle.loads(body))
            except BaseException as exc:
                # The parent sees the error on each chunk of this map instead of a hang.
                plans[token] = _Broken(exc)  # type: ignore[assignment]
        elif kind == "chunk":
            chunk_id, indices, blob = body
            items = load_items(chunk_id, indices, blob)
            if isinstance(items, Batch):
                flush(items)
                continue
            wp = plans.get(token)
            if isinstance(wp, _Broken) or wp is None:
                err = wp.error if isinstance(wp, _Broken) else RuntimeError("opero: worker lost its setup")
                flush(Batch(chunk_id, [(i, False, err, it) for i, it, _ in items], {}, [], True))
                continue
            wp.run(chunk_id, items, flush)
        elif kind == "drop":
            plans.pop(token, None)
        elif kind == "exit":
            return


class _Broken:
    def __init__(self, error: BaseException) -> None:
        self.error = RuntimeError(f"opero: the mapped function could not be loaded in a worker: {error!r}")
