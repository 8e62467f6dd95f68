"""Instrumentation hooks against the real packages: prometheus-client and the OpenTelemetry SDK.

Metrics are read back from a private ``CollectorRegistry``; spans from the SDK's
``InMemorySpanExporter``. Process and dask maps run in real worker processes, whose events
travel home and reach the hooks in this process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from opero import AllFailedError, CircuitOpenError, opero, parts
from opero.instrumentation import (
    Event,
    OpenTelemetryHook,
    PrometheusHook,
    add_hook,
    enable_opentelemetry,
    enable_prometheus,
    hooks,
    remove_hook,
)
from tests.shared.instrumentation import _finished, _value


def _flaky(failures: int) -> Any:
    """A function failing ``failures`` times with ConnectionError, then returning its calls."""
    n = {"calls": 0}

    @opero(retries=3, min_delay=0.001, jitter=0)
    def flaky() -> int:
        n["calls"] += 1
        if n["calls"] <= failures:
            raise ConnectionError("reset")
        return n["calls"]

    return flaky


# -- the hook interface ----------------------------------------------------------------------


def test_add_hook_gets_every_event_until_removed() -> None:
    """A hook sees each event of a call, in order; remove_hook stops it; kinds filter."""
    got: list[Event] = []
    only_retries: list[str] = []
    add_hook(got.append)
    add_hook(lambda e: only_retries.append(e.kind), kinds={"retry"})
    try:
        assert got.append in hooks()
        flaky = _flaky(1)
        assert flaky() == 2
    finally:
        assert remove_hook(got.append) is True
        for h in hooks():
            remove_hook(h)
    assert [e.kind for e in got] == ["start", "attempt_failed", "retry", "success"]
    assert len({e.call for e in got}) == 1 and got[0].call is not None
    assert got[2].error_type == "ConnectionError" and got[-1].duration is not None
    assert only_retries == ["retry"]
    flaky()
    assert len(got) == 4  # removed: nothing more
    assert remove_hook(got.append) is False


def test_a_failing_hook_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged once per event and the call still returns."""

    @add_hook
    def broken(event: Event) -> None:
        raise RuntimeError("hook bug")

    try:

        @opero
        def ok() -> int:
            return 7

        with caplog.at_level(logging.ERROR, logger="opero"):
            assert ok() == 7
    finally:
        remove_hook(broken)
    assert sum("event listener" in r.getMessage() for r in caplog.records) == 2  # start, success


def test_unknown_event_kinds_flow_through(registry: CollectorRegistry, spans: Any) -> None:
    """A kind this version does not know (a breaker state change) reaches hooks and both exporters."""
    exporter, _ = spans
    got: list[tuple[str, str | None]] = []
    hook = add_hook(lambda e: got.append((e.kind, e.state)))

    @opero
    def guarded() -> None:
        pass

    recorder = parts(guarded).recorder
    try:
        recorder.emit("breaker", state="open")
        recorder.emit("breaker", state="half_open")
        recorder.emit("quota_exhausted")
        recorder.emit("rate", rate=2.5)
    finally:
        remove_hook(hook)
    assert got == [("breaker", "open"), ("breaker", "half_open"), ("quota_exhausted", None), ("rate", None)]
    name = guarded.stats.name
    assert _value(registry, "opero_events_total", function=name, event="breaker") == 2
    assert _value(registry, "opero_events_total", function=name, event="quota_exhausted") == 1
    assert _value(registry, "opero_breaker_state", function=name, state="half_open") == 1
    assert _value(registry, "opero_breaker_state", function=name, state="open") == 0
    assert _value(registry, "opero_rate_limit", function=name) == 2.5
    standalone = [s.name for s in exporter.get_finished_spans()]
    assert standalone == [f"{name} breaker", f"{name} breaker", f"{name} quota_exhausted", f"{name} rate"]
    assert exporter.get_finished_spans()[-1].attributes["opero.rate"] == 2.5  # type: ignore[index]


# -- Prometheus ------------------------------------------------------------------------------


def test_prometheus_counts_calls_retries_cache_and_latency(registry: CollectorRegistry) -> None:
    """calls, retries by error type, cache hits/misses, latency histogram, read from the registry."""
    flaky = _flaky(2)
    assert flaky() == 3
    name = flaky.stats.name
    assert _value(registry, "opero_calls_total", function=name, outcome="success") == 1
    assert _value(registry, "opero_retries_total", function=name, error_type="ConnectionError") == 2
    assert _value(registry, "opero_call_duration_seconds_count", function=name) == 1
    assert _value(registry, "opero_call_duration_seconds_sum", function=name) > 0

    @opero(cache=True, retries=0)
    def square(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * x

    for x in (2, 2, 3, 2):
        square(x)
    with pytest.raises(AllFailedError):
        square(-1)
    sq = square.stats.name
    assert _value(registry, "opero_cache_hits_total", function=sq) == 2
    assert _value(registry, "opero_cache_misses_total", function=sq) == 3
    assert _value(registry, "opero_calls_total", function=sq, outcome="success") == 4
    assert _value(registry, "opero_calls_total", function=sq, outcome="failure") == 1
    assert _value(registry, "opero_call_duration_seconds_count", function=sq) == 5


def test_prometheus_rate_wait_seconds_and_in_flight(registry: CollectorRegistry) -> None:
    """Rate-wait seconds add up to the stats; the in-flight gauge is 2 while two calls run."""
    inside = threading.Barrier(3)
    leave = threading.Event()

    @opero(rate_limit=20)
    def slow(x: int) -> int:
        if x < 2:
            inside.wait(timeout=30)
            leave.wait(timeout=30)
        return x

    name = slow.stats.name
    threads = [threading.Thread(target=slow, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    inside.wait(timeout=30)
    assert _value(registry, "opero_in_flight", function=name) == 2
    leave.set()
    for t in threads:
        t.join()
    for x in range(2, 6):
        slow(x)
    assert _value(registry, "opero_in_flight", function=name) == 0
    waits = _value(registry, "opero_rate_waits_total", function=name)
    seconds = _value(registry, "opero_rate_wait_seconds_total", function=name)
    assert waits == slow.stats.rate_waits >= 3
    assert seconds == pytest.approx(slow.stats.rate_wait_seconds)
    assert seconds >= 3 * 0.05 * 0.5  # 20/s: ~50 ms between starts


def test_enable_prometheus_twice_is_one_hook() -> None:
    """The same registry gives the same hook (metrics are registered once)."""
    reg = CollectorRegistry()
    first = enable_prometheus(reg)
    try:
        assert enable_prometheus(reg) is first
        assert isinstance(first, PrometheusHook)
        assert hooks().count(first) == 1
    finally:
        remove_hook(first)


def test_a_span_per_call_with_an_event_per_retry(spans: Any) -> None:
    """One span per call; each retry is a span event; attempts is an attribute."""
    exporter, _ = spans
    flaky = _flaky(2)
    assert flaky() == 3
    (span,) = _finished(exporter, flaky.stats.name)
    assert span.attributes is not None
    assert span.attributes["opero.attempts"] == 3
    assert span.attributes["opero.retries"] == 2
    assert span.attributes["opero.outcome"] == "success"
    retries = [e for e in span.events if e.name == "retry"]
    assert [e.attributes["opero.attempt"] for e in retries if e.attributes] == [1, 2]
    assert all(e.attributes and e.attributes["exception.type"] == "ConnectionError" for e in retries)
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time is not None and span.start_time is not None and span.end_time > span.start_time


def test_failed_call_span_has_error_status_and_exception(spans: Any) -> None:
    """A call that fails every attempt ends its span with ERROR and the recorded exception."""
    exporter, _ = spans
    flaky = _flaky(10)
    with pytest.raises(AllFailedError):
        flaky()
    (span,) = _finished(exporter, flaky.stats.name)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["opero.attempts"] == 4
    assert [e.name for e in span.events].count("retry") == 3
    assert any(e.name == "exception" for e in span.events)


def test_the_call_span_is_the_parent_of_spans_opened_inside(spans: Any) -> None:
    """Inside the call, opero's span is current: the function's own spans are its children."""
    exporter, provider = spans
    tracer = provider.get_tracer("user")

    @opero(cache=True)
    def work(x: int) -> int:
        with tracer.start_as_current_span("inner"):
            return x

    work(1)
    work(1)  # a cache hit: a span with 0 attempts and no child
    outer = _finished(exporter, work.stats.name)
    (inner,) = _finished(exporter, "inner")
    assert inner.parent is not None and outer[0].context is not None
    assert inner.parent.span_id == outer[0].context.span_id
    assert [s.attributes["opero.attempts"] for s in outer if s.attributes] == [1, 0]
    assert [s.attributes["opero.cache_hit"] for s in outer if s.attributes] == [False, True]
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached after the calls


def test_async_calls_get_their_own_spans(spans: Any) -> None:
    """Concurrent async calls each get a span (the current span follows each task)."""
    exporter, provider = spans
    tracer = provider.get_tracer("user")

    @opero(retries=1, min_delay=0.001)
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.01)
        with tracer.start_as_current_span(f"inner-{x}"):
            return x

    async def main() -> list[int]:
        return list(await asyncio.gather(*(fetch(i) for i in range(3))))

    assert asyncio.run(main()) == [0, 1, 2]
    outer = {s.context.span_id: s for s in _finished(exporter, fetch.stats.name) if s.context}
    assert len(outer) == 3
    for i in range(3):
        (inner,) = _finished(exporter, f"inner-{i}")
        assert inner.parent is not None and inner.parent.span_id in outer


def test_enable_opentelemetry_returns_a_removable_hook() -> None:
    """enable_opentelemetry returns the hook; remove_hook stops the spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hook = enable_opentelemetry(provider)
    assert isinstance(hook, OpenTelemetryHook)

    @opero
    def f() -> None:
        pass

    f()
    assert remove_hook(hook)
    f()
    assert len(exporter.get_finished_spans()) == 1


def test_a_start_only_listener_leaves_no_call_behind() -> None:
    """Listening to "start" alone: each call gets a new id and nothing accumulates."""
    from opero import _telemetry

    starts: list[int | None] = []
    hook = add_hook(lambda e: starts.append(e.call), kinds={"start"})
    try:

        @opero
        def f() -> None:
            pass

        for _ in range(50):
            f()
    finally:
        remove_hook(hook)
    assert len(starts) == 50 and len(set(starts)) == 50
    assert _telemetry._calls.get() == ()


def test_real_breaker_states_reach_both_hooks(registry: CollectorRegistry, spans: Any) -> None:
    """A circuit breaker opened by real failures: Prometheus shows it open, the span records it."""
    import uuid

    exporter, _ = spans

    @opero(retries=0, circuit_breaker={"failures": 2, "window": 10.0, "open": 30.0})
    def fetch(item: int) -> int:
        raise ConnectionError(f"outage {uuid.uuid4().hex}")

    for i in range(2):
        with pytest.raises(AllFailedError):
            fetch(i)
    with pytest.raises(CircuitOpenError):
        fetch(3)
    name = fetch.stats.name
    assert _value(registry, "opero_breaker_state", function=name, state="open") == 1
    assert _value(registry, "opero_events_total", function=name, event="breaker") == 1
    assert _value(registry, "opero_calls_total", function=name, outcome="failure") == 3
    events = [e for s in exporter.get_finished_spans() for e in s.events if e.name == "breaker"]
    standalone = [s for s in exporter.get_finished_spans() if s.name == f"{name} breaker"]
    assert len(events) + len(standalone) == 1
    attrs = (events[0].attributes if events else standalone[0].attributes) or {}
    assert attrs["opero.state"] == "open"
