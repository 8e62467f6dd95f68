"""The parent's side of maps that run in other processes (process, async_process, dask).

It does what must happen in the parent: cache lookups before dispatch (a hit never travels)
and stores after (results computed in workers land in the parent's cache, so an interrupted
map resumes), merging the workers' counters and re-dispatching their events, and the
bookkeeping of items whose worker died (each death is one failed attempt).
"""

from __future__ import annotations

import copy
import signal
import time
from collections import deque
from typing import Any

from .._errors import AllFailedError, RemoteError, WorkerLostError, portable, stand_in
from .._telemetry import LEVELS, Event, _safe, dispatch, logger
from .._testing import state as testing_state
from ..stores import MISS
from ._chunks import MapCall, Outcome, compose
from ._worker import Batch, Spec

__all__ = ["Remote", "Sent", "decode_batch", "describe_exit"]


#: an item on its way to a worker: index, item, rounds already used by worker deaths
Sent = tuple[int, Any, int]


class Remote:
    """Parent-side bookkeeping for one map whose items run in worker processes."""

    def __init__(self, call: MapCall, concurrency: int = 1) -> None:
        import cloudpickle

        self.call = call
        plan = self.plan = call.plan
        limiter, share = plan.limiter, None
        if limiter is not None:
            try:
                cloudpickle.dumps(limiter)
            except Exception:
                # Until the limiter can travel, each worker spends an equal share: the total
                # stays within the budget, spacing across workers is not exact.
                share = limiter.rate / max(1, call.workers)
                limiter = None
        relay = any(plan.recorder.wants(kind) for kind in LEVELS)
        spec = Spec(
            plan.func,
            plan.options,
            plan.name,
            limiter,
            share,
            call.prefix,
            call.args,
            call.kwargs,
            concurrency=concurrency,
            relay=relay,
            testing=(testing_state.active, testing_state.cache),
        )
        self.spec_bytes: bytes = cloudpickle.dumps(spec)
        self.keys: dict[int, Any] = {}
        self.lost: dict[int, list[BaseException]] = {}
        self.retry: deque[Sent] = deque()

    # -- before dispatch -------------------------------------------------------------------

    def admit(self, pairs: list[tuple[int, Any]], hits: list[Outcome]) -> list[Sent]:
        """Look ``pairs`` up in the cache; hits go to ``hits``, the rest are returned to send."""
        plan = self.plan
        if plan.keys is None:
            return [(i, item, 0) for i, item in pairs]
        out: list[Sent] = []
        prefix, args, kwargs = self.call.prefix, self.call.args, self.call.kwargs
        for i, item in pairs:
            began = time.perf_counter()
            try:
                key, value = plan._lookup(*compose(prefix, item, args, kwargs))
            except Exception:
                logger.exception("opero: cache lookup failed for %s", plan.name)
                key, value = None, MISS
            if value is not MISS:
                plan.stats.begin()  # a miss is counted as a call by the worker that runs it
                plan._finish(True, began, 0)
                hits.append((i, True, value, None))
                continue
            if key is not None:
                self.keys[i] = key
            out.append((i, item, 0))
        return out

    def pack(self, items: list[Sent], failed: list[Outcome]) -> tuple[list[Sent], bytes]:
        """Pickle ``items`` for a worker, by value like the function (cloudpickle).

        Classes defined in ``__main__`` or a notebook cell, lambdas and local classes
        travel. An item that cannot be pickled at all fails at once, alone, with the
        pickling error (it goes to ``failed``); the rest are returned with their bytes.
        """
        import cloudpickle

        try:
            return items, bytes(cloudpickle.dumps(items))
        except Exception:
            pass
        good: list[Sent] = []
        for sent in items:
            try:
                cloudpickle.dumps(sent[1])
            except Exception as exc:
                failed.append(self.refuse(sent, exc, "cannot be pickled to send it to a worker"))
                continue
            good.append(sent)
        return good, bytes(cloudpickle.dumps(good))

    def refuse(self, sent: Sent, exc: BaseException, why: str) -> Outcome:
        """Fail one item that cannot travel: a call with no attempt, failed by ``exc``."""
        plan = self.plan
        i, item, _ = sent
        self.keys.pop(i, None)
        self.lost.pop(i, None)
        try:
            error = copy.copy(portable(exc))  # one error may fail several items: own notes
        except Exception:
            error = stand_in(exc)
        error.__notes__ = list(getattr(error, "__notes__", ()))  # a copy shares the list
        error.add_note(f"opero: this item ({type(item).__qualname__}) {why} ({self.call.mode} mode)")
        plan.stats.add(calls=1, failures=1)
        plan.recorder.emit("failure", error=error)
        return i, False, error, item

    def rejected(self, batch: Batch, held: dict[int, tuple[Any, int]]) -> list[Outcome]:
        """A worker could not unpickle a chunk: re-send its items one by one to find the bad
        ones; a single item that cannot be loaded fails alone with the worker's error."""
        if len(held) > 1:
            self.retry.extend((i, item, used) for i, (item, used) in held.items())
            return []
        out: list[Outcome] = []
        for i, _, value, _ in batch.outcomes:
            item, used = held.get(i, (None, 0))
            out.append(self.refuse((i, item, used), value, "cannot be unpickled in the worker"))
        return out

    # -- results ---------------------------------------------------------------------------

    def receive(self, batch: Batch) -> list[Outcome]:
        """Merge a worker batch: counters, events, cache stores; return its outcomes."""
        plan = self.plan
        if batch.stats:
            plan.stats.merge(batch.stats)
        callbacks = plan.recorder._callbacks
        for event in batch.events:
            dispatch(event)
            cb = callbacks.get(event.kind)
            if cb is not None:
                _safe(cb, event)
        outs = batch.outcomes
        for n, (i, ok, value, item) in enumerate(outs):
            key = self.keys.pop(i, None)
            earlier = self.lost.pop(i, None)
            if ok:
                if key is not None:
                    try:
                        plan._store(key, value)
                    except Exception:
                        logger.exception("opero: cache store failed for %s", plan.name)
            elif earlier and isinstance(value, AllFailedError):
                outs[n] = (i, False, AllFailedError(plan.name, [*earlier, *value.errors]), item)
        return outs

    def lose(self, held: dict[int, tuple[Any, int]], detail: str, exitcode: int | None) -> list[Outcome]:
        """Items ``held`` by a worker that died: retry them, or fail those out of rounds."""
        plan = self.plan
        finals: list[Outcome] = []
        retries = plan.options.retries
        for i, (item, used) in held.items():
            err = WorkerLostError(detail, exitcode)
            errors = self.lost.setdefault(i, [])
            errors.append(err)
            plan.stats.add(attempts=1)
            plan.recorder.emit("attempt_failed", attempt=used + 1, round=used + 1, error=err)
            if used < retries:
                plan.stats.add(retries=1)
                plan.recorder.emit("retry", attempt=used + 1, round=used + 1, delay=0.0, error=err)
                self.retry.append((i, item, used + 1))
            else:
                self.lost.pop(i, None)
                self.keys.pop(i, None)
                plan.stats.add(calls=1, failures=1)
                final = AllFailedError(plan.name, errors)
                final.__cause__ = err
                plan.recorder.emit("failure", error=final)
                finals.append((i, False, final, item))
        return finals


def decode_batch(raw: bytes) -> Batch:
    """The parent's side of :func:`~opero.executors._worker.encode_batch`.

    A value that cannot be unpickled here fails only its own item, with the stand-in the
    worker sent (original type name, message and traceback text); every other outcome of
    the batch arrives.
    """
    import pickle

    import cloudpickle

    chunk_id, final, stats, ok_idx, ok_blob, failures, events_blob, rejected = pickle.loads(raw)
    outs: list[Outcome] = []
    if ok_idx:
        try:
            values = cloudpickle.loads(ok_blob)
        except Exception as exc:
            # the results of this batch pickled in the worker but cannot be rebuilt here
            err = RemoteError.from_exception(exc)
            err.add_note("opero: the results could not be unpickled in the parent process")
            outs.extend((i, False, err, None) for i in ok_idx)
        else:
            outs.extend((i, True, v, None) for i, v in zip(ok_idx, values, strict=True))
    for i, blob, fallback in failures:
        try:
            value, item = cloudpickle.loads(blob)
        except Exception:
            value, item = fallback, None
        outs.append((i, False, value, item))
    try:
        events: list[Event] = cloudpickle.loads(events_blob)
    except Exception:
        logger.warning("opero: events relayed by a worker could not be unpickled; dropped")
        events = []
    return Batch(chunk_id, outs, stats, events, final, rejected)


def describe_exit(pid: int, code: int | None) -> str:
    """``worker process 123 died (signal SIGKILL)`` from a return code."""
    if code is None:
        how = "unknown cause"
    elif code < 0:
        try:
            how = f"signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"signal {-code}"
    else:
        how = f"exit code {code}"
    return f"worker process {pid} died ({how})"
