"""Progress and failures of running maps: the bar, the failure log and what dashboards read.

Everything here is driven from the parent process only (workers report home with their
results), so there is one bar and one failure log whatever the mode.

- :class:`MapProgress` is one map run: done/failed/in-flight counts, a rate over the last
  few seconds, an ETA, its state (running, done, interrupted, stopped) and a ``stop()`` that
  cancels the items not started yet. It draws a bar: opero's own HTML bar in a notebook (it
  leaves a static snapshot in saved notebooks), a tqdm bar elsewhere.
- :class:`FailureLog` keeps every failed item of one function (the last ``MAX_FAILURES``):
  its label (the row index for DataFrame rows), its own final error, attempts and time.
  ``fn.failures()`` turns it into a DataFrame; the dashboard's error panel reads it.

Updates are throttled to about 10 per second: bars and dashboards must never slow the work.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import _telemetry
from ._failures import MAX_FAILURES as MAX_FAILURES
from ._failures import Failure as Failure
from ._failures import FailureLog as FailureLog
from ._failures import describe_error as describe_error
from ._failures import failure_log as failure_log
from ._failures import failure_logs as failure_logs
from ._failures import failures_frame as failures_frame
from ._failures import new_failure_log as new_failure_log
from ._failures import short_repr as short_repr
from ._telemetry import logger

if TYPE_CHECKING:
    pass

__all__ = [
    "MAX_FAILURES",
    "Failure",
    "FailureLog",
    "MapProgress",
    "ProgressCallback",
    "describe_error",
    "failure_logs",
    "maps",
    "subscribe_progress",
]

#: ``callback(map_id, name, done, total, failed, finished)``
ProgressCallback = Callable[[int, str, int, "int | None", int, bool], None]

_subscribers: list[ProgressCallback] = []
_ids = itertools.count(1)
_INTERVAL = 0.1  # seconds between two updates of one map (~10 per second)
#: A text bar on something that is not a terminal (a CI log) redraws at most this often.
_LOG_INTERVAL = 10.0
#: The rate is measured over this many seconds (not the whole run: a stall shows at once).
RATE_WINDOW = 5.0
#: Finished maps kept for dashboards (running ones are always kept).
KEEP_FINISHED = 20


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


# -- map runs ------------------------------------------------------------------------------------

_runs: dict[int, MapProgress] = {}
_runs_lock = threading.Lock()
_call_numbers: Counter[str] = Counter()


def maps() -> list[MapProgress]:
    """Running maps and the last finished ones, oldest first."""
    with _runs_lock:
        return list(_runs.values())


def _keep(progress: MapProgress) -> None:
    with _runs_lock:
        _runs[progress.map_id] = progress
        finished = [k for k, p in _runs.items() if p.finished]
        # the latest run of each function stays, however many short runs came after it
        latest = {p.name: k for k, p in _runs.items() if p.finished}
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            if latest.get(_runs[key].name) != key:
                del _runs[key]


def _in_notebook() -> bool:
    # Cheap checks first: a plain script never imported ipykernel.
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()  # type: ignore[no-untyped-call]
        import ipywidgets  # noqa: F401
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


_clicks: bool | None = None


def clicks_reach_main() -> bool:
    """True in a kernel whose shell channel thread hands widget messages to opero at once.

    Then a stop button reaches a map that holds the kernel's main thread (a map run in the
    cell itself); see ``opero.notebook.clicks``. Checked once per process.
    """
    global _clicks
    if _clicks is None:
        _clicks = False
        if "ipykernel" in sys.modules:
            try:  # loaded by name: the notebook layer sits above this one
                _clicks = bool(importlib.import_module("opero.notebook.clicks").supported())
            except Exception:
                logger.debug("opero: stop clicks during a cell unavailable", exc_info=True)
    return _clicks


_interrupts_shown = False


def _show_interrupts_cleanly() -> None:
    # Inside IPython: an interrupted map's traceback shows the user's cell, not opero's
    # frames. Loaded by name: the notebook layer sits above this one.
    global _interrupts_shown
    _interrupts_shown = True
    try:
        from IPython import get_ipython

        magics = importlib.import_module("opero.notebook.magics")
        magics.install_interrupt_handler(get_ipython())  # type: ignore[no-untyped-call]
    except Exception:  # never let a display nicety break a map
        logger.debug("opero: interrupt handler not installed", exc_info=True)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Bar(Protocol):
    """What draws a map's progress: opero's notebook bar or a tqdm bar."""

    def update(self, p: MapProgress) -> None:
        """Show ``p``'s counts now."""

    def close(self, p: MapProgress) -> None:
        """Show ``p``'s final state and stop drawing."""


def _label(name: str) -> str:
    """``"name #n"``: the function's short name and its call number in this process."""
    with _runs_lock:
        _call_numbers[name] += 1
        return f"{name.rsplit('.', 1)[-1]} #{_call_numbers[name]}"


class MapProgress:
    """The progress of one map run: counts, rate, ETA, state, its bar and failures.

    Args:
        name: qualified name of the mapped function.
        total: number of items when known.
        show: the ``progress`` option: True, False, ``"auto"``, a dict of tqdm options or a
            tqdm class.
        retries: reads the function's retry counter (for the bar's postfix).
        stop: set to cancel the items not started yet (the map's own stop event).
        labels: the item labels by position (a DataFrame's index), for the failure log.
        failures: the function's failure log.

    Attributes:
        label: ``"name #n"``: the function's short name and its call number in this process.
        background: True when a stop click reaches the map while it runs: it runs outside
            the main thread, or the kernel hands clicks over at once (``clicks_reach_main``);
            else the map is stopped with an interrupt.
        state: ``"running"``, ``"done"``, ``"interrupted"`` (an exception or Ctrl-C ended it)
            or ``"stopped"`` (``stop()``: the rest of the items were cancelled).
    """

    __slots__ = (
        "_bar",
        "_base",
        "_counter",
        "_lock",
        "_next",
        "_retries",
        "_samples",
        "_stop",
        "_taken",
        "background",
        "cancelled",
        "done",
        "ended",
        "failed",
        "failures",
        "label",
        "labels",
        "map_id",
        "name",
        "started",
        "state",
        "total",
        "version",
        "wait_base",
        "workers",
    )

    def __init__(
        self,
        name: str,
        total: int | None,
        show: object,
        retries: Callable[[], int],
        stop: threading.Event | None = None,
        labels: Sequence[object] | None = None,
        failures: FailureLog | None = None,
        workers: int | None = None,
    ) -> None:
        self.map_id = next(_ids)
        #: the map's parallelism: in flight is never shown above it
        self.workers = workers
        #: the function's thread-seconds of rate-limit wait when the map started
        self.wait_base = _telemetry.lookup(name).waits_now()[0]
        self.name = name
        self.label = _label(name)
        self.total = total
        self.done = self.failed = self.cancelled = 0
        #: items handed to the executor so far (in flight = taken - done); see ``taken``
        self._taken = 0
        self._counter: Callable[[], int] | None = None
        self.state = "running"
        self.started = time.time()
        self.ended: float | None = None
        self.labels = labels
        self.failures = failures if failures is not None else failure_log(name)
        self.version = 0
        #: the map's results are collected outside the main thread, so a stop button's click
        #: can reach it: Jupyter handles widget messages in the main thread, between cells
        self.background = threading.current_thread() is not threading.main_thread() or clicks_reach_main()
        self._retries = retries
        self._base = retries()
        self._next = 0.0
        self._lock = threading.Lock()
        self._stop = stop if stop is not None else threading.Event()
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)], maxlen=128)
        self._bar: Bar | None = None if show is False or show is None else self._make_bar(show)
        self._announce()

    def _announce(self) -> None:
        """The run starts: dashboards and progress subscribers see it."""
        _keep(self)
        self._publish(False)
        if "IPython" in sys.modules and not _interrupts_shown:
            _show_interrupts_cleanly()

    # -- the bar -------------------------------------------------------------------------------

    def _make_bar(self, show: object) -> Bar | None:
        notebook = _in_notebook()
        if show == "auto" and not notebook and not _stderr_is_terminal():
            return None
        try:
            if notebook and (show is True or show == "auto"):
                # opero's own bar: done and failed in proportion, a stop button, a snapshot
                # that stays readable in saved notebooks. Loaded by name: the notebook layer
                # sits above this one and is only imported inside a kernel.
                bars = importlib.import_module("opero.notebook.bars")
                bar: Bar = bars.NotebookBar(self)
                return bar
            options: dict[str, Any] = {
                "total": self.total,
                "desc": self.label,
                "unit": "item",
                "leave": True,
                "dynamic_ncols": True,
            }
            if not notebook and not _stderr_is_terminal():
                # a CI log: one line every ~10 s, not one per tenth of a second
                options.update(mininterval=_LOG_INTERVAL, maxinterval=_LOG_INTERVAL)
            if isinstance(show, Mapping):
                options.update(show)
                from tqdm.auto import tqdm as cls
            elif isinstance(show, type):
                cls = show
            else:
                from tqdm.auto import tqdm as cls
            return _TqdmBar(cls(**options))
        except Exception:  # no front end usable here: run without a bar
            logger.debug("opero: progress bar unavailable", exc_info=True)
            return None

    # -- counts (called by the map's consumer, one thread) --------------------------------------

    @property
    def taken(self) -> int:
        """Items handed to the executor so far."""
        n = self._taken
        counter = self._counter
        if counter is not None:
            counted = counter()
            if self.total is not None:
                counted = min(counted, self.total)
            n = max(n, counted)
        return n

    @taken.setter
    def taken(self, value: int) -> None:
        self._taken = value

    def count_taken(self, counter: itertools.count[int] | Callable[[], int]) -> None:
        """Read ``taken`` from the counter that numbers the map's items, or from a reader of
        how far the executor has read the input."""
        if isinstance(counter, itertools.count):
            # zip(count(), items) numbers the items in C, no Python step per item; the count
            # runs one ahead once the input is exhausted (``taken`` is capped at the total)
            count = counter
            self._counter = lambda: int(repr(count)[6:-1])
        else:
            self._counter = counter

    def took(self, n: int) -> None:
        """``n`` more items were handed to the executor."""
        self._taken += n

    def item_failed(self, index: int, item: object, error: BaseException) -> None:
        """Record the failed item at position ``index`` with its own final error."""
        labels = self.labels
        value = _unspread(item)
        row = labels is not None and 0 <= index < len(labels)
        text = short_repr(labels[index] if labels is not None and row else value, 60)
        self.failures.add(text, error, self.label, index if index >= 0 else None, row, value)

    def advance(self, done: int, failed: int) -> None:
        """Count ``done`` more finished items, ``failed`` of them failed."""
        with self._lock:
            self.done += done
            self.failed += failed
            self.taken = max(self.taken, self.done)
            now = time.monotonic()
            if now < self._next:
                return
            self._next = now + _INTERVAL
            self._samples.append((now, self.done))
            self.version += 1
            bar = self._bar
        if bar is not None:
            bar.update(self)
        self._publish(False)

    # -- what dashboards read ------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the run is over (done, interrupted or stopped)."""
        return self.state != "running" and self.state != "stopping"

    @property
    def in_flight(self) -> int:
        """Items handed to the executor and not finished yet (never more than the workers).

        The executor may have taken the next item before a worker is free for it.
        """
        if self.finished:
            return 0
        n = max(0, self.taken - self.done)
        return n if self.workers is None else min(n, self.workers)

    def rate(self) -> float | None:
        """Items per second over the last ``RATE_WINDOW`` seconds (the whole run once over)."""
        if self.finished:
            span = (self.ended or time.time()) - self.started
            return self.done / span if span > 0 else None
        now = time.monotonic()
        samples = list(self._samples)
        base_t, base_done = samples[0]
        for t, d in samples:
            if now - t <= RATE_WINDOW:
                break
            base_t, base_done = t, d
        span = now - base_t
        if span <= 0:
            return None
        return (self.done - base_done) / span

    def eta(self) -> float | None:
        """Seconds left at the current rate, when the total is known."""
        if self.total is None or self.finished:
            return None
        rate = self.rate()
        if not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def elapsed(self) -> float:
        """Seconds since the run started (until it ended)."""
        return (self.ended or time.time()) - self.started

    def stop(self) -> None:
        """Cancel the items not started yet; the map returns what finished (the stop button).

        Items already running finish; the others hold ``opero.Cancelled`` in the results.
        """
        if self.state == "running":
            self.state = "stopping"
            self.version += 1
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` was called."""
        return self.state in ("stopping", "stopped")

    def close(self, interrupted: bool = False, cancelled: int = 0) -> None:
        """The run is over: finished, interrupted (an exception) or stopped."""
        with self._lock:
            self.cancelled = cancelled
            if self.state == "stopping":
                self.state = "stopped"
            elif interrupted:
                self.state = "interrupted"
            else:
                self.state = "done"
            self.ended = time.time()
            self.version += 1
            bar, self._bar = self._bar, None
        if bar is not None:
            try:
                bar.close(self)
            except Exception:  # a broken front end must not hide the map's results
                logger.debug("opero: progress bar close failed", exc_info=True)
        _keep(self)
        self._publish(True)

    def summary(self) -> str:
        """One line: ``fetch #2: 480/500 · 20 failed · 41.2/s · 12s elapsed · ETA 1s``."""
        total = "?" if self.total is None else f"{self.total:,}"
        parts = [f"{self.label}: {self.done:,}/{total}"]
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        if self.cancelled:
            parts.append(f"{self.cancelled:,} cancelled")
        rate = self.rate()
        if rate is not None:
            parts.append(f"{rate:,.1f}/s")
        if self.finished:
            parts.append(f"{self.state} in {format_seconds(self.elapsed())}")
        else:
            parts.append(f"{format_seconds(self.elapsed())} elapsed")  # like tqdm's [00:12<...]
            eta = self.eta()
            if eta is not None:
                parts.append(f"ETA {format_seconds(eta)}")
            if self.state == "stopping":
                parts.append("stopping")
        return " · ".join(parts)

    def _publish(self, finished: bool) -> None:
        for callback in list(_subscribers):
            try:
                callback(self.map_id, self.name, self.done, self.total, self.failed, finished)
            except Exception:  # a broken dashboard must never break the map
                logger.exception("opero: progress subscriber %r failed", callback)


def keep_interrupted(
    results: list[object], missing: object, progress: MapProgress, items: object, ordered: bool
) -> int:
    """After a KeyboardInterrupt: keep what was done, mark the rest; returns the items in flight.

    Every slot still ``missing`` gets a ``Cancelled``: the items that were running at that
    moment count as cancelled in ``fn.stats`` (``cancelled``) and in ``fn.failures()`` (an
    entry each), the items not started yet only in the results. ``items`` is the map's input
    (its items are looked up by position when it is a sequence).
    """
    from ._errors import Cancelled

    total = progress.total
    taken = max(progress.taken, progress.done)
    if total is not None:
        taken = min(taken, total)
    running = max(0, taken - progress.done)
    if not ordered:  # completion order: the finished ones first, then the rest as cancelled
        results.extend([missing] * ((total if total is not None else taken) - len(results)))
    elif total is not None and len(results) < total:
        results.extend([missing] * (total - len(results)))
    gone = f"{progress.label}: interrupted while this item ran"
    unstarted = f"{progress.label}: interrupted before this item started"
    flagged = 0
    for i, value in enumerate(results):
        if value is not missing:
            continue
        in_flight = (i < taken) if ordered else (flagged < running)
        if in_flight:
            flagged += 1
        results[i] = cancelled = Cancelled(gone if in_flight else unstarted)
        if in_flight:
            progress.item_failed(i if ordered else -1, _item_at(items, i) if ordered else "?", cancelled)
    _telemetry.lookup(progress.name).add(cancelled=flagged)
    progress.close(interrupted=True, cancelled=len(results) - progress.done)
    return flagged


def _item_at(items: object, index: int) -> object:
    try:
        return items[index] if isinstance(items, list | tuple | range) else f"#{index}"
    except IndexError:
        return f"#{index}"


def _unspread(item: object) -> object:
    # A pandas row over several columns travels as Spread(args, kwargs): show its values.
    args = getattr(item, "args", None)
    kwargs = getattr(item, "kwargs", None)
    if type(item).__name__ == "Spread" and isinstance(args, tuple) and isinstance(kwargs, dict):
        if kwargs and not args:
            return kwargs
        return args[0] if len(args) == 1 and not kwargs else args
    return item


def format_seconds(seconds: float) -> str:
    """``0.42s``, ``12s``, ``3m05s``, ``1h02m``."""
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Tqdm(Protocol):
    """What :class:`_TqdmBar` calls on a tqdm bar (or on a ``show=`` class of its kind)."""

    def update(self, n: int) -> object: ...

    def set_postfix(
        self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True, **kwargs: object
    ) -> None: ...

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None: ...

    def close(self) -> None: ...


class _TqdmBar:
    """A tqdm bar fed from a :class:`MapProgress` (rate and ETA are tqdm's own)."""

    __slots__ = ("bar", "shown")

    def __init__(self, bar: _Tqdm) -> None:
        self.bar = bar
        self.shown = 0

    def _sync(self, p: MapProgress) -> None:
        delta = p.done - self.shown
        if delta:
            self.bar.update(delta)
            self.shown = p.done

    def update(self, p: MapProgress) -> None:
        self._sync(p)
        self.bar.set_postfix(failed=p.failed, retries=p._retries() - p._base, refresh=False)

    def close(self, p: MapProgress) -> None:
        self._sync(p)
        postfix: dict[str, object] = {"failed": p.failed, "retries": p._retries() - p._base}
        if p.state != "done":
            postfix["state"] = p.state
        self.bar.set_postfix(postfix, refresh=False)
        if p.state != "done":
            # tqdm.notebook colours an unfinished bar red/orange; the text bar says it in words
            self.bar.set_description(f"{p.label} ({p.state})", refresh=False)
        self.bar.close()


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask when known)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
