"""``@opmap(batch_size=N)`` as the map sees it: a list or a stream, from sync or async code.

The batch calls themselves (cache, dedupe, bisection) are ``opero._batch``'s; this module
runs them under the map's progress bar, and streams a batch map one segment at a time
(bounded memory; batches and dedupe within each segment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from ._batch import AsyncDriver, BatchMap, chunks
from ._map_results import MISSING, finish, unstarted
from ._policy import Plan
from ._progress import MapProgress
from .executors._chunks import MapCall, Outcome


@dataclasses.dataclass(frozen=True, slots=True)
class BatchedRuns:
    """One decorated function's batch maps."""

    #: the plan of the batch calls (``opero._batch.batch_plan``)
    batches: Plan
    #: ``batch_size``
    size: int
    #: ``(call, labels) -> MapProgress``: the map's progress bar
    progress: Callable[[MapCall, Sequence[object] | None], MapProgress]
    #: the map's bookkeeping of a list of outcomes (failure log, progress)
    account: Callable[[list[Outcome], MapProgress], None]
    #: the map's async outcome source
    drive_async: AsyncDriver

    def _runner(self, call: MapCall) -> BatchMap:
        return BatchMap(call, self.batches, self.size, self.account)

    def _begin(
        self, call: MapCall, items: Iterable[object], labels: Sequence[object] | None
    ) -> tuple[list[object], MapProgress, list[object]]:
        items = list(items)
        call.total = len(items)
        return items, self.progress(call, labels), [MISSING] * len(items)

    @staticmethod
    def _end(
        call: MapCall, progress: MapProgress, results: list[object], error: bool = False
    ) -> list[object]:
        call.stop.set()
        if error:
            progress.close(interrupted=True)
        else:
            progress.close(cancelled=finish(results, progress, call.total))
        return results

    def run_sync(
        self, call: MapCall, items: Iterable[object], labels: Sequence[object] | None = None
    ) -> list[object]:
        """The whole list map from sync code."""
        items, progress, results = self._begin(call, items, labels)
        try:
            self._runner(call).run_sync(items, results, progress)
        except BaseException:
            self._end(call, progress, results, error=True)
            raise
        return self._end(call, progress, results)

    async def run_async(
        self, call: MapCall, items: Iterable[object], labels: Sequence[object] | None = None
    ) -> list[object]:
        """The whole list map from async code."""
        items, progress, results = self._begin(call, items, labels)
        try:
            await self._runner(call).run_async(items, results, progress, self.drive_async)
        except BaseException:
            self._end(call, progress, results, error=True)
            raise
        return self._end(call, progress, results)

    def _segments(
        self, call: MapCall, items: Iterable[object], window: int
    ) -> Iterator[tuple[MapCall, list[object], list[object]]]:
        # whole batches per segment, a few per worker, about one stream window of items
        n = self.size
        size = n * max(-(-window // n), 4 * call.workers)
        for segment in chunks(iter(items), size):
            part = dataclasses.replace(call, total=None, stop=threading.Event())
            yield part, segment, [MISSING] * len(segment)

    def stream_sync(self, call: MapCall, items: Iterable[object], window: int) -> Iterator[object]:
        """Stream a batch map from sync code; a stop request is honoured between segments."""
        progress = self.progress(call, None)
        with _streaming(call, progress):
            for part, segment, results in self._segments(call, items, window):
                self._runner(part).run_sync(segment, results, progress)
                yield from unstarted(results, progress)
                if progress.stop_requested:
                    break

    async def stream_async(
        self, call: MapCall, items: Iterable[object], window: int
    ) -> AsyncIterator[object]:
        """Stream a batch map from async code; a stop request is honoured between segments."""
        progress = self.progress(call, None)
        with _streaming(call, progress):
            for part, segment, results in self._segments(call, items, window):
                await self._runner(part).run_async(segment, results, progress, self.drive_async)
                for value in unstarted(results, progress):
                    yield value
                if progress.stop_requested:
                    break


@contextlib.contextmanager
def _streaming(call: MapCall, progress: MapProgress) -> Iterator[None]:
    """A stream's life: when it ends, stop the map and close the bar (interrupted unless
    the stream ran to its end or stopped on request)."""
    interrupted = True
    try:
        yield
        interrupted = False
    finally:
        call.stop.set()
        progress.close(interrupted=interrupted)
