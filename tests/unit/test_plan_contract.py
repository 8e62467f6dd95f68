"""The two interfaces executors reach a plan through (ItemPlan, RemotePlan), and its one rebuild route."""

from __future__ import annotations

import inspect
import pickle
import time

import pytest

from opero._decisions import Attempt
from opero._options import Options
from opero._policy import ItemPlan, Plan, PlanParts, RemotePlan, rebuild
from opero._telemetry import Event
from opero.stores import MISS


def _double(x: int) -> int:
    return 2 * x


def _members(protocol: type) -> set[str]:
    """The attributes and methods a protocol declares (not those of ``Protocol`` itself)."""
    names = set(inspect.get_annotations(protocol))
    names |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return names


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        (
            ItemPlan,
            {"func", "is_async", "stats", "recorder", "fast_now", "call_sync", "call_async", "rescue_sync"},
        ),
        (RemotePlan, {"recorder", "caching", "parts", "lookup", "store", "resume", "settle", "absorb"}),
    ],
)
def test_each_interface_has_eight_members_that_a_plan_provides(protocol: type, expected: set[str]) -> None:
    """ItemPlan and RemotePlan declare exactly their eight members, and a Plan has every one."""
    assert _members(protocol) == expected
    plan = Plan(_double, Options(), "double")
    assert [name for name in sorted(expected) if not hasattr(plan, name)] == []


def test_parts_hold_the_shared_pieces_and_rebuild_keeps_them() -> None:
    """rebuild(plan.parts()) keeps the parent's limiter, breaker and in_map; its options open none."""
    parent = Plan(_double, Options(rate_limit=50, circuit_breaker=True), "double")
    parent.in_map = True
    parts = parent.parts()
    assert isinstance(parts, PlanParts)
    assert (parts.func, parts.name, parts.in_map) == (_double, "double", True)
    assert parts.limiter is parent.limiter and parts.breaker is parent.breaker
    plan = rebuild(parts)
    assert plan.limiter is parent.limiter and plan.breaker is parent.breaker
    assert plan.in_map is True and plan.options.rate_limit is None
    assert plan.call_sync((4,), {}) == 8


def test_a_pickled_plan_travels_through_rebuild() -> None:
    """Pickling a plan reduces it to rebuild(parts): the copy has the same function, name and options."""
    parent = Plan(_double, Options(retries=2), "double")
    func, args = parent.__reduce__()
    assert func is rebuild and args == (parent.parts(),)
    copy = pickle.loads(pickle.dumps(parent))
    assert (copy.func, copy.name, copy.options.retries) == (_double, "double", 2)
    assert copy.call_sync((5,), {}) == 10


def test_settle_begins_a_call_without_attempts_and_counts_its_end() -> None:
    """settle(attempts=0) counts a whole call (begun and ended); with an error, a failure."""
    plan = Plan(_double, Options(), "double")
    plan.settle(time.perf_counter(), 0)
    plan.settle(time.perf_counter(), 0, ValueError("bad item"))
    stats = plan.stats
    assert (stats.calls, stats.successes, stats.failures, stats.in_flight) == (2, 1, 1, 0)


def test_resume_begins_the_call_and_yields_its_next_attempt() -> None:
    """resume() counts the call as begun and returns its recovery steps; settle(attempts=1) ends it."""
    plan = Plan(_double, Options(retries=1, min_delay=0, max_delay=0, jitter=0), "double")
    began = time.perf_counter()
    steps = plan.resume((3,), {}, ConnectionError("lost with its worker"))
    assert plan.stats.in_flight == 1
    step = next(steps)
    while not isinstance(step, Attempt):
        step = next(steps)
    assert step == Attempt((3,), {})
    steps.close()
    plan.settle(began, 1)
    assert (plan.stats.calls, plan.stats.successes, plan.stats.in_flight) == (1, 1, 0)


def test_absorb_merges_counters_and_replays_events() -> None:
    """absorb() adds a worker's exported counters and hands its events to this plan's listeners."""
    seen: list[str] = []
    plan = Plan(_double, Options(on_retry=lambda info: seen.append("retry")), "double")
    worker = Plan(_double, Options(), "double")
    worker.stats.begin()
    worker.finish(True, time.perf_counter(), 1)
    event = Event("retry", "double", time.time(), attempt=1, error=ValueError("x"), delay=0.0)
    plan.absorb(worker.stats.export(), [event])
    assert (plan.stats.calls, plan.stats.successes) == (1, 1)
    assert seen == ["retry"]


def test_lookup_without_a_cache_misses_and_caching_says_so() -> None:
    """Without a cache, caching is False and lookups miss; with one, a stored value hits."""
    bare = Plan(_double, Options(), "double")
    assert bare.caching is False and bare.lookup((1,), {}) == (None, MISS)
    cached = Plan(_double, Options(cache=True, cache_backend="memory"), "double")
    key, value = cached.lookup((1,), {})
    assert cached.caching is True and key is not None and value is MISS
    cached.store(key, 2)
    assert cached.lookup((1,), {}) == (key, 2)
