"""The scheduler of maps whose items run in other processes (process, async_process, dask).

Written once: it sends chunks while the transport has room (items to run again first), takes
what comes back (results, attempt starts, lost workers), re-sends lost work, enforces hard
timeouts and applies backpressure. An executor plugs in a :class:`Transport`: how chunks
reach its workers and how their answers and deaths come back. Everything an item's policy
decides after a lost attempt happens in :class:`~opero.executors._dispatch.Remote`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._chunks import Feed, MapCall, Outcome, Window

if TYPE_CHECKING:  # `import opero` reaches this module (dask.py): keep it light
    from ._dispatch import Remote
    from ._worker import Batch, Sent

__all__ = ["Arrived", "Failed", "Flight", "Lost", "Scheduler", "Started", "Transport", "TransportEvent"]

#: how long past ``timeout`` an attempt may run before its worker is killed (the worker's
#: own soft limit answers first whenever the attempt lets it, e.g. while it sleeps)
HARD_GRACE = 0.5
#: longest wait for news, so a stop request or a due backoff is seen soon
_TICK = 0.2


@dataclass
class Arrived:
    """A batch of results of chunk ``chunk_id``; ``final``: the chunk is done."""

    chunk_id: int
    batch: Batch
    final: bool


@dataclass
class Started:
    """An attempt of item ``index`` of chunk ``chunk_id`` started (or ended: ``started`` False)."""

    chunk_id: int
    index: int
    started: bool


@dataclass
class Lost:
    """The worker running chunk ``chunk_id`` died with ``error``.

    ``running``: the items whose attempt was running at the death, when the transport knows
    (None: it does not, and every item the chunk still held is charged).
    """

    chunk_id: int
    error: Exception
    running: set[int] | None


@dataclass
class Failed:
    """The transport itself failed chunk ``chunk_id`` with ``error`` (not a lost worker)."""

    chunk_id: int
    error: BaseException


TransportEvent = Arrived | Started | Lost | Failed


class Transport(abc.ABC):
    """The executor contract: how the :class:`Scheduler` reaches one kind of worker.

    A transport sends chunks and reports, as events, what happens to them. It never decides
    an item's fate: retries, re-sends and timeouts are the scheduler's.
    """

    #: attempts report their start and end (:class:`Started`): hard timeouts apply
    ticks: bool = False
    #: a chunk's time from send to its last batch measures its items (no queue in between)
    measured: bool = True

    @abc.abstractmethod
    def room(self) -> int:
        """How many more chunks may be sent now."""

    @abc.abstractmethod
    def send(self, chunk_id: int, indices: list[int], blob: bytes) -> None:
        """Send a chunk (its items' indices and their pickled ``Sent`` list).

        A failure to send is reported by a later :meth:`poll` as :class:`Lost`.
        """

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[TransportEvent]:
        """What happened since the last poll, waiting up to ``timeout`` seconds for news."""

    def cancel(self, chunk_id: int) -> None:
        """Stop the worker running ``chunk_id`` at once (an attempt over its hard limit).

        Only called when :attr:`ticks` is true.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def close(self, clean: bool) -> None:
        """The map is over (``clean``) or was interrupted: release or stop the workers."""


@dataclass
class Flight:
    """A chunk on its way: the items it still holds, when it left, what started."""

    chunk_id: int
    held: dict[int, tuple[object, bool]]
    sent_at: float
    size: int
    #: attempts running now under a hard timeout: index -> when they started
    started: dict[int, float] = field(default_factory=dict)


class Scheduler:
    """Runs one map's items through a :class:`Transport`; :meth:`run` yields outcome batches."""

    def __init__(
        self, call: MapCall, feed: Feed, window: Window, remote: Remote, transport: Transport
    ) -> None:
        self.call = call
        self.feed = feed
        self.window = window
        self.remote = remote
        self.transport = transport
        self.flights: dict[int, Flight] = {}
        self._next_id = 0
        timeout = remote.parts.options.timeout
        self.hard = timeout + HARD_GRACE if timeout is not None and transport.ticks else None

    def run(self) -> Iterator[list[Outcome]]:
        """Send, collect and re-send until every item has its outcome."""
        clean = False
        try:
            while True:
                ready: list[Outcome] = []
                pause = self.remote.due()
                self._dispatch(ready)
                if ready:
                    yield ready
                    continue
                if not self.flights:
                    if self._finished():
                        break
                    self._idle(pause)
                    continue
                self._collect(pause, ready)
                if self.hard is not None:
                    self._enforce(self.hard, ready)
                if self.call.stop.is_set():
                    raise KeyboardInterrupt
                if ready:
                    yield ready
            clean = True
        finally:
            self.transport.close(clean)

    # -- sending ---------------------------------------------------------------------------

    def _dispatch(self, ready: list[Outcome]) -> None:
        """Fill the transport's room with chunks: re-sent items first, then fresh ones."""
        remote = self.remote
        while self.transport.room() > 0:
            items = self._next_items(ready)
            if not items:
                return
            items, blob = remote.pack(items, ready)
            if not items:
                continue
            self._next_id += 1
            held = {i: (payload, single) for i, payload, single in items}
            self.flights[self._next_id] = Flight(self._next_id, held, time.perf_counter(), len(items))
            self.transport.send(self._next_id, [i for i, _, _ in items], blob)

    def _next_items(self, ready: list[Outcome]) -> list[Sent]:
        """The next chunk: an item to run alone, chunk-mates of a lost item, or fresh items."""
        remote = self.remote
        if remote.retry:
            return [remote.retry.popleft()]
        if remote.again:
            return remote.take_again(self.feed.sizer.next())
        while True:
            pairs = self.feed.next(block=False)
            if not pairs:
                return []
            items = remote.admit(pairs, ready)  # cache hits go to ready at once
            if items:
                return items

    def _finished(self) -> bool:
        remote = self.remote
        return self.feed.dry and not remote.retry and not remote.again and not remote.waiting

    def _idle(self, pause: float | None) -> None:
        """Nothing in flight: wait for a backoff to end, or for the consumer to free room."""
        remote = self.remote
        if remote.waiting or remote.retry or remote.again:
            time.sleep(min(_TICK, max(0.0, pause or 0.0)))
        elif self.window.acquire(1):  # backpressure: every item waits for the consumer
            self.window.release(1)

    # -- receiving -------------------------------------------------------------------------

    def _collect(self, pause: float | None, ready: list[Outcome]) -> None:
        """Wait for news (results, starts, deaths) and account for it."""
        wait_for = _TICK if pause is None else max(0.0, min(_TICK, pause))
        if self.hard is not None:
            wait_for = min(wait_for, self._next_overdue(self.hard))
        for event in self.transport.poll(wait_for):
            flight = self.flights.get(event.chunk_id)
            if flight is None:  # a chunk already given up (its worker was replaced)
                continue
            if isinstance(event, Arrived):
                self._arrived(flight, event, ready)
            elif isinstance(event, Started):
                if event.started:
                    flight.started[event.index] = time.perf_counter()
                else:
                    flight.started.pop(event.index, None)
            elif isinstance(event, Lost):
                del self.flights[event.chunk_id]
                ready.extend(self._lost(flight, event))
            else:
                del self.flights[event.chunk_id]
                remote = self.remote
                why = "failed in dask"
                ready.extend(remote.refuse((i, p, s), event.error, why) for i, (p, s) in flight.held.items())

    def _arrived(self, flight: Flight, event: Arrived, ready: list[Outcome]) -> None:
        batch = event.batch
        if batch.rejected:  # the worker could not unpickle the chunk
            del self.flights[flight.chunk_id]
            ready.extend(self.remote.rejected(batch, flight.held))
            return
        for i, *_ in batch.outcomes:
            flight.held.pop(i, None)
        if event.final:
            del self.flights[flight.chunk_id]
            if self.transport.measured:
                self.feed.sizer.observe(flight.size, time.perf_counter() - flight.sent_at)
        ready.extend(self.remote.receive(batch))

    def _lost(self, flight: Flight, event: Lost) -> list[Outcome]:
        """A dead worker charges only the attempt it was running, when the transport knows it."""
        if event.running is None:
            return self.remote.lose(flight.held, event.error)
        return self.remote.died(flight.held, event.running & flight.held.keys(), event.error)

    # -- hard timeouts ---------------------------------------------------------------------

    def _next_overdue(self, hard: float) -> float:
        """Seconds until the first running attempt passes its hard limit."""
        starts = [t for f in self.flights.values() for t in f.started.values()]
        return max(0.0, min(starts) + hard - time.perf_counter()) if starts else _TICK

    def _enforce(self, hard: float, ready: list[Outcome]) -> None:
        """Stop each worker whose attempt ran past the hard limit (``timeout`` is a hard limit
        in process modes); that attempt fails with ``TimeoutError``, the chunk's other items
        go out again as they were (they did nothing wrong)."""
        now = time.perf_counter()
        for flight in list(self.flights.values()):
            late = [i for i, t in flight.started.items() if now - t > hard and i in flight.held]
            if not late:
                continue
            del self.flights[flight.chunk_id]
            self.transport.cancel(flight.chunk_id)
            name, timeout = self.remote.parts.name, self.remote.parts.options.timeout
            error = TimeoutError(f"{name}: attempt exceeded timeout={timeout}s (worker replaced)")
            held = flight.held
            ready.extend(self.remote.lose({i: held[i] for i in late}, error))
            self.remote.again.extend((i, p, s) for i, (p, s) in held.items() if i not in late)
