"""Events, counters and their subscribers: the logger, callbacks, hooks, stats, the dashboard.

Every layer reports through a :class:`Recorder`. Counters are updated on every call (cheap,
under one lock); :class:`Event` records are only built when someone listens: the ``opero``
logger at that level, a callback, or a subscriber (the notebook dashboard and the
``opero.instrumentation`` hooks are subscribers).

Each event is logged with its fields in the record's ``extra`` (``event``, ``function``,
``attempt``, ``round``, ``candidate``, ``delay``, ``error_type``, ...), so JSON formatters and
structlog read them without parsing the message.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from ._options import Options

__all__ = ["Event", "FunctionStats", "Recorder", "configure_logging", "logger", "stats", "subscribe"]

logger = logging.getLogger("opero")
# A library must not print through logging's last-resort handler; configure_logging() opts in.
logger.addHandler(logging.NullHandler())

#: Event kinds, and the level each is logged at. INFO stays quiet on a healthy run: one
#: WARNING per retry (like tenacity's ``before_sleep_log``), one INFO line per fallback and
#: per failed call; the per-call chatter (start, success, cache, rate waits, single failed
#: attempts, which the retry line already reports) is DEBUG. A kind not listed here (a newer
#: one) is logged at INFO and reaches every subscriber like the others.
LEVELS: dict[str, int] = {
    "start": logging.DEBUG,
    "cache_hit": logging.DEBUG,
    "cache_miss": logging.DEBUG,
    "cache_error": logging.WARNING,
    "rate_wait": logging.DEBUG,
    "attempt_failed": logging.DEBUG,
    "fallback": logging.INFO,
    "retry": logging.WARNING,
    "timeout": logging.DEBUG,
    "success": logging.DEBUG,
    "failure": logging.INFO,
    "item_failed": logging.DEBUG,
    "breaker": logging.WARNING,
    "rate": logging.INFO,
}
#: kinds that end a call (the matching ``start`` has the same ``call`` id)
ENDS = frozenset({"success", "failure"})
_CALLBACK_OF = {
    "retry": "on_retry",
    "success": "on_success",
    "failure": "on_failure",
    "cache_hit": "on_cache_hit",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened inside a decorated call.

    Kinds: ``"start"`` (a call begins), ``"success"``, ``"failure"`` (a call ends, with its
    ``duration``), ``"attempt_failed"``, ``"retry"`` (a retry round is scheduled after
    ``delay`` seconds), ``"fallback"`` (moving to candidate ``candidate``), ``"timeout"``,
    ``"cache_hit"``, ``"cache_miss"``, ``"cache_error"``, ``"rate_wait"`` (``delay`` seconds
    held back by the rate limit), ``"item_failed"`` (an opmap item failed, with its
    ``item``), ``"breaker"`` (the circuit breaker changed ``state``) and ``"rate"`` (an
    adaptive rate limit moved to ``rate`` calls per second: every cut, and each 10% climb).
    New kinds may be
    added: listeners should ignore kinds they do not know.

    Attributes:
        kind: what happened (see above).
        func: qualified name of the decorated function (``module.qualname``).
        time: wall-clock time (``time.time()``) of the event.
        attempt: 1-based attempt number within the call, when it applies.
        round: 1-based retry round, when it applies.
        candidate: index of the fallback candidate in use, when it applies.
        delay: seconds slept (retry backoff) or waited (rate limit).
        error: the exception of a failed attempt or call.
        item: the opmap item being processed, when known.
        pid: process that produced the event (process and dask workers report home).
        duration: seconds the call took (``success`` and ``failure``).
        state: the new state of a ``breaker`` event (``"open"``, ``"half_open"``, ``"closed"``).
        rate: the new rate of a ``rate`` event (calls per second).
        call: id of the call the event belongs to, unique within its ``pid`` (None when no
            listener saw the call start).
    """

    kind: str
    func: str
    time: float
    attempt: int | None = None
    round: int | None = None
    candidate: int | None = None
    delay: float | None = None
    error: BaseException | None = None
    item: Any = None
    pid: int = 0
    duration: float | None = None
    state: str | None = None
    rate: float | None = None
    call: int | None = None

    @property
    def error_type(self) -> str | None:
        """The error's class as ``module.QualName`` (builtins: just the name), or None."""
        return None if self.error is None else error_type(self.error)

    def fields(self) -> dict[str, Any]:
        """The event as flat, JSON-friendly fields: the logger's ``extra``.

        Keys: ``event`` (the kind), ``function``, and those of ``attempt``, ``round``,
        ``candidate``, ``delay``, ``duration``, ``state``, ``rate``, ``error_type``, ``error`` (the
        message), ``item`` (a short repr unless a plain scalar), ``pid``, ``call`` that apply.
        """
        out: dict[str, Any] = {"event": self.kind, "function": self.func}
        for name in ("attempt", "round", "candidate", "delay", "duration", "state", "rate"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.error is not None:
            out["error_type"] = error_type(self.error)
            out["error"] = _short(str(self.error))
        if self.item is not None:
            item = self.item
            out["item"] = item if isinstance(item, str | int | float | bool) else _short(repr(item))
        out["pid"] = self.pid
        if self.call is not None:
            out["call"] = self.call
        return out

    def message(self) -> str:
        """One human line for the log."""
        f, k = self.func, self.kind
        err = f"{type(self.error).__name__}: {_short(str(self.error))}" if self.error is not None else ""
        if k == "retry":  # tenacity's before_sleep_log wording
            how = f" (attempt {self.attempt} raised {err})" if err else ""
            return f"retrying {f} in {self.delay or 0.0:.3g} s{how}"
        if k == "fallback":
            return f"{f}: trying fallback candidate {self.candidate} (attempt {self.attempt}) after {err}"
        if k == "attempt_failed":
            return (
                f"{f}: attempt {self.attempt} failed (round {self.round}, candidate {self.candidate}): {err}"
            )
        if k == "rate_wait":
            return f"{f}: rate limit held the call back {self.delay or 0.0:.3g} s"
        if k == "start":
            return f"{f}: call started"
        if k == "success":
            return f"{f}: succeeded in {self.duration or 0.0:.3g} s"
        if k == "failure":
            return f"{f}: failed after {self.duration or 0.0:.3g} s: {err}"
        if k == "item_failed":
            return f"{f}: item {_short(repr(self.item))} failed: {err}"
        parts = [f"{f}: {k.replace('_', ' ')}"]
        if self.state is not None:
            parts.append(f"state {self.state}")
        if self.rate is not None:
            parts.append(f"rate {self.rate:.3g}/s")
        if self.attempt is not None:
            parts.append(f"attempt {self.attempt}")
        if self.candidate is not None:
            parts.append(f"candidate {self.candidate}")
        if self.delay is not None:
            parts.append(f"delay {self.delay:.3g} s")
        if err:
            parts.append(err)
        return ", ".join(parts)


def error_type(error: BaseException) -> str:
    """``module.QualName`` of an exception's class; builtins by their bare name."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_COUNTERS = (
    "calls",
    "successes",
    "failures",
    "attempts",
    "retries",
    "fallbacks",
    "cache_hits",
    "cache_misses",
    "rate_waits",
    "rate_wait_seconds",
    "rate_wait_wall",
    "timeouts",
    "cancelled",
)
_LATENCY_WINDOW = 4096
#: ``recent_throughput`` counts the calls that finished over the last this many seconds.
RECENT_WINDOW = 5.0
#: Least seconds between two samples of the finished count kept for ``recent_throughput``.
_RECENT_STEP = 0.25
#: The rate-limit wait of the call under way in this thread or task: (id of its stats,
#: seconds waited so far, start of the current wait). Latency is time in the function: the
#: wait is taken off when the call ends.
_call_wait: contextvars.ContextVar[tuple[int, float, float]] = contextvars.ContextVar(
    "opero_call_wait", default=(0, 0.0, 0.0)
)
#: Latency sampling: every call of the first ``_SAMPLE_ALL``, then one call in ``_SAMPLE_EVERY``
#: (the calls whose number ``n & _SAMPLE_MASK == 0``). Timing every call would cost two clock
#: reads, more than a whole cache hit; a systematic 1-in-16 sample gives the same p50/p95.
_SAMPLE_ALL = 16
_SAMPLE_EVERY = 16
_SAMPLE_MASK = _SAMPLE_EVERY - 1
#: Counters that the hot path bumps without a lock (see FunctionStats); the rest are locked.
_HOT = {"calls": "_calls", "successes": "_successes", "attempts": "_attempts", "cache_hits": "_cache_hits"}


def _value(counter: itertools.count[int]) -> int:
    # itertools.count has no public read; its repr is "count(N)" in every CPython version.
    return int(repr(counter)[6:-1])


class FunctionStats:
    """Thread-safe counters of one decorated function (``fn.stats``).

    Counters are attributes (``fn.stats.retries``) and keys (``fn.stats["retries"]``);
    :meth:`as_dict` adds latency (mean, p50, p95 over the last 4096 sampled calls) and
    throughput.

    The four counters every call touches (calls, successes, attempts, cache hits) are
    ``itertools.count`` objects on the hot path: ``next()`` on one is a single C call, atomic
    under the GIL (CPython numbers its threads the same way), so a call pays no lock for
    them. Reads add them to the locked part; ``in_flight`` is calls minus finished calls.
    """

    __slots__ = (
        *(c for c in _COUNTERS if c not in _HOT),
        *_HOT.values(),
        "name",
        "budget",
        "pace",
        "_waiting",
        "_wait_since",
        "_wait_starts",
        "_recent",
        "defined",
        "attempt_errors",
        "_lock",
        "_latencies",
        "_first",
        "_last",
        "_started",
        "_quick",
        "_hits",
        "started",
        "quick",
        "hit",
    )

    failures: int
    retries: int
    fallbacks: int
    cache_misses: int
    rate_waits: int
    rate_wait_seconds: float
    #: wall-clock seconds during which at least one call waited for the rate limit
    #: (rate_wait_seconds adds every thread's wait: 16 threads waiting 1 s count 16 s)
    rate_wait_wall: float
    timeouts: int
    #: items of an interrupted map that were running at that moment (they count as cancelled)
    cancelled: int
    #: the rate limit (attempts per second), the current one of an adaptive limit, else None
    budget: float | None

    def __init__(self, name: str) -> None:
        self.name = name
        self.budget = None
        #: [pace] a callable adding tokens used / slots in use to as_dict (None: not paced)
        self.pace: Callable[[], dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._started = itertools.count()  # every call, when it starts
        self._quick = itertools.count()  # succeeded at the first attempt: a success, an attempt
        self._hits = itertools.count()  # answered from the cache: a success, a cache hit
        #: ``next()`` of the counters, for the hot path: ``started()`` returns the call's number.
        self.started = self._started.__next__
        self.quick = self._quick.__next__
        self.hit = self._hits.__next__
        self.reset()

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to another process (with a function pickled by value), stats become that
        # process's own counters of the same name; workers report them home per chunk.
        return (lookup, (self.name,))

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            for c in _COUNTERS:
                if c not in _HOT:
                    setattr(self, c, 0)
            self.rate_wait_seconds = 0.0
            self.rate_wait_wall = 0.0
            self._waiting = 0
            self._wait_since = 0.0
            self._wait_starts = 0.0  # sum of the monotonic start times of the waits under way
            #: when the history starts (the definition, or this reset): zero calls then
            self.defined = time.time()
            #: (time.time(), finished calls) samples for recent_throughput, oldest first
            self._recent: deque[tuple[float, int]] = deque([(self.defined, 0)], maxlen=64)
            #: failed attempts per HTTP status (None: not an HTTP error), recovered or not
            self.attempt_errors: Counter[int | None] = Counter()
            # The lock-free counters cannot be rewound: the locked parts start below zero.
            quick, hits = _value(self._quick), _value(self._hits)
            self._calls = -_value(self._started)
            self._successes = -(quick + hits)
            self._attempts = -quick
            self._cache_hits = -hits
            self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
            self._first = 0.0
            self._last = 0.0

    @property
    def calls(self) -> int:
        """Calls started."""
        return self._calls + _value(self._started)

    @property
    def successes(self) -> int:
        """Calls that returned a value (cache hits included)."""
        return self._successes + _value(self._quick) + _value(self._hits)

    @property
    def attempts(self) -> int:
        """Times the function itself ran."""
        return self._attempts + _value(self._quick)

    @property
    def cache_hits(self) -> int:
        """Calls answered from the cache."""
        return self._cache_hits + _value(self._hits)

    @property
    def in_flight(self) -> int:
        """Calls started and not finished yet."""
        done = self.successes + self.failures  # read before calls: never below zero
        return self.calls - done

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def add(self, **deltas: float) -> None:
        """Add to counters, e.g. ``add(retries=1)``."""
        with self._lock:
            for k, v in deltas.items():
                k = _HOT.get(k, k)
                setattr(self, k, getattr(self, k) + v)

    def wait_begin(self) -> None:
        """A call starts waiting for the rate limit (``rate_wait_wall`` counts the time during
        which at least one call waits)."""
        now = time.monotonic()
        with self._lock:
            if not self._waiting:
                self._wait_since = now
            self._waiting += 1
            self._wait_starts += now
        mine, waited, _ = _call_wait.get()
        _call_wait.set((id(self), waited if mine == id(self) else 0.0, now))

    def wait_end(self) -> None:
        """A call stops waiting for the rate limit."""
        now = time.monotonic()
        mine, waited, since = _call_wait.get()
        if mine != id(self):  # begun in another context (should not happen): count from now
            since = now
        with self._lock:
            self._waiting -= 1
            self._wait_starts -= since
            if not self._waiting:
                self.rate_wait_wall += now - self._wait_since
                self._wait_starts = 0.0
        _call_wait.set((id(self), waited + now - since, now))

    def attempt_failed(self, error: BaseException | None) -> None:
        """Count one failed attempt by its HTTP status (the dashboard's recovered errors)."""
        reader = _status_reader
        status = reader(error) if reader is not None and error is not None else None
        with self._lock:
            self.attempt_errors[status] += 1

    def waits_now(self) -> tuple[float, float]:
        """``(rate_wait_seconds, rate_wait_wall)`` including the waits under way now."""
        now = time.monotonic()
        with self._lock:
            seconds, wall = self.rate_wait_seconds, self.rate_wait_wall
            if self._waiting:
                wall += now - self._wait_since
                seconds += self._waiting * now - self._wait_starts
        return seconds, wall

    def begin(self) -> None:
        """A call starts (the drivers call ``started()`` directly)."""
        self.started()
        if not self._first:
            self._first = time.time()

    def end(self, ok: bool, latency: float | None, attempts: int = 0) -> None:
        """A call ends, successfully or not, after ``latency`` seconds (None: not sampled)."""
        mine, waited, _ = _call_wait.get()
        if mine == id(self):
            _call_wait.set((0, 0.0, 0.0))
        else:
            waited = 0.0
        with self._lock:
            self._attempts += attempts
            if ok:
                self._successes += 1
            else:
                self.failures += 1
        if latency is not None:
            # latency is time in the function: the call's rate-limit wait is reported apart
            self.mark(max(0.0, latency - waited))
        elif self._first:
            self._last = time.time()  # when the function was last busy (recent_throughput)

    def mark(self, latency: float) -> None:
        """Record one sampled call's latency (and when it ended, for throughput)."""
        now = time.time()
        if not self._first:
            self._first = now - latency
        self._latencies.append(latency)  # deque.append is atomic: no lock
        self._last = now

    def recent_throughput(self, now: float | None = None) -> float:
        """Calls finished per second over the last ``RECENT_WINDOW`` seconds (0 when idle).

        Measured from samples of the finished count taken when the stats are read (the
        dashboard reads them ten times a second) and the function's definition (zero calls).
        """
        now = time.time() if now is None else now
        done = self.successes + self.failures
        with self._lock:
            samples = self._recent
            if now - samples[-1][0] >= _RECENT_STEP:
                samples.append((now, done))
            base = samples[0]
            for sample in samples:
                if sample[0] > now - RECENT_WINDOW:
                    break
                base = sample
            last = self._last
        if done <= base[1] or (last and now - last > RECENT_WINDOW and base[0] <= now - RECENT_WINDOW):
            return 0.0
        # at least a second: one call right after the definition is not thousands per second
        return (done - base[1]) / max(now - base[0], 1.0)

    def export(self) -> dict[str, Any]:
        """Raw counters and latencies, to send from a worker to the parent."""
        with self._lock:
            out: dict[str, Any] = {c: getattr(self, c) for c in _COUNTERS}
            out["latencies"] = list(self._latencies)
            out["first"], out["last"] = self._first, self._last
            out["attempt_errors"] = dict(self.attempt_errors)
        return out

    def merge(self, exported: dict[str, Any]) -> None:
        """Add counters exported by a worker (see :meth:`export`)."""
        with self._lock:
            for c in _COUNTERS:
                k = _HOT.get(c, c)
                setattr(self, k, getattr(self, k) + exported.get(c, 0))
            self._latencies.extend(exported.get("latencies", ()))
            self.attempt_errors.update(exported.get("attempt_errors", {}))
            first, last = exported.get("first", 0.0), exported.get("last", 0.0)
            if first and (not self._first or first < self._first):
                self._first = first
            self._last = max(self._last, last)

    def as_dict(self) -> dict[str, Any]:
        """Every counter plus latency mean/p50/p95 (seconds) and throughput (calls/s)."""
        with self._lock:
            out: dict[str, Any] = {"function": self.name}
            # finished calls before started ones: a concurrent call never makes in_flight < 0
            snap = {c: getattr(self, c) for c in reversed(_COUNTERS)}
            out.update({c: snap[c] for c in _COUNTERS})
            out["in_flight"] = out["calls"] - out["successes"] - out["failures"]
            lat = sorted(self._latencies)
            span = self._last - self._first
            done = self.successes + self.failures
        out["rate_wait_seconds"], out["rate_wait_wall"] = self.waits_now()
        out["latency_mean"] = sum(lat) / len(lat) if lat else None
        out["latency_p50"] = lat[len(lat) // 2] if lat else None
        out["latency_p95"] = lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else None
        out["throughput"] = done / span if span > 0 else None
        out["recent_throughput"] = self.recent_throughput()
        lookups = out["cache_hits"] + out["cache_misses"]
        out["cache_hit_rate"] = out["cache_hits"] / lookups if lookups else None
        if self.pace is not None:  # [pace]
            out.update(self.pace())
        return out

    def __repr__(self) -> str:
        d = self.as_dict()
        keys = ("calls", "successes", "failures", "retries", "cache_hits", "rate_waits", "in_flight")
        return f"<FunctionStats {self.name}: " + ", ".join(f"{k}={d[k]}" for k in keys) + ">"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
            for k, v in self.as_dict().items()
        )
        return f"<table class='opero-stats'>{rows}</table>"


def _fmt(value: Any) -> str:
    import html

    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


#: Reads an error's HTTP status; set by a layer above (``_progress``: ``_hints.status_of``),
#: which this one may not import.
_status_reader: Callable[[BaseException], int | None] | None = None


def set_status_reader(reader: Callable[[BaseException], int | None]) -> None:
    """Install the HTTP status reader used to count failed attempts per status."""
    global _status_reader
    _status_reader = reader


#: Records a plain call's failure in its function's failure log (set by ``_progress``).
_failure_sink: Callable[[str, BaseException], None] | None = None


def set_failure_sink(sink: Callable[[str, BaseException], None]) -> None:
    """Install what records a failed plain ``@opero`` call (``fn.failures()``)."""
    global _failure_sink
    _failure_sink = sink


_Named = TypeVar("_Named")


class Registry(Generic[_Named]):
    """One object per function name, made by ``make(name)``, thread-safe.

    The functions' stats here, their failure logs in ``_progress`` (a layer above).
    """

    __slots__ = ("_items", "_lock", "_make")

    def __init__(self, make: Callable[[str], _Named]) -> None:
        self._items: dict[str, _Named] = {}
        self._lock = threading.Lock()
        self._make = make

    def fresh(self, name: str) -> _Named:
        """A new object for a newly decorated function: the latest definition wins."""
        return self.put(name, self._make(name))

    def put(self, name: str, item: _Named) -> _Named:
        """Register ``item`` under ``name`` (replacing any) and return it."""
        with self._lock:
            self._items[name] = item
        return item

    def get(self, name: str) -> _Named:
        """The object registered under ``name``, created when missing."""
        with self._lock:
            item = self._items.get(name)
            if item is None:
                item = self._items[name] = self._make(name)
            return item

    def values(self) -> list[_Named]:
        """Every registered object."""
        with self._lock:
            return list(self._items.values())


_subscribers: list[tuple[Callable[[Event], object], frozenset[str] | None]] = []
# What the subscribers want, kept up to date by subscribe(): a subscriber that only asks for
# failures (the notebook dashboard) must not make every successful call build an Event.
_wanted_all = False
_wanted_kinds: frozenset[str] = frozenset()


def _update_wanted() -> None:
    global _wanted_all, _wanted_kinds
    entries = list(_subscribers)
    _wanted_all = any(kinds is None for _, kinds in entries)
    _wanted_kinds = frozenset().union(*(kinds for _, kinds in entries if kinds is not None))


# name -> stats of every decorated function in this process (the latest definition wins,
# so re-running a notebook cell does not leave a stale row behind).
_registry: Registry[FunctionStats] = Registry(FunctionStats)


def register(name: str) -> FunctionStats:
    """Create the stats of a newly decorated function."""
    return _registry.fresh(name)


def lookup(name: str) -> FunctionStats:
    """The stats registered under ``name``, created when missing (used by worker relays)."""
    return _registry.get(name)


def all_stats() -> list[FunctionStats]:
    """Every registered function's stats."""
    return _registry.values()


def subscribe(callback: Callable[[Event], object], kinds: Iterable[str] | None = None) -> Callable[[], None]:
    """Call ``callback(event)`` for every event (of ``kinds``); returns an unsubscribe function."""
    entry = (callback, frozenset(kinds) if kinds is not None else None)
    _subscribers.append(entry)
    _update_wanted()

    def unsubscribe() -> None:
        try:
            _subscribers.remove(entry)
        except ValueError:
            pass
        _update_wanted()

    return unsubscribe


def dispatch(event: Event) -> None:
    """Send an event to the logger (fields in ``extra``) and the subscribers."""
    level = LEVELS.get(event.kind, logging.INFO)
    if logger.isEnabledFor(level):
        logger.log(level, "%s", event.message(), extra=event.fields())
    for callback, kinds in list(_subscribers):
        if kinds is None or event.kind in kinds:
            _safe(callback, event)


def _safe(callback: Callable[[Event], object], event: Event) -> None:
    try:
        callback(event)
    except Exception:  # a broken listener must never break the user's call
        logger.exception("opero: event listener %r failed", callback)


# Which call an event belongs to: the ids of the calls under way in this thread or task,
# innermost last, as (function, id). Set by the "start" event, so only while someone listens.
_calls: contextvars.ContextVar[tuple[tuple[str, int], ...]] = contextvars.ContextVar(
    "opero_calls", default=()
)
_call_ids = itertools.count(1)
#: kinds counted whether or not anyone listens (they happen on the failure path only)
_COUNTED = frozenset({"attempt_failed", "failure", "rate"})


class Recorder:
    """Reports one decorated function's events: counters always, events when listened to."""

    __slots__ = ("_callbacks", "log_failures", "name", "relay", "relay_kinds", "stats")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.stats = register(name)
        # the rate limit (an adaptive one: where it starts; "rate" events move it)
        self.stats.budget = options.start_rate
        self._callbacks = {
            kind: cb for kind, attr in _CALLBACK_OF.items() if (cb := getattr(options, attr)) is not None
        }
        #: When set (inside a process worker), events are appended here to travel home
        #: instead of being delivered here: the parent logs them and runs the hooks.
        self.relay: list[Event] | None = None
        #: the kinds the parent listens to (None: all of them)
        self.relay_kinds: frozenset[str] | None = None
        #: a plain ``@opero`` function: each failed call goes to its failure log
        #: (``fn.failures()``); a map's items are logged by the map, with their item
        self.log_failures = False

    def wants(self, kind: str) -> bool:
        """Whether building an Event of ``kind`` is worth it (someone listens)."""
        if self.relay is not None:
            return self.relay_kinds is None or kind in self.relay_kinds
        return (
            kind in self._callbacks
            or _wanted_all
            or kind in _wanted_kinds
            or logger.isEnabledFor(LEVELS.get(kind, logging.INFO))
        )

    def wanted_kinds(self) -> frozenset[str] | None:
        """The kinds someone listens to in this process (None: every kind, a hook wants all)."""
        if _wanted_all:
            return None
        return frozenset(k for k in (*LEVELS, *_wanted_kinds) if self.wants(k))

    def emit(self, kind: str, **fields: Any) -> None:
        """Build and deliver an Event when anyone listens."""
        if kind in _COUNTED:  # failure-path kinds only: the hot path never gets here
            self._count(kind, fields)
        if not self.wants(kind):
            return
        stack = _calls.get()
        if kind == "start":
            call = next(_call_ids)
            # Pushed only when the call's end will be emitted too (it pops the entry): a
            # listener of "start" alone must not grow this thread's stack with every call.
            if self.wants("success") and self.wants("failure"):
                _calls.set((*stack, (self.name, call)))
        elif stack and stack[-1][0] == self.name:
            call = stack[-1][1]
            if kind in ENDS:
                _calls.set(stack[:-1])
        else:
            call = None
        event = Event(kind, self.name, time.time(), pid=os.getpid(), call=call, **fields)
        if self.relay is not None:
            self.relay.append(event)
            return
        dispatch(event)
        cb = self._callbacks.get(kind)
        if cb is not None:
            _safe(cb, event)

    def _count(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "attempt_failed":
            self.stats.attempt_failed(fields.get("error"))
        elif kind == "failure":
            sink = _failure_sink
            if self.log_failures and sink is not None and fields.get("error") is not None:
                sink(self.name, fields["error"])
        elif kind == "rate" and fields.get("rate"):
            self.stats.budget = float(fields["rate"])  # an adaptive limit: its current rate

    def replay(self, event: Event) -> None:
        """Deliver an event relayed from a worker process: listeners, log and callback."""
        dispatch(event)
        cb = self._callbacks.get(event.kind)
        if cb is not None:
            _safe(cb, event)


class _OperoHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """``configure_logging()``'s stderr handler.

    It stays silent for a record that also reaches a handler further up (the root logger set
    up by ``logging.basicConfig``, a JSON handler, structlog's stdlib bridge): that handler
    prints it, so a line never appears twice, whichever was configured first.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if _reaches_other_handler(record):
            return False
        return super().handle(record)


def _reaches_other_handler(record: logging.LogRecord) -> bool:
    node: logging.Logger | None = logger
    while node is not None and node.propagate:
        node = node.parent
        if node is None:
            break
        for h in node.handlers:
            if not isinstance(h, logging.NullHandler) and record.levelno >= h.level:
                return True
    return False


def configure_logging(level: int | str = logging.INFO, format: str | None = None) -> logging.Logger:  # noqa: A002
    """Send the ``opero`` logger's records to stderr at ``level`` and return the logger.

    Calling it again changes the level and format; it never adds a second handler. When the
    root logger (or another ancestor) also has a handler, opero's lines go through that one
    only, so a line never appears twice. Each record carries the event's fields in its
    ``extra`` (see :meth:`Event.fields`): ``record.event``, ``record.function``,
    ``record.attempt``, ``record.error_type``...

    Args:
        level: a logging level (``logging.INFO``) or its name (``"DEBUG"``).
        format: a ``logging.Formatter`` format string; a compact default when None.

    Raises:
        ConfigurationError: an unknown level name.
    """
    if isinstance(level, str):
        name = level
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            from ._errors import ConfigurationError

            raise ConfigurationError(
                f"unknown log level {name!r}; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if isinstance(h, _OperoHandler)), None)
    if handler is None:
        handler = _OperoHandler()
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(format or "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return logger


def stats() -> pd.DataFrame:
    """Every decorated function's counters as a pandas DataFrame, one row per function."""
    import pandas as pd

    rows = [s.as_dict() for s in all_stats()]
    frame = pd.DataFrame(rows)
    if rows:
        frame = frame.set_index("function")
    return frame


if level_name := os.environ.get("OPERO_LOG_LEVEL"):
    configure_logging(level_name)
