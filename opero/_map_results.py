"""Where a map's results go: slots in input or completion order, released as they finish.

A list map places each batch of outcomes into its result list (:func:`place`); a stream
releases values to the caller and frees a window slot for each (:class:`Release`). A stopped
map fills the slots of items that never ran with ``Cancelled`` (:func:`finish`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Final

from ._errors import Cancelled
from ._progress import MapProgress
from ._threads import iterate_in_thread
from .executors._chunks import MapCall, Outcome, Run, Window


class Release:
    """Turns batches of outcomes into the values to stream, freeing a window slot for each.

    Ordered streams hold early finishers back until every earlier item has been yielded.
    """

    __slots__ = ("buffer", "ordered", "want", "window")

    def __init__(self, window: Window, ordered: bool) -> None:
        self.window = window
        self.ordered = ordered
        self.buffer: dict[int, object] = {}
        self.want = 0

    def __call__(self, batch: list[Outcome] | Run) -> list[object]:
        if isinstance(batch, Run) and (not self.ordered or (batch.start == self.want and not self.buffer)):
            out = list(batch.values)  # the next consecutive items: released as they are
            self.want += len(out) if self.ordered else 0
            self.window.release(len(out))
            return out
        if not self.ordered:
            out = [value for _, _, value, _ in batch]
        else:
            for idx, _, value, _ in batch:
                self.buffer[idx] = value
            out = []
            while self.want in self.buffer:
                out.append(self.buffer.pop(self.want))
                self.want += 1
        self.window.release(len(out))
        return out


#: A slot whose item has not finished (yet); a stopped map turns it into ``Cancelled``.
MISSING: Final = object()


def place(results: list[object], batch: list[Outcome] | Run, ordered: bool) -> None:
    if isinstance(batch, Run):  # consecutive items: one slice assignment (values hold failures too)
        if not ordered:
            results.extend(batch.values)
            return
        start, end = batch.start, batch.start + len(batch.values)
        if end > len(results):
            results.extend([MISSING] * (end - len(results)))
        results[start:end] = batch.values
        return
    if not ordered:
        results.extend(value for _, _, value, _ in batch)
        return
    size = len(results)
    for idx, _, value, _ in batch:
        if idx >= size:
            results.extend([MISSING] * (idx + 1 - size))
            size = idx + 1
        results[idx] = value


def unstarted(results: list[object], progress: MapProgress) -> list[object]:
    """A finished segment's results; items a stop left unstarted hold ``Cancelled``."""
    if any(v is MISSING for v in results):
        finish(results, progress, len(results))
    return results


async def then(
    pending: Awaitable[list[object]] | None, merge: Callable[[list[object]], list[object]]
) -> list[object]:
    """``merge`` of the awaited results (of none when ``pending`` is None)."""
    return merge(await pending if pending is not None else [])


def finish(results: list[object], progress: MapProgress, total: int | None) -> int:
    """After a stopped map: every item that did not run holds a ``Cancelled`` marker."""
    if not progress.stop_requested:
        return 0
    if total is not None and len(results) < total:
        results.extend([MISSING] * (total - len(results)))
    cancelled = 0
    for i, value in enumerate(results):
        if value is MISSING:
            results[i] = Cancelled(f"{progress.label}: stopped before this item started")
            cancelled += 1
    return cancelled


async def from_thread(
    make: Callable[[], Iterator[list[Outcome]]], call: MapCall
) -> AsyncIterator[list[Outcome]]:
    """Iterate a blocking batch generator in a helper thread without blocking the loop."""
    inner = iterate_in_thread(make, "opero-map-driver")
    try:
        async for batch in inner:
            yield batch
            if call.stop.is_set():
                break
    finally:
        call.stop.set()
        await inner.aclose()  # type: ignore[attr-defined]
