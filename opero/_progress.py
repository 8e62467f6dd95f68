"""Progress of running maps: one aggregate tqdm.auto bar and a tiny event API for dashboards.

The bar is driven from the parent process only (workers report home with their results), so
it is one bar whatever the mode. Updates are throttled to about 10 per second: the bar and the
subscribers must never slow the work measurably.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from ._telemetry import logger

__all__ = ["MapProgress", "ProgressCallback", "subscribe_progress"]

#: ``callback(map_id, name, done, total, failed, finished)``
ProgressCallback = Callable[[int, str, int, "int | None", int, bool], None]

_subscribers: list[ProgressCallback] = []
_ids = itertools.count(1)
_INTERVAL = 0.1  # seconds between two updates of one map (~10 per second)


def subscribe_progress(callback: ProgressCallback) -> Callable[[], None]:
    """Call ``callback`` with the progress of every opmap run; returns an unsubscribe function.

    The callback receives ``(map_id, name, done, total, failed, finished)``: a number that
    identifies the run, the function's qualified name, items finished so far, the number of
    items when known (else None), items that ended failed, and whether the run is over. It is
    called at most about 10 times a second per run, and once more when the run finishes.

    Args:
        callback: the function to call; an exception in it is logged, never raised.

    Returns:
        A function that removes the subscription.
    """
    _subscribers.append(callback)

    def unsubscribe() -> None:
        try:
            _subscribers.remove(callback)
        except ValueError:
            pass

    return unsubscribe


class MapProgress:
    """The progress of one map run: counts, an optional tqdm bar, subscriber updates.

    Args:
        name: qualified name of the mapped function.
        total: number of items when known.
        show: draw a ``tqdm.auto`` bar.
        retries: reads the function's retry counter (for the bar's postfix).
    """

    __slots__ = ("_bar", "_base", "_lock", "_next", "_retries", "done", "failed", "map_id", "name", "total")

    def __init__(self, name: str, total: int | None, show: bool, retries: Callable[[], int]) -> None:
        self.map_id = next(_ids)
        self.name = name
        self.total = total
        self.done = 0
        self.failed = 0
        self._retries = retries
        self._base = retries()
        self._next = 0.0
        self._lock = threading.Lock()
        self._bar: Any = None
        if show:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=name.rsplit(".", 1)[-1], unit="item", leave=True)
            except Exception:  # no tqdm front end usable here: run without a bar
                logger.debug("opero: progress bar unavailable", exc_info=True)
        self._publish(False)

    def advance(self, done: int, failed: int) -> None:
        """Count ``done`` more finished items, ``failed`` of them failed."""
        with self._lock:
            self.done += done
            self.failed += failed
            if self._bar is not None:
                self._bar.update(done)
            now = time.monotonic()
            if now < self._next:
                return
            self._next = now + _INTERVAL
            self._refresh()
        self._publish(False)

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(failed=self.failed, retries=self._retries() - self._base, refresh=False)

    def close(self) -> None:
        """The run is over (finished, failed or interrupted)."""
        with self._lock:
            self._refresh()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self._publish(True)

    def _publish(self, finished: bool) -> None:
        for callback in list(_subscribers):
            try:
                callback(self.map_id, self.name, self.done, self.total, self.failed, finished)
            except Exception:  # a broken dashboard must never break the map
                logger.exception("opero: progress subscriber %r failed", callback)
