"""The OpenTelemetry hook: a span per opero call, an event per retry."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._telemetry import ENDS, Event, error_type
from ._hooks import add_hook

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["OpenTelemetryHook", "enable_opentelemetry"]

#: events that become span events (retries first of all); the call's own start and end
#: are the span itself, and each failed attempt is already told by its retry or fallback
SPAN_EVENTS = frozenset(
    {"retry", "fallback", "timeout", "cache_hit", "cache_miss", "rate_wait", "cache_error"}
)


@dataclass
class _Open:
    span: Span
    token: object | None
    attempts: int = 1
    retries: int = 0
    fallbacks: int = 0
    cache_hit: bool = False


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OpenTelemetryHook:
    """The hook :func:`enable_opentelemetry` registers.

    Each call becomes a span named after the function (``module.qualname``), with the
    attributes ``opero.function``, ``opero.attempts`` (attempts made; 0 for a cache hit),
    ``opero.retries``, ``opero.fallbacks``, ``opero.cache_hit`` and ``opero.outcome``
    (``success``/``failure``). Retries, fallbacks, timeouts, cache lookups and rate-limit
    waits are span events with their fields (``opero.attempt``, ``opero.round``,
    ``opero.delay``, ``exception.type``, ``exception.message``); a failed call records its
    exception and sets the span status to ERROR. Other event kinds (the circuit breaker's
    state changes, kinds added later) become span events when a call is open, and
    standalone zero-length spans otherwise.

    In the process that runs the call, the span is the current span while it runs, so
    spans the function opens (an instrumented HTTP client) are its children. Calls run by
    process or dask workers are rebuilt in the parent from the events they send home, with
    their real start and end times.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], _Open] = {}

    def __call__(self, event: Event) -> None:
        kind = event.kind
        key = (event.pid, event.call) if event.call is not None else None
        if kind == "start":
            if key is not None:
                self._start(event, key)
            return
        with self._lock:
            entry = self._open.pop(key, None) if kind in ENDS and key is not None else self._open.get(key)  # type: ignore[arg-type]
        if kind in ENDS:
            self._end(event, entry)
            return
        if entry is None:
            if kind not in SPAN_EVENTS:  # e.g. a breaker state change outside any call
                self._standalone(event)
            return
        if kind == "retry":
            entry.retries += 1
            entry.attempts += 1
        elif kind == "fallback":
            entry.fallbacks += 1
            entry.attempts += 1
        elif kind == "cache_hit":
            entry.cache_hit = True
            entry.attempts = 0
        if kind in SPAN_EVENTS or kind not in _KNOWN:
            entry.span.add_event(kind, _attributes(event), timestamp=_ns(event.time))

    def _start(self, event: Event, key: tuple[int, int]) -> None:
        from opentelemetry import context, trace

        local = event.pid == os.getpid()
        span = self.tracer.start_span(
            event.func,
            start_time=_ns(event.time),
            attributes={"opero.function": event.func, "opero.pid": event.pid},
        )
        # In the calling thread/task: make it the current span for what the function does.
        token = context.attach(trace.set_span_in_context(span)) if local else None
        with self._lock:
            self._open[key] = _Open(span, token)

    def _end(self, event: Event, entry: _Open | None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import Status, StatusCode

        if entry is None:  # the call started before the hook was enabled: a span of its length
            start = event.time - (event.duration or 0.0)
            entry = _Open(self.tracer.start_span(event.func, start_time=_ns(start)), None)
        span = entry.span
        span.set_attributes(
            {
                "opero.function": event.func,
                "opero.attempts": entry.attempts,
                "opero.retries": entry.retries,
                "opero.fallbacks": entry.fallbacks,
                "opero.cache_hit": entry.cache_hit,
                "opero.outcome": event.kind,
            }
        )
        if event.kind == "failure":
            if event.error is not None:
                span.record_exception(event.error, timestamp=_ns(event.time))
                span.set_status(Status(StatusCode.ERROR, f"{event.error_type}: {event.error}"[:300]))
            else:
                span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=_ns(event.time))
        # Detach only where it was attached: the current span is still this one.
        if entry.token is not None and trace.get_current_span() is span:
            context.detach(entry.token)  # type: ignore[arg-type]

    def _standalone(self, event: Event) -> None:
        span = self.tracer.start_span(f"{event.func} {event.kind}", start_time=_ns(event.time))
        span.set_attributes(_attributes(event))
        span.end(end_time=_ns(event.time))


_KNOWN = frozenset({"start", "success", "failure", "attempt_failed", "item_failed", *SPAN_EVENTS})


def _attributes(event: Event) -> dict[str, str | bool | int | float]:
    out: dict[str, str | bool | int | float] = {"opero.function": event.func, "opero.event": event.kind}
    for name in ("attempt", "round", "candidate", "delay", "state", "rate"):
        value = getattr(event, name)
        if value is not None:
            out[f"opero.{name}"] = value
    if event.error is not None:
        out["exception.type"] = error_type(event.error)
        out["exception.message"] = str(event.error)[:1000]
    return out


def enable_opentelemetry(tracer_provider: TracerProvider | None = None) -> OpenTelemetryHook:
    """Trace every opero call as an OpenTelemetry span (see :class:`OpenTelemetryHook`).

    Requires ``opentelemetry-api`` (``pip install 'opero[opentelemetry]'``) and, to export
    spans anywhere, an SDK set up by the application.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        >>> from opero import opero
        >>> from opero.instrumentation import enable_opentelemetry, remove_hook
        >>> exporter = InMemorySpanExporter()
        >>> provider = TracerProvider()
        >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
        >>> hook = enable_opentelemetry(provider)
        >>> tries = []
        >>> @opero(retries=2, min_delay=0, jitter=0)
        ... def flaky() -> str:
        ...     tries.append(1)
        ...     if len(tries) < 2:
        ...         raise ConnectionError("first try fails")
        ...     return "ok"
        >>> flaky()
        'ok'
        >>> [span.attributes["opero.attempts"] for span in exporter.get_finished_spans()]
        [2]
        >>> remove_hook(hook)
        True

    Args:
        tracer_provider: where spans go; None means the global one
            (``opentelemetry.trace.get_tracer_provider()``).

    Returns:
        The registered hook (pass it to ``remove_hook`` to stop).
    """
    from opentelemetry import trace

    tracer = trace.get_tracer("opero", tracer_provider=tracer_provider)
    return add_hook(OpenTelemetryHook(tracer))
