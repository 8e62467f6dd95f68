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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# the counters' room; its names are re-exported here, where the layers above look for them
from ._counters import RECENT_WINDOW as RECENT_WINDOW
from ._counters import SAMPLE_ALL as SAMPLE_ALL
from ._counters import SAMPLE_EVERY as SAMPLE_EVERY
from ._counters import SAMPLE_MASK as SAMPLE_MASK
from ._counters import FunctionStats as FunctionStats
from ._counters import Registry as Registry
from ._counters import all_stats as all_stats
from ._counters import lookup as lookup
from ._counters import register as register
from ._counters import registry as registry
from ._counters import set_status_reader as set_status_reader

# the names tests written before the counters had a room of their own import
_SAMPLE_ALL, _SAMPLE_EVERY = SAMPLE_ALL, SAMPLE_EVERY

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
    item: object = None
    pid: int = 0
    duration: float | None = None
    state: str | None = None
    rate: float | None = None
    call: int | None = None

    @property
    def error_type(self) -> str | None:
        """The error's class as ``module.QualName`` (builtins: just the name), or None."""
        return None if self.error is None else error_type(self.error)

    def fields(self) -> dict[str, object]:
        """The event as flat, JSON-friendly fields: the logger's ``extra``.

        Keys: ``event`` (the kind), ``function``, and those of ``attempt``, ``round``,
        ``candidate``, ``delay``, ``duration``, ``state``, ``rate``, ``error_type``, ``error`` (the
        message), ``item`` (a short repr unless a plain scalar), ``pid``, ``call`` that apply.
        """
        out: dict[str, object] = {"event": self.kind, "function": self.func}
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


#: Records a plain call's failure in its function's failure log (set by ``_failures``).
_failure_sink: Callable[[str, BaseException], None] | None = None


def set_failure_sink(sink: Callable[[str, BaseException], None]) -> None:
    """Install what records a failed plain ``@opero`` call (``fn.failures()``)."""
    global _failure_sink
    _failure_sink = sink


subscribers: list[tuple[Callable[[Event], object], frozenset[str] | None]] = []
# What the subscribers want, kept up to date by subscribe(): a subscriber that only asks for
# failures (the notebook dashboard) must not make every successful call build an Event.
_wanted_all = False
_wanted_kinds: frozenset[str] = frozenset()


def _update_wanted() -> None:
    global _wanted_all, _wanted_kinds
    entries = list(subscribers)
    _wanted_all = any(kinds is None for _, kinds in entries)
    _wanted_kinds = frozenset().union(*(kinds for _, kinds in entries if kinds is not None))


def subscribe(callback: Callable[[Event], object], kinds: Iterable[str] | None = None) -> Callable[[], None]:
    """Call ``callback(event)`` for every event (of ``kinds``); returns an unsubscribe function."""
    entry = (callback, frozenset(kinds) if kinds is not None else None)
    subscribers.append(entry)
    _update_wanted()

    def unsubscribe() -> None:
        try:
            subscribers.remove(entry)
        except ValueError:
            pass
        _update_wanted()

    return unsubscribe


def dispatch(event: Event) -> None:
    """Send an event to the logger (fields in ``extra``) and the subscribers."""
    level = LEVELS.get(event.kind, logging.INFO)
    if logger.isEnabledFor(level):
        logger.log(level, "%s", event.message(), extra=event.fields())
    for callback, kinds in list(subscribers):
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

    __slots__ = ("callbacks", "log_failures", "name", "relay", "relay_kinds", "stats")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.stats = register(name)
        # the rate limit (an adaptive one: where it starts; "rate" events move it)
        self.stats.budget = options.start_rate
        self.callbacks = {
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
            kind in self.callbacks
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
        cb = self.callbacks.get(kind)
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
        cb = self.callbacks.get(event.kind)
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
