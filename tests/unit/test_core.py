"""One call of a decorated function: rounds x candidates, retry_on, errors, timeouts (SPEC §3).

Each behaviour is written once and runs twice through the ``driver`` fixture (tests/shared/core.py):
once on a sync function, once on an ``async def`` one. What only one side can show is at the end:
a sync attempt over its timeout frees the caller (a thread cannot be cancelled), an async one is
cancelled; a backoff does not block the loop; cancelling the awaiting task cancels the attempt.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import threading
import time

import cloudpickle
import pytest

import opero as opero_pkg
from opero import AllFailedError, ConfigurationError, opero
from tests.shared.core import Driver, flaky


def test_success_first_try_calls_once(driver: Driver) -> None:
    """A call that succeeds at once runs the function exactly once."""
    f, calls = flaky(driver, 0)
    assert driver.call(opero(f)) == 1
    assert len(calls) == 1


def test_retries_until_success(driver: Driver) -> None:
    """Failures below the retry budget are absorbed; the result comes back; stats count them."""
    f, calls = flaky(driver, 2)
    wrapped = opero(retries=3, min_delay=0.001, max_delay=0.002)(f)
    assert driver.call(wrapped) == 3
    assert wrapped.stats.retries == 2
    assert wrapped.stats.attempts == 3


def test_retries_zero_means_one_round(driver: Driver) -> None:
    """retries=0 runs one round and raises AllFailedError with one error."""
    f, calls = flaky(driver, 5)
    with pytest.raises(AllFailedError) as info:
        driver.call(opero(retries=0)(f))
    assert len(calls) == 1
    assert len(info.value.errors) == 1


def test_all_failed_error_holds_every_attempt(driver: Driver) -> None:
    """errors holds rounds x candidates in order, __cause__ is the last, str names the function."""
    seen: list[str] = []

    def call(key: list[str]) -> str:
        seen.append(key[0])
        raise ConnectionError(f"bad {key[0]}")

    wrapped = opero(retries=2, min_delay=0.001, max_delay=0.001, arg_fallback="key")(driver.define(call))
    with pytest.raises(AllFailedError) as info:
        driver.call(wrapped, key=["a", "b"])
    err = info.value
    assert seen == ["a", "b", "a", "b", "a", "b"]
    assert [str(e) for e in err.errors] == ["bad a", "bad b"] * 3
    assert err.__cause__ is err.errors[-1]
    assert "call" in str(err) and "6 attempts" in str(err) and "bad b" in str(err)


def test_fallback_candidates_are_suffixes(driver: Driver) -> None:
    """Candidate i receives candidates[i:], same type, so key[0] is the one in use."""
    received: list[object] = []

    def call(key: tuple[str, ...]) -> str:
        received.append(key)
        if key[0] != "c":
            raise ConnectionError(key[0])
        return key[0]

    wrapped = opero(retries=0, arg_fallback="key")(driver.define(call))
    assert driver.call(wrapped, ("a", "b", "c")) == "c"
    assert received == [("a", "b", "c"), ("b", "c"), ("c",)]
    assert wrapped.stats.fallbacks == 2


def test_fallback_from_parameter_default(driver: Driver) -> None:
    """When the call omits the fallback argument, the parameter's default list is used."""

    def call(url: str, agent: list[str] = ["bot", "browser"]) -> str:  # noqa: B006
        if agent[0] == "bot":
            raise PermissionError("blocked")
        return f"{url}:{agent[0]}"

    assert driver.call(opero(retries=0, arg_fallback="agent")(driver.define(call)), "u") == "u:browser"


def test_fallback_positional_argument(driver: Driver) -> None:
    """A fallback list passed positionally is swapped in at its position."""

    def call(x: int, keys: list[str]) -> str:
        if keys[0] == "bad":
            raise ConnectionError
        return f"{x}{keys[0]}"

    assert (
        driver.call(opero(retries=0, arg_fallback="keys")(driver.define(call)), 1, ["bad", "good"]) == "1good"
    )


@pytest.mark.parametrize("value", [None, "abc", [], 5])
def test_fallback_value_not_a_list_means_no_fallback(driver: Driver, value: object) -> None:
    """None, non-lists and empty lists are passed unchanged with a single candidate."""
    received: list[object] = []

    def call(key: object = None) -> object:
        received.append(key)
        return key

    assert driver.call(opero(retries=0, arg_fallback="key")(driver.define(call)), key=value) == value
    assert received == [value]


def test_non_retryable_error_propagates_unchanged_at_once(driver: Driver) -> None:
    """An error retry_on rejects is raised as itself, with no further attempt or candidate."""
    calls: list[str] = []
    boom = KeyError("nope")

    def call(key: list[str]) -> None:
        calls.append(key[0])
        raise boom

    wrapped = opero(retries=5, retry_on=ConnectionError, arg_fallback="key")(driver.define(call))
    with pytest.raises(KeyError) as info:
        driver.call(wrapped, ["a", "b"])
    assert info.value is boom
    assert calls == ["a"]


def test_non_retryable_after_retryable(driver: Driver) -> None:
    """A non-retryable error on a later attempt also stops everything at once."""
    errors = [ConnectionError("net"), ValueError("data")]
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise errors[len(calls) - 1]

    wrapped = opero(retries=5, min_delay=0.001, retry_on=(ConnectionError, TimeoutError))(driver.define(call))
    with pytest.raises(ValueError, match="data"):
        driver.call(wrapped)
    assert len(calls) == 2


def test_retry_on_predicate(driver: Driver) -> None:
    """retry_on may be a predicate exc -> bool."""
    f, calls = flaky(driver, 1, exc=RuntimeError)
    wrapped = opero(retries=1, min_delay=0.001, retry_on=lambda e: "failure" in str(e))(f)
    assert driver.call(wrapped) == 2
    g, gcalls = flaky(driver, 1, exc=RuntimeError)
    with pytest.raises(RuntimeError):
        driver.call(opero(retries=3, retry_on=lambda e: False)(g))
    assert len(gcalls) == 1


def test_backoff_delays_follow_the_formula(driver: Driver) -> None:
    """Delay before round k+1 is min(max_delay, min_delay * factor**(k-1)) without jitter."""
    delays: list[float] = []

    def call() -> None:
        raise ConnectionError

    options = {"min_delay": 0.01, "max_delay": 0.05, "backoff_factor": 3, "jitter": 0}
    wrapped = opero(retries=4, on_retry=lambda e: delays.append(e.delay), **options)(driver.define(call))
    with pytest.raises(AllFailedError):
        driver.call(wrapped)
    assert delays == pytest.approx([0.01, 0.03, 0.05, 0.05])


def test_jitter_adds_a_bounded_fraction(driver: Driver) -> None:
    """Jitter adds up to the given fraction of each delay, never less than the base."""
    delays: list[float] = []

    def call() -> None:
        raise ConnectionError

    options = {"min_delay": 0.01, "max_delay": 0.01, "jitter": 0.5}
    wrapped = opero(retries=3, on_retry=lambda e: delays.append(e.delay), **options)(driver.define(call))
    with pytest.raises(AllFailedError):
        driver.call(wrapped)
    assert len(delays) == 3
    assert all(0.01 <= d <= 0.015 for d in delays)


def test_sleeps_really_happen(driver: Driver) -> None:
    """Backoff sleeps (time.sleep or asyncio.sleep) add up on the wall clock (two rounds of 50 ms)."""
    f, _ = flaky(driver, 2)
    t0 = time.perf_counter()
    assert driver.call(opero(retries=2, min_delay=0.05, max_delay=0.05, jitter=0)(f)) == 3
    assert 0.1 <= time.perf_counter() - t0 < 0.5


def test_timeout_returns_value_when_fast(driver: Driver) -> None:
    """A fast attempt under a timeout returns its value."""

    def fast(x: int) -> int:
        return x + 1

    assert driver.call(opero(timeout=1.0)(driver.define(fast)), 1) == 2


def test_timeout_passes_exceptions_through(driver: Driver) -> None:
    """An error raised inside a timed attempt reaches the caller as itself."""
    boom = KeyError("k")

    def bad() -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        driver.call(opero(timeout=1.0, retry_on=ConnectionError)(driver.define(bad)))
    assert info.value is boom


def test_keyboard_interrupt_is_not_retried(driver: Driver) -> None:
    """BaseExceptions such as KeyboardInterrupt propagate at once."""
    calls: list[int] = []

    def stop() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        driver.call(opero(retries=3)(driver.define(stop)))
    assert calls == [1]


def test_metadata_is_kept(driver: Driver) -> None:
    """Name, docstring, signature, __wrapped__ and being a coroutine function (or not) survive."""

    def body(a: int, b: str = "x") -> str:
        """Doc."""
        return f"{a}{b}"

    original = driver.define(body)
    wrapped = opero(retries=1)(original)
    assert wrapped.__name__ == "body"
    assert wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is original
    assert str(inspect.signature(wrapped)) == "(a: 'int', b: 'str' = 'x') -> 'str'"
    assert inspect.iscoroutinefunction(wrapped) is driver.is_async
    assert driver.call(wrapped, 1) == "1x"


def test_bare_and_called_forms(driver: Driver) -> None:
    """@opero and @opero() both work."""
    a = opero(driver.define(lambda: 1))
    b = opero()(driver.define(lambda: 2))
    assert (driver.call(a), driver.call(b)) == (1, 2)


def test_methods_classmethods_staticmethods(driver: Driver) -> None:
    """Instance, class and static methods keep working, whichever order with the builtins."""

    def get(self: Client, x: int) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError
        return self.base + x

    class Client:
        base = 10

        def __init__(self) -> None:
            self.calls = 0

        get_ = opero(retries=2, min_delay=0.001)(driver.define(get))
        make = opero(classmethod(driver.define(lambda cls, x: cls.base * x)))
        make2 = classmethod(opero(driver.define(lambda cls, x: cls.base * x + 1)))
        plain = opero(staticmethod(driver.define(lambda x: -x)))

    c = Client()
    assert driver.call(c.get_, 1) == 11
    assert c.calls == 2
    assert driver.call(Client.make, 2) == 20
    assert driver.call(Client.make2, 2) == 21
    assert driver.call(Client.plain, 3) == -3
    assert driver.call(c.plain, 3) == -3
    assert c.get_.stats.retries == 1


def test_method_with_fallback_cache_and_rate_limit(driver: Driver) -> None:
    """The seed's MockAPIClient shape: a method with fallback, cache and rate limit."""

    def fetch(self: Client, endpoint: str, api_key: list[str]) -> dict[str, str]:
        self.calls += 1
        if api_key[0] == "bad":
            raise ConnectionError("bad key")
        return {"endpoint": endpoint, "key": api_key[0]}

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        fetch_ = opero(retries=3, cache=True, cache_ttl=60, rate_limit=50.0, arg_fallback="api_key")(
            driver.define(fetch)
        )

    c = Client()
    out = driver.call(c.fetch_, "e", api_key=["bad", "good"])
    assert out == {"endpoint": "e", "key": "good"}
    assert driver.call(c.fetch_, "e", api_key=["bad", "good"]) == out
    assert c.calls == 2
    other = Client()
    driver.call(other.fetch_, "e", api_key=["good"])
    assert other.calls == 1  # self is part of the key: another instance misses


def test_cache_hit_skips_call(driver: Driver) -> None:
    """A cached result is returned without running the function; stats count hits."""
    calls: list[int] = []

    def body(x: int) -> int:
        calls.append(x)
        return x

    get = opero(cache=True)(driver.define(body))
    assert [driver.call(get, 1), driver.call(get, 1), driver.call(get, 2)] == [1, 1, 2]
    assert calls == [1, 2]
    assert (get.stats.cache_hits, get.stats.cache_misses) == (1, 2)
    get.cache_clear()
    assert driver.call(get, 1) == 1
    assert calls == [1, 2, 1]


def test_failures_are_not_cached(driver: Driver) -> None:
    """A call that failed stores nothing: the next call runs the function again."""
    f, calls = flaky(driver, 1)
    wrapped = opero(retries=0, cache=True)(f)
    with pytest.raises(AllFailedError):
        driver.call(wrapped)
    assert driver.call(wrapped) == 2
    assert driver.call(wrapped) == 2
    assert len(calls) == 2


def test_rate_limit_spaces_attempts(driver: Driver) -> None:
    """rate_limit=20: 4 calls take >= 3 intervals, and waits are counted."""
    hit = opero(rate_limit=20)(driver.define(time.monotonic))
    began = time.monotonic()
    stamps = [driver.call(hit) for _ in range(4)]
    # Grants are >= 1/r apart and the first is after `began` (exact spacing: test_limit_*.py).
    assert 0.15 <= stamps[-1] - began < 0.45 + 0.1
    assert hit.stats.rate_waits >= 1


def test_callbacks_receive_events(driver: Driver) -> None:
    """on_retry, on_success, on_failure and on_cache_hit get Event records."""
    events: list[tuple[str, str]] = []

    def cb(e: object) -> None:
        events.append((e.kind, e.func.rsplit(".", 1)[-1]))  # type: ignore[attr-defined]

    f, _ = flaky(driver, 1)
    f.__qualname__ = "f"
    w = opero(retries=1, min_delay=0.001, cache=True, on_retry=cb, on_success=cb, on_cache_hit=cb)(f)
    driver.call(w)
    driver.call(w)
    assert events == [("retry", "f"), ("success", "f"), ("cache_hit", "f"), ("success", "f")]
    fails: list[str] = []
    g = opero(retries=0, on_failure=lambda e: fails.append(type(e.error).__name__))(flaky(driver, 9)[0])
    with pytest.raises(AllFailedError):
        driver.call(g)
    assert fails == ["AllFailedError"]


def test_broken_callback_does_not_break_the_call(driver: Driver) -> None:
    """An exception inside a callback is logged, not raised into the user's call."""
    ok = opero(on_success=lambda e: 1 / 0)(driver.define(lambda: 7))
    assert driver.call(ok) == 7


@pytest.mark.parametrize(("typo", "meant"), [("retires", "retries"), ("timout", "timeout")])
def test_unknown_option_names_closest(typo: str, meant: str) -> None:
    """A typo raises ConfigurationError with a did-you-mean hint at decoration time."""
    with pytest.raises(ConfigurationError, match=f"did you mean '{meant}'"):
        opero(**{typo: 3})


def test_map_only_options_accepted_and_ignored(driver: Driver) -> None:
    """@opero accepts opmap's options (its mode included) so one config dict can feed both."""
    options = {"mode": driver.mode, "workers": 4, "ordered": False, "progress": False, "chunksize": 10}
    assert driver.call(opero(**options)(driver.define(lambda x: x)), 3) == 3


def test_testing_mode_skips_sleeps(driver: Driver) -> None:
    """Inside opero.testing() long backoffs do not sleep; outside they do again."""
    f, _ = flaky(driver, 3)
    w = opero(retries=3, min_delay=5, max_delay=5)(f)
    t0 = time.perf_counter()
    with opero_pkg.testing():
        assert driver.call(w) == 4
    assert time.perf_counter() - t0 < 1.0
    g, _ = flaky(driver, 1)
    t0 = time.perf_counter()
    assert driver.call(opero(retries=1, min_delay=0.05, max_delay=0.05, jitter=0)(g)) == 2
    assert time.perf_counter() - t0 >= 0.05


def test_unpickled_function_stats_are_live(driver: Driver) -> None:
    """Unpickled by value, fn.stats and fn.cache_clear are those of the plan rebuilt there."""
    f = driver.define(lambda x: x)
    f.__module__ = "__main__"  # functions of __main__ and notebooks travel by value
    g = pickle.loads(cloudpickle.dumps(opero(cache=True)(f)))
    assert [driver.call(g, 1), driver.call(g, 1)] == [1, 1]
    assert (g.stats.calls, g.stats.cache_hits) == (2, 1)
    g.cache_clear()
    assert driver.call(g, 1) == 1
    assert (g.stats.calls, g.stats.cache_hits, g.stats.cache_misses) == (3, 1, 2)


# -- what only one side can show ------------------------------------------------------------


def test_timeout_per_attempt_frees_the_caller() -> None:
    """A sync attempt over timeout fails with TimeoutError within the bound; the caller is freed."""
    release = threading.Event()

    @opero(retries=1, timeout=0.05, min_delay=0.001)
    def slow() -> None:
        release.wait(2)

    t0 = time.perf_counter()
    with pytest.raises(AllFailedError) as info:
        slow()
    elapsed = time.perf_counter() - t0
    release.set()
    assert [type(e) for e in info.value.errors] == [TimeoutError, TimeoutError]
    assert "timeout=0.05" in str(info.value.errors[0])
    assert elapsed < 0.6
    assert slow.stats.timeouts == 2


@pytest.mark.asyncio
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


@pytest.mark.asyncio
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


@pytest.mark.asyncio
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
