"""The lock-free fast paths of a call (plain happy path, memory-cache hit) keep the contract.

Calls after the first 16 whose latency is not sampled skip the general driver; these tests
make sure such calls still count exactly, honour listeners, typed keys, TTL, testing mode
and limiters, and that sampled latency stays meaningful.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import opero as opero_pkg
from opero import opero
from opero._telemetry import _SAMPLE_ALL, _SAMPLE_EVERY, subscribe
from tests._helpers import run_threads

MANY = 200  # well past the first _SAMPLE_ALL calls, so most calls take the fast path


def test_counters_exact_across_threads_plain_and_hits() -> None:
    """8 threads x 2,000 calls of a plain and a cached function: every counter exact."""

    @opero(retries=3)
    def plain(x: int) -> int:
        return x

    @opero(cache=True)
    def cached(x: int) -> int:
        return x

    cached(1)  # the one miss

    def run() -> None:
        for i in range(2000):
            assert plain(i) == i
            assert cached(1) == 1

    run_threads(8, run)
    p = plain.stats.as_dict()
    assert (p["calls"], p["successes"], p["failures"], p["attempts"], p["in_flight"]) == (
        16000,
        16000,
        0,
        16000,
        0,
    )
    c = cached.stats.as_dict()
    assert (c["calls"], c["successes"], c["cache_hits"], c["cache_misses"]) == (16001, 16001, 16000, 1)
    assert (c["attempts"], c["in_flight"]) == (1, 0)


def test_in_flight_counts_a_running_fast_call() -> None:
    """A plain call in progress shows in ``in_flight`` even when it takes the fast path."""
    inside, release = threading.Event(), threading.Event()

    @opero
    def f(block: bool) -> None:
        if block:
            inside.set()
            release.wait(5)

    for _ in range(MANY):
        f(False)
    t = threading.Thread(target=f, args=(True,))
    t.start()
    assert inside.wait(5)
    assert f.stats.in_flight == 1
    release.set()
    t.join()
    assert f.stats.in_flight == 0
    assert f.stats.calls == MANY + 1


def test_reset_zeroes_lock_free_counters() -> None:
    """``stats.reset()`` zeroes calls/successes/attempts/hits although they are counters."""

    @opero(cache=True)
    def f(x: int) -> int:
        return x

    for _ in range(MANY):
        f(1)
    f.stats.reset()
    assert (f.stats.calls, f.stats.successes, f.stats.cache_hits, f.stats.attempts) == (0, 0, 0, 0)
    f(1)
    f(2)
    assert (f.stats.calls, f.stats.successes, f.stats.cache_hits, f.stats.attempts) == (2, 2, 1, 1)


def test_late_listeners_see_every_fast_call(caplog: pytest.LogCaptureFixture) -> None:
    """A subscriber or a log level set after many calls gets the events of the next calls."""

    @opero(cache=True)
    def f(x: int) -> int:
        return x

    for _ in range(MANY):
        f(1)
    seen: list[str] = []
    unsubscribe = subscribe(lambda e: seen.append(e.kind), kinds={"cache_hit", "success"})
    try:
        for _ in range(_SAMPLE_EVERY * 2):
            f(1)
    finally:
        unsubscribe()
    assert seen.count("cache_hit") == seen.count("success") == _SAMPLE_EVERY * 2

    logger = opero_pkg.configure_logging(level=logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="opero"):
            for _ in range(_SAMPLE_EVERY * 2):
                f(1)
        hits = [r for r in caplog.records if "cache hit" in r.getMessage()]
        assert len(hits) == _SAMPLE_EVERY * 2
    finally:
        logger.setLevel(logging.NOTSET)


def test_success_logged_at_debug_on_plain_path(caplog: pytest.LogCaptureFixture) -> None:
    """After many quiet calls, turning DEBUG on logs a success line for each next call."""

    @opero
    def f() -> int:
        return 1

    for _ in range(MANY):
        f()
    with caplog.at_level(logging.DEBUG, logger="opero"):
        for _ in range(_SAMPLE_EVERY + 3):
            f()
    assert sum("succeeded" in r.getMessage() for r in caplog.records) == _SAMPLE_EVERY + 3


def test_typed_keys_and_keyword_calls_on_the_fast_path() -> None:
    """f(1), f(1.0), f(True) stay three entries; f(x=1) shares f(1)'s entry."""
    calls: list[object] = []

    @opero(cache=True)
    def f(x: object) -> str:
        calls.append(x)
        return type(x).__name__

    for _ in range(MANY):
        assert (f(1), f(1.0), f(True)) == ("int", "float", "bool")
    assert f(x=1) == "int"
    assert calls == [1, 1.0, True]

    @opero(cache=True)
    def g(a: object, b: object = 0) -> tuple[object, object]:
        calls.append((a, b))
        return (a, b)

    for _ in range(MANY):
        assert g(1, 2) == (1, 2)
        assert g(1) == (1, 0)
        assert g(1, b=0) == (1, 0)
    assert calls[3:] == [(1, 2), (1, 0)]


def test_unhashable_arguments_after_many_calls() -> None:
    """A list argument past the first calls is hashed by content, not an error."""
    calls: list[object] = []

    @opero(cache=True)
    def f(x: object) -> int:
        calls.append(x)
        return len(x)  # type: ignore[arg-type]

    for _ in range(MANY):
        assert f([1, 2]) == 2
    assert calls == [[1, 2]]


def test_ttl_expires_on_the_fast_path() -> None:
    """An expired entry is a miss even when the hit would take the fast path."""
    calls: list[int] = []

    @opero(cache=True, cache_ttl=0.2)
    def f(x: int) -> int:
        calls.append(x)
        return x

    for _ in range(MANY):
        f(1)
    time.sleep(0.3)
    f(1)
    assert calls == [1, 1]


def test_testing_without_cache_bypasses_fast_hits() -> None:
    """``opero.testing(cache=False)`` turns hits off also for fast-path calls."""
    calls: list[int] = []

    @opero(cache=True)
    def f(x: int) -> int:
        calls.append(x)
        return x

    for _ in range(MANY):
        f(1)
    with opero_pkg.testing(cache=False):
        for _ in range(_SAMPLE_EVERY * 2):
            f(1)
    assert len(calls) == 1 + _SAMPLE_EVERY * 2


def test_limiter_set_later_disables_plain_fast_path() -> None:
    """A plan whose limiter is swapped in after construction (workers do) takes tokens."""
    from opero._limit import Limiter
    from opero._options import Options
    from opero.stores.host import limiter_store

    @opero
    def f() -> int:
        return 1

    plan = f._opero_plan  # type: ignore[attr-defined]
    for _ in range(MANY):
        f()
    assert plan._fast == "plain"
    limiter = Limiter(
        "test-fast-late", 1000.0, 1, limiter_store(Options(rate_limit=1000.0), "tfl", scoped=False)
    )
    plan.limiter = limiter
    assert plan._fast is None
    for _ in range(MANY):
        f()
    plan.limiter = None
    assert plan._fast == "plain"


def test_failures_and_retries_after_many_fast_calls() -> None:
    """A failing call on the fast path still retries, falls back and counts exactly."""
    state = {"fail": 0}

    @opero(retries=2, min_delay=0, max_delay=0, jitter=0)
    def f() -> int:
        if state["fail"]:
            state["fail"] -= 1
            raise ConnectionError("flaky")
        return 1

    for _ in range(MANY):
        f()
    state["fail"] = 2
    for _ in range(_SAMPLE_EVERY):  # whichever of these calls meets the failures
        assert f() == 1
    s = f.stats.as_dict()
    n = MANY + _SAMPLE_EVERY
    assert (s["calls"], s["successes"], s["failures"], s["attempts"], s["retries"]) == (n, n, 0, n + 2, 2)

    @opero(retries=0)
    def boom() -> None:
        raise KeyboardInterrupt

    for _ in range(MANY // 10):
        with pytest.raises(KeyboardInterrupt):
            boom()
    assert (boom.stats.failures, boom.stats.in_flight) == (MANY // 10, 0)


def test_async_fast_paths_count_exactly() -> None:
    """The async plain and hit paths count like the sync ones."""

    @opero(retries=3)
    async def plain(x: int) -> int:
        await asyncio.sleep(0)
        return x

    @opero(cache=True)
    async def cached(x: int) -> int:
        return x

    async def main() -> None:
        await asyncio.gather(*(plain(i) for i in range(MANY)))
        for _ in range(MANY):
            assert await cached(1) == 1

    asyncio.run(main())
    p, c = plain.stats.as_dict(), cached.stats.as_dict()
    assert (p["calls"], p["successes"], p["attempts"], p["in_flight"]) == (MANY, MANY, MANY, 0)
    assert (c["calls"], c["cache_hits"], c["cache_misses"], c["attempts"]) == (MANY, MANY - 1, 1, 1)


def test_latency_is_sampled_and_meaningful() -> None:
    """Latency: every one of the first calls, then one in 16; p50 reflects the real time."""

    @opero
    def slow() -> None:
        time.sleep(0.002)

    n = _SAMPLE_ALL + 4 * _SAMPLE_EVERY
    for _ in range(n):
        slow()
    s = slow.stats
    assert len(s._latencies) == _SAMPLE_ALL + 4  # calls 0..15, then 16, 32, 48 and 64
    d = s.as_dict()
    assert 0.002 <= d["latency_p50"] < 0.002 * 30
    assert d["throughput"] is not None and d["throughput"] > 0


def test_thread_map_runs_place_failures_exactly() -> None:
    """Tiny items in runs through map(): failing items land at their own index, counted."""
    from opero import AllFailedError, opmap

    flaky: set[int] = {5, 700, 4099}

    def f(x: int) -> int:
        if x % 97 == 3:
            raise ConnectionError(f"bad {x}")  # retryable: AllFailedError after the rounds
        if x % 89 == 4:
            raise TypeError(f"wrong {x}")  # not retryable: the exception itself
        if x in flaky:
            flaky.discard(x)
            raise ConnectionError("once")  # fails once, then succeeds on the retry
        return x + 1

    m = opmap(
        mode="thread",
        workers=2,
        retries=1,
        retry_on=ConnectionError,
        min_delay=0,
        max_delay=0,
        jitter=0,
        progress=False,
    )(f)
    n = 20_000
    out = m(range(n))
    assert len(out) == n
    for x, got in enumerate(out):
        if x % 97 == 3:
            assert isinstance(got, AllFailedError) and str(x) in str(got.errors[0])
        elif x % 89 == 4:
            assert isinstance(got, TypeError) and str(got) == f"wrong {x}"
        else:
            assert got == x + 1, x
    bad = sum(1 for x in range(n) if x % 97 == 3 or x % 89 == 4)
    s = m.stats.as_dict()
    assert (s["calls"], s["failures"], s["successes"], s["in_flight"]) == (n, bad, n - bad, 0)
    streamed = list(m.imap(range(3000)))
    assert [type(v) for v in streamed] == [type(v) for v in out[:3000]]
    assert [v for v in streamed if type(v) is int] == [v for v in out[:3000] if type(v) is int]
    unordered = opmap(mode="thread", workers=2, ordered=False, progress=False)(lambda x: x * 2)
    assert sorted(unordered(range(5000))) == [x * 2 for x in range(5000)]


def test_thread_lanes_are_reused_and_leak_no_context() -> None:
    """Lanes come from a pool of opero-map threads; a context variable set in one map's item
    is not seen by the next map's items."""
    import contextvars

    from opero import opmap

    var: contextvars.ContextVar[int] = contextvars.ContextVar("probe", default=0)

    @opmap(mode="thread", workers=2, progress=False)
    def probe(x: int) -> tuple[str, int]:
        seen = var.get()
        var.set(x + 1)
        time.sleep(0.001)
        return threading.current_thread().name, seen

    probe(range(20))
    second = probe(range(20))
    assert all(name.startswith("opero-map") for name, _ in second)
    # Within one map a lane's items share its context; each lane starts the map afresh, so
    # the first item every lane runs sees the default although the first map set it.
    firsts: dict[str, int] = {}
    for name, seen in second:
        firsts.setdefault(name, seen)
    assert set(firsts.values()) == {0}
