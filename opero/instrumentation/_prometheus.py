"""The Prometheus hook: opero's events as ``prometheus_client`` metrics."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .._telemetry import ENDS, Event
from ._hooks import add_hook

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusHook", "enable_prometheus"]

#: Latency buckets (seconds): from a fast cache hit to a slow API call.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class PrometheusHook:
    """The hook :func:`enable_prometheus` registers; its metrics are attributes.

    Metrics (every one labelled by ``function``, opero's ``module.qualname``):

    - ``opero_calls_total{function,outcome}``: finished calls, ``outcome`` ``success`` or
      ``failure``;
    - ``opero_retries_total{function,error_type}``: retry rounds scheduled, by the error
      that caused them;
    - ``opero_fallbacks_total{function,error_type}``: moves to the next fallback candidate;
    - ``opero_cache_hits_total`` / ``opero_cache_misses_total``;
    - ``opero_rate_waits_total`` and ``opero_rate_wait_seconds_total``: attempts held back
      by the rate limit, and the seconds they waited;
    - ``opero_call_duration_seconds``: a histogram of call latency;
    - ``opero_in_flight``: calls started and not finished;
    - ``opero_events_total{function,event}``: every event by kind, including kinds this
      version does not know;
    - ``opero_breaker_state{function,state}``: 1 for the circuit breaker's current state;
    - ``opero_rate_limit{function}``: an adaptive rate limit's current calls per second.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["function", *labels], registry=registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, ["function", *labels], registry=registry)

        self.registry = registry
        self.calls = counter("opero_calls", "Finished calls of opero functions", "outcome")
        self.retries = counter("opero_retries", "Retry rounds scheduled", "error_type")
        self.fallbacks = counter("opero_fallbacks", "Moves to the next fallback candidate", "error_type")
        self.cache_hits = counter("opero_cache_hits", "Calls answered from the cache")
        self.cache_misses = counter("opero_cache_misses", "Cache lookups that found nothing")
        self.rate_waits = counter("opero_rate_waits", "Attempts held back by the rate limit")
        self.rate_wait_seconds = counter(
            "opero_rate_wait_seconds", "Seconds attempts waited for the rate limit"
        )
        self.events = counter("opero_events", "Every opero event, by kind", "event")
        self.duration = Histogram(
            "opero_call_duration_seconds",
            "Latency of opero calls (all attempts, backoff and waits included)",
            ["function"],
            registry=registry,
            buckets=BUCKETS,
        )
        self.in_flight = gauge("opero_in_flight", "Calls started and not finished")
        self.breaker = gauge("opero_breaker_state", "1 for the circuit breaker's current state", "state")
        self.rate = gauge("opero_rate_limit", "An adaptive rate limit's current calls per second")
        self._lock = threading.Lock()
        # calls whose start this hook saw, so a call that began before it was enabled never
        # drives the in-flight gauge below zero
        self._open: set[tuple[int, int]] = set()
        self._states: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        fn, kind = event.func, event.kind
        self.events.labels(fn, kind).inc()
        if kind == "start":
            if event.call is not None:
                with self._lock:
                    self._open.add((event.pid, event.call))
            self.in_flight.labels(fn).inc()
        elif kind in ENDS:
            self.calls.labels(fn, kind).inc()
            if event.duration is not None:
                self.duration.labels(fn).observe(event.duration)
            if event.call is not None:
                with self._lock:
                    started = (event.pid, event.call) in self._open
                    self._open.discard((event.pid, event.call))
                if started:
                    self.in_flight.labels(fn).dec()
        elif kind == "retry":
            self.retries.labels(fn, event.error_type or "").inc()
        elif kind == "fallback":
            self.fallbacks.labels(fn, event.error_type or "").inc()
        elif kind == "cache_hit":
            self.cache_hits.labels(fn).inc()
        elif kind == "cache_miss":
            self.cache_misses.labels(fn).inc()
        elif kind == "rate_wait":
            self.rate_waits.labels(fn).inc()
            self.rate_wait_seconds.labels(fn).inc(max(0.0, event.delay or 0.0))
        elif kind == "rate" and event.rate is not None:
            self.rate.labels(fn).set(event.rate)
        elif event.state is not None:  # breaker (and any later kind that reports a state)
            self._set_state(fn, event.state)

    def _set_state(self, fn: str, state: str) -> None:
        with self._lock:
            old = self._states.get(fn)
            self._states[fn] = state
        if old is not None and old != state:
            self.breaker.labels(fn, old).set(0)
        self.breaker.labels(fn, state).set(1)


_enabled: dict[int, PrometheusHook] = {}
_enabled_lock = threading.Lock()


def enable_prometheus(registry: CollectorRegistry | None = None) -> PrometheusHook:
    """Record every opero function's events as Prometheus metrics in ``registry``.

    Calling it again with the same registry returns the same hook (metrics are registered
    once). Expose them as usual, e.g. ``prometheus_client.start_http_server(8000)``.
    Requires ``prometheus-client`` (``pip install 'opero[prometheus]'``).

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from opero import opero
        >>> from opero.instrumentation import enable_prometheus, remove_hook
        >>> registry = CollectorRegistry()
        >>> hook = enable_prometheus(registry)
        >>> @opero(cache=True)
        ... def square(x: int) -> int:
        ...     return x * x
        >>> [square(x) for x in (2, 3, 2)]
        [4, 9, 4]
        >>> name = square.stats.name
        >>> registry.get_sample_value("opero_calls_total", {"function": name, "outcome": "success"})
        3.0
        >>> registry.get_sample_value("opero_cache_hits_total", {"function": name})
        1.0
        >>> remove_hook(hook)
        True

    Args:
        registry: a ``prometheus_client.CollectorRegistry``; None means the default
            ``prometheus_client.REGISTRY``.

    Returns:
        The registered :class:`PrometheusHook` (pass it to ``remove_hook`` to stop).
    """
    import prometheus_client

    reg: CollectorRegistry = prometheus_client.REGISTRY if registry is None else registry
    with _enabled_lock:
        hook = _enabled.get(id(reg))
        if hook is None or hook.registry is not reg:
            hook = _enabled[id(reg)] = PrometheusHook(reg)
    return add_hook(hook)
