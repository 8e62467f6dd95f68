"""Instrumentation hooks: send opero's events to metrics and tracing systems.

A *hook* is any callable that takes one :class:`~opero.instrumentation.Event`. Register it
with :func:`add_hook` and it receives every event of every opero function in this process,
including the events that process and dask workers send home. Two hooks come ready-made:

- :func:`enable_prometheus` counts calls, retries, cache hits and misses, rate-limit waits,
  latency and calls in flight in a ``prometheus_client`` registry;
- :func:`enable_opentelemetry` opens a span per call, with an event per retry and the
  number of attempts as an attribute.

Example:
    >>> from opero import opero
    >>> from opero.instrumentation import add_hook, remove_hook
    >>> seen = []
    >>> hook = add_hook(lambda event: seen.append(event.kind), kinds={"success"})
    >>> @opero
    ... def ping() -> str:
    ...     return "pong"
    >>> ping()
    'pong'
    >>> seen
    ['success']
    >>> remove_hook(hook)
    True

A hook runs in the thread that produced the event, so it must be quick; an exception it
raises is logged and swallowed (it never breaks the user's call). New event kinds may be
added in later versions: ignore kinds you do not know.
"""

from __future__ import annotations

from .._telemetry import Event
from ._hooks import Hook, add_hook, hooks, remove_hook
from ._otel import OpenTelemetryHook, enable_opentelemetry
from ._prometheus import PrometheusHook, enable_prometheus

__all__ = [
    "Event",
    "Hook",
    "OpenTelemetryHook",
    "PrometheusHook",
    "add_hook",
    "enable_opentelemetry",
    "enable_prometheus",
    "hooks",
    "remove_hook",
]
