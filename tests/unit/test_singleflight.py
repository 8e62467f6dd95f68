"""Each distinct call once (single-flight): duplicates in a map, and overlapping plain calls."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from opero import AllFailedError, opero, opmap


def test_imap_over_a_generator_holds_duplicates_within_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """imap of a generator of duplicates never pulls more than its window ahead of the output."""
    import opero._map as map_module

    monkeypatch.setattr(map_module, "_STREAM_WINDOW", 64)
    pulled = itertools.count()
    release = threading.Event()

    def slow(x: int) -> int:
        release.wait(10)
        return x * 2

    def items() -> Iterator[int]:
        for i in range(5000):
            next(pulled)
            yield i // 1000  # 1000 duplicates in a row

    fn = opmap(workers=4, cache=True, progress=False)(slow)
    stream = fn.imap(items())
    threading.Timer(0.3, release.set).start()
    first = next(stream)
    ahead = next(pulled)
    rest = list(stream)
    assert first == 0
    assert ahead <= 64 + 8  # the window, plus the few items taken before the first result
    assert rest == [(i // 1000) * 2 for i in range(1, 5000)]
    assert fn.stats.attempts <= 5 + 5000 // 64  # leaders, plus duplicates run when the window was full


def test_distinct_values_still_run_in_parallel() -> None:
    """Held duplicates take no worker: 64 values of 100 ms on 16 workers take < 2 s (serial: 6.4 s)."""
    items = sorted(i % 64 for i in range(640))
    calls = itertools.count()

    def slow(x: int) -> int:
        next(calls)
        time.sleep(0.1)
        return x

    fn = opmap(workers=16, cache=True, progress=False)(slow)
    t0 = time.perf_counter()
    out = fn(items)
    took = time.perf_counter() - t0
    assert out == items
    assert next(calls) == 64
    assert took < 2.0  # ideal 64 × 0.1 s / 16 = 0.4 s


# -- plain calls ----------------------------------------------------------------------------


def test_overlapping_thread_calls_run_once_and_share_the_value() -> None:
    """8 threads calling one key at once: the function runs once, every thread gets its value."""
    calls = itertools.count()

    @opero(cache=True)
    def slow(x: int) -> list[int]:
        next(calls)
        time.sleep(0.3)
        return [x]

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(slow(7))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert next(calls) == 1
    assert got == [[7]] * 8
    assert slow.stats.calls == 8
    assert slow.stats.attempts == 1
    assert slow.stats.successes == 8


def test_overlapping_tasks_run_once_and_share_a_failure() -> None:
    """8 tasks of one failing key: one call, and all 8 receive its AllFailedError."""
    calls = itertools.count()

    @opero(cache=True, retries=0)
    async def broken(x: int) -> int:
        next(calls)
        await asyncio.sleep(0.2)
        raise ValueError(f"no {x}")

    async def main() -> list[object]:
        return await asyncio.gather(*(broken(1) for _ in range(8)), return_exceptions=True)

    out = asyncio.run(main())
    assert next(calls) == 1
    assert all(isinstance(e, AllFailedError) for e in out)
    assert str(out[0].__cause__) == "no 1"  # type: ignore[union-attr]
    assert broken.stats.failures == 8
    assert broken.stats.attempts == 1


def test_tasks_on_other_loops_follow_a_leader_in_another_thread() -> None:
    """A task on one loop and a thread-bound call share one run across loops."""
    calls = itertools.count()

    @opero(cache=True)
    async def slow(x: int) -> int:
        next(calls)
        await asyncio.sleep(0.3)
        return x + 1

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(asyncio.run(slow(1)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [2] * 4
    assert next(calls) == 1


def test_a_cancelled_leader_hands_the_key_over() -> None:
    """When the leading task is cancelled, a waiting task runs the call itself and gets a value."""
    calls = itertools.count()

    @opero(cache=True)
    async def slow(x: int) -> int:
        next(calls)
        await asyncio.sleep(0.2)
        return x * 3

    async def main() -> int:
        leader = asyncio.ensure_future(slow(2))
        await asyncio.sleep(0.05)
        follower = asyncio.ensure_future(slow(2))
        await asyncio.sleep(0.05)
        leader.cancel()
        return await asyncio.wait_for(follower, 5)

    assert asyncio.run(main()) == 6
    assert next(calls) == 2


def test_a_recursive_call_of_the_same_key_does_not_wait_for_itself() -> None:
    """A function calling itself with the same key runs the inner call instead of deadlocking."""

    @opero(cache=True, cache_key=lambda n, depth: n)
    def nested(n: int, depth: int) -> int:
        return depth if depth >= 2 else nested(n, depth + 1)

    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(nested(5, 0)), daemon=True)
    t.start()
    t.join(5)
    assert done == [2]


def test_later_calls_after_a_failure_call_again() -> None:
    """Sharing ends with the flight: a call after the failed one has finished runs anew."""
    calls = itertools.count()

    @opero(cache=True, retries=0)
    def flaky(x: int) -> int:
        if next(calls) == 0:
            raise ValueError("first")
        return x

    with pytest.raises(AllFailedError):
        flaky(1)
    assert flaky(1) == 1
    assert next(calls) == 2


def test_cache_hits_and_uncached_calls_never_reach_single_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a cache miss claims a key: hits and uncached functions skip single-flight entirely."""
    from opero._singleflight import Flights

    @opero(cache=True)
    def cached(x: int) -> int:
        return x + 1

    @opero
    def plain(x: int) -> int:
        return x - 1

    assert cached(1) == 2  # the miss claims the key once

    def refuse(self: Flights, key: object) -> None:
        raise AssertionError("single-flight reached")

    monkeypatch.setattr(Flights, "enter_sync", refuse)
    assert [cached(1) for _ in range(100)] == [2] * 100
    assert plain(5) == 4
    assert cached.stats.cache_hits == 100
