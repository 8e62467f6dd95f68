"""Per-function counters (``fn.stats``) and the registry of every decorated function's stats.

Counters are updated on every call, the four hot ones lock-free (see :class:`FunctionStats`);
latency is sampled. ``_telemetry`` builds on this room and re-exports its names.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Generic, TypedDict, TypeVar

__all__ = [
    "RECENT_WINDOW",
    "SAMPLE_ALL",
    "SAMPLE_EVERY",
    "SAMPLE_MASK",
    "FunctionStats",
    "PaceSnapshot",
    "Registry",
    "all_stats",
    "lookup",
    "register",
    "registry",
    "set_status_reader",
]


class PaceSnapshot(TypedDict, total=False):
    """The pace's numbers in ``fn.stats`` (the token keys with a token budget, the rest with slots)."""

    tokens_used: float
    token_limit: float | None
    token_budget: float | None
    max_concurrency: int
    concurrency_in_flight: int


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
#: Latency sampling: every call of the first ``SAMPLE_ALL``, then one call in ``SAMPLE_EVERY``
#: (the calls whose number ``n & SAMPLE_MASK == 0``). Timing every call would cost two clock
#: reads, more than a whole cache hit; a systematic 1-in-16 sample gives the same p50/p95.
SAMPLE_ALL = 16
SAMPLE_EVERY = 16
SAMPLE_MASK = SAMPLE_EVERY - 1
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
        self.pace: Callable[[], PaceSnapshot] | None = None
        self._lock = threading.Lock()
        self._started = itertools.count()  # every call, when it starts
        self._quick = itertools.count()  # succeeded at the first attempt: a success, an attempt
        self._hits = itertools.count()  # answered from the cache: a success, a cache hit
        #: ``next()`` of the counters, for the hot path: ``started()`` returns the call's number.
        self.started = self._started.__next__
        self.quick = self._quick.__next__
        self.hit = self._hits.__next__
        self.reset()

    def __reduce__(self) -> tuple[Callable[[str], FunctionStats], tuple[str]]:
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

    def export(self) -> dict[str, object]:
        """Raw counters and latencies, to send from a worker to the parent."""
        with self._lock:
            out: dict[str, object] = {c: getattr(self, c) for c in _COUNTERS}
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


def _fmt(value: object) -> str:
    import html

    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


#: Reads an error's HTTP status; set by a layer above (``_failures``: ``_hints.status_of``),
#: which this one may not import.
_status_reader: Callable[[BaseException], int | None] | None = None


def set_status_reader(reader: Callable[[BaseException], int | None]) -> None:
    """Install the HTTP status reader used to count failed attempts per status."""
    global _status_reader
    _status_reader = reader


_Named = TypeVar("_Named")


class Registry(Generic[_Named]):
    """One object per function name, made by ``make(name)``, thread-safe.

    The functions' stats here, their failure logs in ``_failures`` (a layer above).
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


# name -> stats of every decorated function in this process (the latest definition wins,
# so re-running a notebook cell does not leave a stale row behind).
registry: Registry[FunctionStats] = Registry(FunctionStats)


def register(name: str) -> FunctionStats:
    """Create the stats of a newly decorated function."""
    return registry.fresh(name)


def lookup(name: str) -> FunctionStats:
    """The stats registered under ``name``, created when missing (used by worker relays)."""
    return registry.get(name)


def all_stats() -> list[FunctionStats]:
    """Every registered function's stats."""
    return registry.values()
