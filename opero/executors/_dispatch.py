"""The parent's side of maps that run in other processes (process, async_process, dask).

It does what must happen in the parent: cache lookups before dispatch (a hit never travels)
and stores after (results computed in workers land in the parent's cache, so an interrupted
map resumes), merging the workers' counters and re-dispatching their events, and the
bookkeeping of items whose worker died or was killed: each is one failed attempt, and the
item's own policy (``Plan.recover``) goes on here in the parent.
"""

from __future__ import annotations

import copy
import heapq
import signal
import time
from collections import deque
from collections.abc import Hashable

from .._decisions import Steps
from .._errors import RemoteError, portable, stand_in
from .._policy import PlanParts, RemotePlan, Sleep
from .._telemetry import Event, logger
from .._testing import state as testing_state
from ..stores import MISS
from ._chunks import MapCall, Outcome, compose
from ._worker import Batch, Sent, Spec

__all__ = ["Remote", "Sent", "decode_batch", "describe_exit"]


class _Resumed:
    """An item whose policy continues in the parent after an attempt was lost with its worker.

    The parent drives the item's recovery steps (:meth:`RemotePlan.resume`): a backoff is a
    due time (the map goes on meanwhile), an attempt is the item sent again to run exactly
    that one ``Attempt`` (``Sent.single``), whose outcome is fed back into the steps.
    """

    __slots__ = ("began", "item", "steps")

    def __init__(self, steps: Steps, item: object) -> None:
        self.steps = steps
        self.item = item
        self.began = time.perf_counter()


class Remote:
    """Parent-side bookkeeping for one map whose items run in worker processes.

    It reaches the plan as a :class:`~opero._policy.RemotePlan`.
    """

    def __init__(self, call: MapCall, concurrency: int = 1) -> None:
        import cloudpickle

        self.call = call
        plan: RemotePlan = call.plan
        self.plan = plan
        #: the plan as the workers rebuild it (its name and timeout hold for this map)
        self.parts = plan.parts()
        self.spec_bytes: bytes = cloudpickle.dumps(_spec(call, plan, self.parts, concurrency))
        self.keys: dict[int, Hashable] = {}
        #: items whose policy the parent drives (an attempt of theirs died with a worker)
        self.resumed: dict[int, _Resumed] = {}
        #: items to send again now, each in a chunk of its own
        self.retry: deque[Sent] = deque()
        #: items to send again without penalty (chunk-mates of a lost item), in chunks
        self.again: deque[Sent] = deque()
        #: items waiting for their backoff: (due time, seq, index)
        self._later: list[tuple[float, int, int]] = []
        self._seq = 0

    # -- before dispatch -------------------------------------------------------------------

    def admit(self, pairs: list[tuple[int, object]], hits: list[Outcome]) -> list[Sent]:
        """Look ``pairs`` up in the cache; hits go to ``hits``, the rest are returned to send."""
        plan = self.plan
        if not plan.caching:
            return [(i, item, False) for i, item in pairs]
        out: list[Sent] = []
        prefix, args, kwargs = self.call.prefix, self.call.args, self.call.kwargs
        for i, item in pairs:
            began = time.perf_counter()
            try:
                key, value = plan.lookup(*compose(prefix, item, args, kwargs))
            except Exception:
                logger.exception("opero: cache lookup failed for %s", self.parts.name)
                key, value = None, MISS
            if value is not MISS:  # a miss is counted as a call by the worker that runs it
                plan.settle(began, 0)
                hits.append((i, True, value, None))
                continue
            if key is not None:
                self.keys[i] = key
            out.append((i, item, False))
        return out

    def due(self) -> float | None:
        """Move items whose backoff is over to :attr:`retry`; seconds until the next one."""
        later = self._later
        now = time.perf_counter()
        while later and later[0][0] <= now:
            _, _, i = heapq.heappop(later)
            r = self.resumed.get(i)
            if r is not None:
                self._advance(i, r, None, [])
        return later[0][0] - now if later else None

    @property
    def waiting(self) -> bool:
        """Whether items are still waiting for their backoff (the map is not over)."""
        return bool(self._later)

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
        i, item, _ = sent
        self.keys.pop(i, None)
        resumed = self.resumed.pop(i, None)
        if resumed is not None:
            item = resumed.item
            resumed.steps.close()
        try:
            error = copy.copy(portable(exc))  # one error may fail several items: own notes
        except Exception:
            error = stand_in(exc)
        error.__notes__ = list(getattr(error, "__notes__", ()))  # a copy shares the list
        error.add_note(f"opero: this item ({type(item).__qualname__}) {why} ({self.call.mode} mode)")
        if resumed is None:
            self.plan.settle(time.perf_counter(), 0, error)
        else:
            self.plan.settle(resumed.began, 1, error)
        return i, False, error, item

    def rejected(self, batch: Batch, held: dict[int, tuple[object, bool]]) -> list[Outcome]:
        """A worker could not unpickle a chunk: re-send its items one by one to find the bad
        ones; a single item that cannot be loaded fails alone with the worker's error."""
        if len(held) > 1:
            self.retry.extend((i, item, single) for i, (item, single) in held.items())
            return []
        out: list[Outcome] = []
        for i, _, value, _ in batch.outcomes:
            item, single = held.get(i, (None, False))
            out.append(self.refuse((i, item, single), value, "cannot be unpickled in the worker"))
        return out

    # -- results ---------------------------------------------------------------------------

    def receive(self, batch: Batch) -> list[Outcome]:
        """Merge a worker batch: counters, events, cache stores; return its outcomes."""
        plan = self.plan
        plan.absorb(batch.stats, batch.events)
        outs: list[Outcome] = []
        resumed = self.resumed
        for outcome in batch.outcomes:
            i, ok, value, _ = outcome
            r = resumed.get(i) if resumed else None
            if r is not None:  # the outcome of one attempt the parent asked for
                if ok:
                    del resumed[i]
                    r.steps.close()
                    plan.settle(r.began, 1)
                    self._stored(i, value)
                    outs.append(outcome)
                else:
                    self._advance(i, r, value, outs)
                continue
            if ok:
                self._stored(i, value)
            else:
                self.keys.pop(i, None)
            outs.append(outcome)
        return outs

    def _stored(self, i: int, value: object) -> None:
        key = self.keys.pop(i, None)
        if key is not None:
            try:
                self.plan.store(key, value)
            except Exception:
                logger.exception("opero: cache store failed for %s", self.parts.name)

    def lose(self, held: dict[int, tuple[object, bool]], error: Exception) -> list[Outcome]:
        """Items ``held`` by a worker that died (or was killed): each lost one attempt.

        That attempt failed with ``error`` (``WorkerLostError``, or ``TimeoutError`` for an
        attempt over a hard timeout); the item's own policy (its recovery steps: backoff,
        retries, fallbacks, counters, events) decides what happens next, here in the parent.
        """
        finals: list[Outcome] = []
        plan = self.plan
        prefix, args, kwargs = self.call.prefix, self.call.args, self.call.kwargs
        for i, (item, _single) in held.items():
            err = copy.copy(error)
            r = self.resumed.get(i)
            if r is None:
                # The call began in the worker, but its counters died with it: begin it here.
                a, kw = compose(prefix, item, args, kwargs)
                r = self.resumed[i] = _Resumed(plan.resume(a, kw, err), item)
                self._advance(i, r, None, finals)
            else:
                self._advance(i, r, err, finals)
        return finals

    def died(
        self, held: dict[int, tuple[object, bool]], running: set[int], error: Exception
    ) -> list[Outcome]:
        """A worker died holding ``held``, running the attempts of ``running`` at the time.

        Only the item it was running is charged (one attempt failed with ``error``); the
        others go out again without penalty (:attr:`again`). When several were running at
        once (async_process), or none is known, each suspect runs again alone
        (:attr:`retry`), still without penalty, until a worker dies holding only one.
        """
        if not running and len(held) == 1:
            running = set(held)
        suspects = running if running else set(held)
        if len(suspects) == 1:
            (culprit,) = suspects
            self.again.extend((i, p, s) for i, (p, s) in held.items() if i != culprit)
            return self.lose({culprit: held[culprit]}, error)
        for i, (payload, single) in held.items():
            (self.retry if i in suspects else self.again).append((i, payload, single))
        return []

    def take_again(self, n: int) -> list[Sent]:
        """Up to ``n`` items of :attr:`again` for one chunk."""
        again = self.again
        return [again.popleft() for _ in range(min(max(1, n), len(again)))]

    def _advance(self, i: int, r: _Resumed, error: Exception | None, out: list[Outcome]) -> None:
        """Feed ``error`` (None: go on after a backoff or a first failure) to the item's steps."""
        try:
            step = next(r.steps) if error is None else r.steps.send(error)
        except Exception as final:  # every round failed, or an error that is not retried
            del self.resumed[i]
            self.keys.pop(i, None)
            self.plan.settle(r.began, 1, final)
            out.append((i, False, final, r.item))
            return
        if isinstance(step, Sleep) and step.delay > 0:
            self._seq += 1
            heapq.heappush(self._later, (time.perf_counter() + step.delay, self._seq, i))
            return
        if isinstance(step, Sleep):
            self._advance(i, r, None, out)
            return
        self.retry.append((i, step, True))  # the worker runs this one Attempt


def _spec(call: MapCall, plan: RemotePlan, parts: PlanParts, concurrency: int) -> Spec:
    """What every worker needs to run this map's items (see :class:`Spec`)."""
    import cloudpickle

    limiter, share = parts.limiter, None
    if limiter is not None:
        try:
            cloudpickle.dumps(limiter)
        except Exception:
            # Until the limiter can travel, each worker spends an equal share: the total
            # stays within the budget, spacing across workers is not exact.
            share = limiter.rate / max(1, call.workers)
            parts = parts._replace(limiter=None)
    # Workers build and send home only the events someone here listens to.
    wanted = plan.recorder.wanted_kinds()
    relay: bool | frozenset[str] = True if wanted is None else wanted
    return Spec(
        parts,
        share,
        call.prefix,
        call.args,
        call.kwargs,
        concurrency=concurrency,
        relay=relay,
        testing=(testing_state.active, testing_state.cache),
    )


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
