"""One call of an ``async def`` function: the async driver mirrors the sync one (SPEC §3).

Each test here has a twin of the same name in tests/test_core_sync.py; the last section holds
what only an event loop can show (a backoff that does not block the loop).
"""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

import opero as opero_pkg
from opero import AllFailedError, ConfigurationError, opero

pytestmark = pytest.mark.asyncio


def flaky(failures: int, exc: type[Exception] = ConnectionError):
    """An async function failing ``failures`` times, then returning the call count."""
    calls: list[int] = []

    async def f() -> int:
        calls.append(1)
        await asyncio.sleep(0)
        if len(calls) <= failures:
            raise exc(f"failure {len(calls)}")
        return len(calls)

    return f, calls


async def test_success_first_try_calls_once() -> None:
    """A call that succeeds at once runs the coroutine function exactly once."""
    f, calls = flaky(0)
    assert await opero(f)() == 1
    assert len(calls) == 1


async def test_retries_until_success() -> None:
    """Failures below the retry budget are absorbed; the result comes back; stats count them."""
    f, calls = flaky(2)
    wrapped = opero(retries=3, min_delay=0.001, max_delay=0.002)(f)
    assert await wrapped() == 3
    assert wrapped.stats.retries == 2
    assert wrapped.stats.attempts == 3


async def test_retries_zero_means_one_round() -> None:
    """retries=0 runs one round and raises AllFailedError with one error."""
    f, calls = flaky(5)
    with pytest.raises(AllFailedError) as info:
        await opero(retries=0)(f)()
    assert len(calls) == 1
    assert len(info.value.errors) == 1


async def test_all_failed_error_holds_every_attempt() -> None:
    """errors holds rounds x candidates in order, __cause__ is the last, str names the function."""
    seen: list[str] = []

    @opero(retries=2, min_delay=0.001, max_delay=0.001, arg_fallback="key")
    async def call(key: list[str]) -> str:
        seen.append(key[0])
        raise ConnectionError(f"bad {key[0]}")

    with pytest.raises(AllFailedError) as info:
        await call(key=["a", "b"])
    err = info.value
    assert seen == ["a", "b", "a", "b", "a", "b"]
    assert [str(e) for e in err.errors] == ["bad a", "bad b"] * 3
    assert err.__cause__ is err.errors[-1]
    assert "call" in str(err) and "6 attempts" in str(err) and "bad b" in str(err)


async def test_fallback_candidates_are_suffixes() -> None:
    """Candidate i receives candidates[i:], same type, so key[0] is the one in use."""
    received: list[object] = []

    @opero(retries=0, arg_fallback="key")
    async def call(key: tuple[str, ...]) -> str:
        received.append(key)
        if key[0] != "c":
            raise ConnectionError(key[0])
        return key[0]

    assert await call(("a", "b", "c")) == "c"
    assert received == [("a", "b", "c"), ("b", "c"), ("c",)]
    assert call.stats.fallbacks == 2


async def test_fallback_from_parameter_default() -> None:
    """When the call omits the fallback argument, the parameter's default list is used."""

    @opero(retries=0, arg_fallback="agent")
    async def call(url: str, agent: list[str] = ["bot", "browser"]) -> str:  # noqa: B006
        if agent[0] == "bot":
            raise PermissionError("blocked")
        return f"{url}:{agent[0]}"

    assert await call("u") == "u:browser"


async def test_fallback_positional_argument() -> None:
    """A fallback list passed positionally is swapped in at its position."""

    @opero(retries=0, arg_fallback="keys")
    async def call(x: int, keys: list[str]) -> str:
        if keys[0] == "bad":
            raise ConnectionError
        return f"{x}{keys[0]}"

    assert await call(1, ["bad", "good"]) == "1good"


@pytest.mark.parametrize("value", [None, "abc", [], 5])
async def test_fallback_value_not_a_list_means_no_fallback(value: object) -> None:
    """None, non-lists and empty lists are passed unchanged with a single candidate."""
    received: list[object] = []

    @opero(retries=0, arg_fallback="key")
    async def call(key: object = None) -> object:
        received.append(key)
        return key

    assert await call(key=value) == value
    assert received == [value]


async def test_non_retryable_error_propagates_unchanged_at_once() -> None:
    """An error retry_on rejects is raised as itself, with no further attempt or candidate."""
    calls: list[str] = []
    boom = KeyError("nope")

    @opero(retries=5, retry_on=ConnectionError, arg_fallback="key")
    async def call(key: list[str]) -> None:
        calls.append(key[0])
        raise boom

    with pytest.raises(KeyError) as info:
        await call(["a", "b"])
    assert info.value is boom
    assert calls == ["a"]


async def test_non_retryable_after_retryable() -> None:
    """A non-retryable error on a later attempt also stops everything at once."""
    errors = [ConnectionError("net"), ValueError("data")]
    calls: list[int] = []

    @opero(retries=5, min_delay=0.001, retry_on=(ConnectionError, TimeoutError))
    async def call() -> None:
        calls.append(1)
        raise errors[len(calls) - 1]

    with pytest.raises(ValueError, match="data"):
        await call()
    assert len(calls) == 2


async def test_retry_on_predicate() -> None:
    """retry_on may be a predicate exc -> bool."""
    f, calls = flaky(1, exc=RuntimeError)
    wrapped = opero(retries=1, min_delay=0.001, retry_on=lambda e: "failure" in str(e))(f)
    assert await wrapped() == 2
    g, gcalls = flaky(1, exc=RuntimeError)
    with pytest.raises(RuntimeError):
        await opero(retries=3, retry_on=lambda e: False)(g)()
    assert len(gcalls) == 1


async def test_backoff_delays_follow_the_formula() -> None:
    """Delay before round k+1 is min(max_delay, min_delay * factor**(k-1)) without jitter."""
    delays: list[float] = []

    @opero(
        retries=4,
        min_delay=0.01,
        max_delay=0.05,
        backoff_factor=3,
        jitter=0,
        on_retry=lambda e: delays.append(e.delay),
    )
    async def call() -> None:
        raise ConnectionError

    with pytest.raises(AllFailedError):
        await call()
    assert delays == pytest.approx([0.01, 0.03, 0.05, 0.05])


async def test_jitter_adds_a_bounded_fraction() -> None:
    """Jitter adds up to the given fraction of each delay, never less than the base."""
    delays: list[float] = []

    @opero(retries=3, min_delay=0.01, max_delay=0.01, jitter=0.5, on_retry=lambda e: delays.append(e.delay))
    async def call() -> None:
        raise ConnectionError

    with pytest.raises(AllFailedError):
        await call()
    assert len(delays) == 3
    assert all(0.01 <= d <= 0.015 for d in delays)


async def test_sleeps_really_happen() -> None:
    """Backoff sleeps (asyncio.sleep) add up on the wall clock (two rounds of 50 ms)."""
    f, _ = flaky(2)
    t0 = time.perf_counter()
    assert await opero(retries=2, min_delay=0.05, max_delay=0.05, jitter=0)(f)() == 3
    assert 0.1 <= time.perf_counter() - t0 < 0.5


async def test_timeout_per_attempt_really_cancels() -> None:
    """Each timed-out attempt is cancelled (its finally runs), fails with TimeoutError, is counted."""
    cancelled: list[bool] = []

    @opero(retries=1, timeout=0.05, min_delay=0.001)
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    t0 = time.perf_counter()
    with pytest.raises(AllFailedError) as info:
        await slow()
    elapsed = time.perf_counter() - t0
    assert [type(e) for e in info.value.errors] == [TimeoutError, TimeoutError]
    assert "timeout=0.05" in str(info.value.errors[0])
    assert cancelled == [True, True]  # nothing keeps running after the call returned
    assert elapsed < 0.6
    assert slow.stats.timeouts == 2


async def test_timeout_returns_value_when_fast() -> None:
    """A fast attempt under a timeout returns its value."""

    @opero(timeout=1.0)
    async def fast(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert await fast(1) == 2


async def test_timeout_passes_exceptions_through() -> None:
    """An error raised inside a timed attempt reaches the caller as itself."""
    boom = KeyError("k")

    @opero(timeout=1.0, retry_on=ConnectionError)
    async def bad() -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        await bad()
    assert info.value is boom


async def test_keyboard_interrupt_is_not_retried() -> None:
    """BaseExceptions such as KeyboardInterrupt propagate at once."""
    calls: list[int] = []

    @opero(retries=3)
    async def stop() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await stop()
    assert calls == [1]


async def test_metadata_is_kept() -> None:
    """Name, docstring, signature, __wrapped__ and being a coroutine function survive."""

    async def original(a: int, b: str = "x") -> str:
        """Doc."""
        return f"{a}{b}"

    wrapped = opero(retries=1)(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is original
    assert str(inspect.signature(wrapped)) == "(a: 'int', b: 'str' = 'x') -> 'str'"
    assert inspect.iscoroutinefunction(wrapped)
    assert await wrapped(1) == "1x"


async def test_bare_and_called_forms() -> None:
    """@opero and @opero() both work on async functions."""

    @opero
    async def a() -> int:
        return 1

    @opero()
    async def b() -> int:
        return 2

    assert (await a(), await b()) == (1, 2)


async def test_methods_classmethods_staticmethods() -> None:
    """Async instance, class and static methods keep working, whichever order with the builtins."""

    class Client:
        base = 10

        def __init__(self) -> None:
            self.calls = 0

        @opero(retries=2, min_delay=0.001)
        async def get(self, x: int) -> int:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError
            return self.base + x

        @opero
        @classmethod
        async def make(cls, x: int) -> int:
            return cls.base * x

        @classmethod
        @opero
        async def make2(cls, x: int) -> int:
            return cls.base * x + 1

        @opero
        @staticmethod
        async def plain(x: int) -> int:
            return -x

    c = Client()
    assert await c.get(1) == 11
    assert c.calls == 2
    assert await Client.make(2) == 20
    assert await Client.make2(2) == 21
    assert await Client.plain(3) == -3
    assert await c.plain(3) == -3
    assert c.get.stats.retries == 1


async def test_method_with_fallback_cache_and_rate_limit() -> None:
    """The seed's MockAPIClient shape: an async method with fallback, cache and rate limit."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @opero(retries=3, cache=True, cache_ttl=60, rate_limit=50.0, arg_fallback="api_key")
        async def fetch(self, endpoint: str, api_key: list[str]) -> dict[str, str]:
            self.calls += 1
            if api_key[0] == "bad":
                raise ConnectionError("bad key")
            return {"endpoint": endpoint, "key": api_key[0]}

    c = Client()
    out = await c.fetch("e", api_key=["bad", "good"])
    assert out == {"endpoint": "e", "key": "good"}
    assert await c.fetch("e", api_key=["bad", "good"]) == out
    assert c.calls == 2
    other = Client()
    await other.fetch("e", api_key=["good"])
    assert other.calls == 1  # self is part of the key: another instance misses


async def test_cache_hit_skips_call() -> None:
    """A cached async result is returned without running the function; stats count hits."""
    calls: list[int] = []

    @opero(cache=True)
    async def get(x: int) -> int:
        calls.append(x)
        return x

    assert [await get(1), await get(1), await get(2)] == [1, 1, 2]
    assert calls == [1, 2]
    assert (get.stats.cache_hits, get.stats.cache_misses) == (1, 2)
    get.cache_clear()
    assert await get(1) == 1
    assert calls == [1, 2, 1]


async def test_failures_are_not_cached() -> None:
    """A call that failed stores nothing: the next call runs the function again."""
    f, calls = flaky(1)
    wrapped = opero(retries=0, cache=True)(f)
    with pytest.raises(AllFailedError):
        await wrapped()
    assert await wrapped() == 2
    assert await wrapped() == 2
    assert len(calls) == 2


async def test_rate_limit_spaces_attempts() -> None:
    """rate_limit=20 on an async function: 4 calls take >= 3 intervals, and waits are counted."""

    @opero(rate_limit=20)
    async def hit() -> float:
        return time.monotonic()

    began = time.monotonic()
    stamps = [await hit() for _ in range(4)]
    # Grants are >= 1/r apart and the first is after `began` (exact spacing: test_limit_*.py).
    assert 0.15 <= stamps[-1] - began < 0.45 + 0.1
    assert hit.stats.rate_waits >= 1


async def test_callbacks_receive_events() -> None:
    """on_retry, on_success, on_failure and on_cache_hit get Event records."""
    events: list[tuple[str, str]] = []

    def cb(e: object) -> None:
        events.append((e.kind, e.func.rsplit(".", 1)[-1]))  # type: ignore[attr-defined]

    f, _ = flaky(1)
    f.__qualname__ = "f"
    w = opero(retries=1, min_delay=0.001, cache=True, on_retry=cb, on_success=cb, on_cache_hit=cb)(f)
    await w()
    await w()
    assert events == [("retry", "f"), ("success", "f"), ("cache_hit", "f"), ("success", "f")]
    fails: list[str] = []
    g = opero(retries=0, on_failure=lambda e: fails.append(type(e.error).__name__))(flaky(9)[0])
    with pytest.raises(AllFailedError):
        await g()
    assert fails == ["AllFailedError"]


async def test_broken_callback_does_not_break_the_call() -> None:
    """An exception inside a callback is logged, not raised into the user's call."""

    @opero(on_success=lambda e: 1 / 0)
    async def ok() -> int:
        return 7

    assert await ok() == 7


async def test_unknown_option_names_closest() -> None:
    """A typo raises ConfigurationError with a did-you-mean hint, before any async function."""
    with pytest.raises(ConfigurationError, match="did you mean 'timeout'"):
        opero(timout=3)


async def test_map_only_options_accepted_and_ignored() -> None:
    """@opero accepts opmap's options on async functions too."""

    @opero(mode="async", workers=4, ordered=False, progress=False, chunksize=10)
    async def f(x: int) -> int:
        return x

    assert await f(3) == 3


async def test_testing_mode_skips_sleeps() -> None:
    """Inside opero.testing() long async backoffs do not sleep; outside they do again."""
    f, _ = flaky(3)
    w = opero(retries=3, min_delay=5, max_delay=5)(f)
    t0 = time.perf_counter()
    with opero_pkg.testing():
        assert await w() == 4
    assert time.perf_counter() - t0 < 1.0
    g, _ = flaky(1)
    t0 = time.perf_counter()
    assert await opero(retries=1, min_delay=0.05, max_delay=0.05, jitter=0)(g)() == 2
    assert time.perf_counter() - t0 >= 0.05


async def test_decorated_function_pickles_by_value() -> None:
    """A decorated async function travels by value (cloudpickle) to another process and works there."""
    import pickle
    import subprocess
    import sys

    script = (
        "import sys, cloudpickle\n"
        "from opero import opero\n"
        "CALLS = []\n"
        "@opero(retries=2, min_delay=0.001, cache=True, rate_limit=1000)\n"
        "async def f(x):\n"
        "    CALLS.append(x)\n"
        "    return x * 3\n"
        "sys.stdout.buffer.write(cloudpickle.dumps(f))\n"
    )
    blob = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    g = pickle.loads(blob)
    assert inspect.iscoroutinefunction(g)
    assert [await g(2), await g(2), await g(3)] == [6, 6, 9]
    assert g.__wrapped__.__globals__["CALLS"] == [2, 3]  # the second g(2) was a cache hit


async def test_unpickled_function_stats_are_live() -> None:
    """Unpickled by value, fn.stats and fn.cache_clear are those of the plan rebuilt there."""
    import pickle

    import cloudpickle

    async def f(x: int) -> int:
        return x

    f.__module__ = "__main__"  # functions of __main__ and notebooks travel by value
    g = pickle.loads(cloudpickle.dumps(opero(cache=True)(f)))
    assert [await g(1), await g(1)] == [1, 1]
    assert (g.stats.calls, g.stats.cache_hits) == (2, 1)
    g.cache_clear()
    assert await g(1) == 1
    assert (g.stats.calls, g.stats.cache_hits, g.stats.cache_misses) == (3, 1, 2)


# -- only an event loop shows these ---------------------------------------------------------


async def test_backoff_does_not_block_the_loop() -> None:
    """While one call backs off (100 ms), other tasks on the loop keep running."""
    ticks: list[float] = []
    attempts: list[int] = []

    @opero(retries=1, min_delay=0.1, max_delay=0.1, jitter=0)
    async def call() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError
        return "ok"

    async def ticker() -> None:
        while len(attempts) < 2:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    result, _ = await asyncio.gather(call(), ticker())
    assert result == "ok"
    # ~20 ticks in the 100 ms backoff; a blocking sleep would leave the ticker one or two.
    assert len(ticks) >= 5


async def test_cancelling_the_caller_cancels_the_attempt() -> None:
    """Cancelling the task that awaits a decorated call cancels the running attempt, not retried."""
    started = asyncio.Event()
    cancelled: list[bool] = []
    calls: list[int] = []

    @opero(retries=3, min_delay=0.001, retry_on=Exception)
    async def slow() -> None:
        calls.append(1)
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]
    assert calls == [1]  # CancelledError is a BaseException: never an attempt failure
