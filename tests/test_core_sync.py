"""One call of a sync function: rounds x candidates, retry_on, errors, timeouts (SPEC §3).

Each test here has a twin of the same name in tests/test_core_async.py; the timeout tests
differ in name because a thread cannot be cancelled (the sync caller is freed instead).
"""

from __future__ import annotations

import threading
import time

import pytest

import opero as opero_pkg
from opero import AllFailedError, ConfigurationError, opero


def flaky(failures: int, exc: type[Exception] = ConnectionError):
    """A function failing ``failures`` times, then returning the call count."""
    calls: list[int] = []

    def f() -> int:
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"failure {len(calls)}")
        return len(calls)

    return f, calls


def test_success_first_try_calls_once() -> None:
    """A call that succeeds at once runs the function exactly once."""
    f, calls = flaky(0)
    assert opero(f)() == 1
    assert len(calls) == 1


def test_retries_until_success() -> None:
    """Failures below the retry budget are absorbed; the result comes back."""
    f, calls = flaky(2)
    wrapped = opero(retries=3, min_delay=0.001, max_delay=0.002)(f)
    assert wrapped() == 3
    assert wrapped.stats.retries == 2
    assert wrapped.stats.attempts == 3


def test_retries_zero_means_one_round() -> None:
    """retries=0 runs one round and raises AllFailedError with one error."""
    f, calls = flaky(5)
    with pytest.raises(AllFailedError) as info:
        opero(retries=0)(f)()
    assert len(calls) == 1
    assert len(info.value.errors) == 1


def test_all_failed_error_holds_every_attempt() -> None:
    """errors holds rounds x candidates in order, __cause__ is the last, str names the function."""
    seen: list[str] = []

    @opero(retries=2, min_delay=0.001, max_delay=0.001, arg_fallback="key")
    def call(key: list[str]) -> str:
        seen.append(key[0])
        raise ConnectionError(f"bad {key[0]}")

    with pytest.raises(AllFailedError) as info:
        call(key=["a", "b"])
    err = info.value
    assert seen == ["a", "b", "a", "b", "a", "b"]
    assert [str(e) for e in err.errors] == ["bad a", "bad b"] * 3
    assert err.__cause__ is err.errors[-1]
    assert "call" in str(err) and "6 attempts" in str(err) and "bad b" in str(err)


def test_fallback_candidates_are_suffixes() -> None:
    """Candidate i receives candidates[i:], same type, so key[0] is the one in use."""
    received: list[object] = []

    @opero(retries=0, arg_fallback="key")
    def call(key: tuple[str, ...]) -> str:
        received.append(key)
        if key[0] != "c":
            raise ConnectionError(key[0])
        return key[0]

    assert call(("a", "b", "c")) == "c"
    assert received == [("a", "b", "c"), ("b", "c"), ("c",)]
    assert call.stats.fallbacks == 2


def test_fallback_from_parameter_default() -> None:
    """When the call omits the fallback argument, the parameter's default list is used."""

    @opero(retries=0, arg_fallback="agent")
    def call(url: str, agent: list[str] = ["bot", "browser"]) -> str:  # noqa: B006
        if agent[0] == "bot":
            raise PermissionError("blocked")
        return f"{url}:{agent[0]}"

    assert call("u") == "u:browser"


def test_fallback_positional_argument() -> None:
    """A fallback list passed positionally is swapped in at its position."""

    @opero(retries=0, arg_fallback="keys")
    def call(x: int, keys: list[str]) -> str:
        if keys[0] == "bad":
            raise ConnectionError
        return f"{x}{keys[0]}"

    assert call(1, ["bad", "good"]) == "1good"


@pytest.mark.parametrize("value", [None, "abc", [], 5])
def test_fallback_value_not_a_list_means_no_fallback(value: object) -> None:
    """None, non-lists and empty lists are passed unchanged with a single candidate."""
    received: list[object] = []

    @opero(retries=0, arg_fallback="key")
    def call(key: object = None) -> object:
        received.append(key)
        return key

    assert call(key=value) == value
    assert received == [value]


def test_non_retryable_error_propagates_unchanged_at_once() -> None:
    """An error retry_on rejects is raised as itself, with no further attempt or candidate."""
    calls: list[str] = []
    boom = KeyError("nope")

    @opero(retries=5, retry_on=ConnectionError, arg_fallback="key")
    def call(key: list[str]) -> None:
        calls.append(key[0])
        raise boom

    with pytest.raises(KeyError) as info:
        call(["a", "b"])
    assert info.value is boom
    assert calls == ["a"]


def test_non_retryable_after_retryable() -> None:
    """A non-retryable error on a later attempt also stops everything at once."""
    errors = [ConnectionError("net"), ValueError("data")]
    calls: list[int] = []

    @opero(retries=5, min_delay=0.001, retry_on=(ConnectionError, TimeoutError))
    def call() -> None:
        calls.append(1)
        raise errors[len(calls) - 1]

    with pytest.raises(ValueError, match="data"):
        call()
    assert len(calls) == 2


def test_retry_on_predicate() -> None:
    """retry_on may be a predicate exc -> bool."""
    f, calls = flaky(1, exc=RuntimeError)
    wrapped = opero(retries=1, min_delay=0.001, retry_on=lambda e: "failure" in str(e))(f)
    assert wrapped() == 2
    g, gcalls = flaky(1, exc=RuntimeError)
    with pytest.raises(RuntimeError):
        opero(retries=3, retry_on=lambda e: False)(g)()
    assert len(gcalls) == 1


def test_backoff_delays_follow_the_formula() -> None:
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
    def call() -> None:
        raise ConnectionError

    with pytest.raises(AllFailedError):
        call()
    assert delays == pytest.approx([0.01, 0.03, 0.05, 0.05])


def test_jitter_adds_a_bounded_fraction() -> None:
    """Jitter adds up to the given fraction of each delay, never less than the base."""
    delays: list[float] = []

    @opero(retries=3, min_delay=0.01, max_delay=0.01, jitter=0.5, on_retry=lambda e: delays.append(e.delay))
    def call() -> None:
        raise ConnectionError

    with pytest.raises(AllFailedError):
        call()
    assert len(delays) == 3
    assert all(0.01 <= d <= 0.015 for d in delays)


def test_sleeps_really_happen() -> None:
    """Backoff sleeps add up on the wall clock (two rounds of 50 ms)."""
    f, _ = flaky(2)
    t0 = time.perf_counter()
    opero(retries=2, min_delay=0.05, max_delay=0.05, jitter=0)(f)()
    assert 0.1 <= time.perf_counter() - t0 < 0.5


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


def test_timeout_returns_value_when_fast() -> None:
    """A fast attempt under a timeout returns its value (run in the helper thread)."""

    @opero(timeout=1.0)
    def fast(x: int) -> int:
        return x + 1

    assert fast(1) == 2


def test_timeout_passes_exceptions_through() -> None:
    """An error raised inside a timed attempt reaches the caller as itself."""

    @opero(timeout=1.0, retry_on=ConnectionError)
    def bad() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        bad()


def test_keyboard_interrupt_is_not_retried() -> None:
    """BaseExceptions such as KeyboardInterrupt propagate at once."""
    calls: list[int] = []

    @opero(retries=3)
    def stop() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stop()
    assert calls == [1]


def test_metadata_is_kept() -> None:
    """Name, docstring, signature and __wrapped__ survive decoration."""
    import inspect

    def original(a: int, b: str = "x") -> str:
        """Doc."""
        return f"{a}{b}"

    wrapped = opero(retries=1)(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is original
    assert str(inspect.signature(wrapped)) == "(a: 'int', b: 'str' = 'x') -> 'str'"


def test_bare_and_called_forms() -> None:
    """@opero and @opero() both work."""

    @opero
    def a() -> int:
        return 1

    @opero()
    def b() -> int:
        return 2

    assert (a(), b()) == (1, 2)


def test_methods_classmethods_staticmethods() -> None:
    """Instance, class and static methods keep working, whichever order with the builtins."""

    class Client:
        base = 10

        def __init__(self) -> None:
            self.calls = 0

        @opero(retries=2, min_delay=0.001)
        def get(self, x: int) -> int:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError
            return self.base + x

        @opero
        @classmethod
        def make(cls, x: int) -> int:
            return cls.base * x

        @classmethod
        @opero
        def make2(cls, x: int) -> int:
            return cls.base * x + 1

        @opero
        @staticmethod
        def plain(x: int) -> int:
            return -x

    c = Client()
    assert c.get(1) == 11
    assert c.calls == 2
    assert Client.make(2) == 20
    assert Client.make2(2) == 21
    assert Client.plain(3) == -3
    assert c.plain(3) == -3
    assert c.get.stats.retries == 1


def test_callbacks_receive_events() -> None:
    """on_retry, on_success, on_failure and on_cache_hit get Event records."""
    events: list[tuple[str, str]] = []

    def cb(e: object) -> None:
        events.append((e.kind, e.func.rsplit(".", 1)[-1]))  # type: ignore[attr-defined]

    f, _ = flaky(1)
    f.__qualname__ = "f"
    w = opero(retries=1, min_delay=0.001, cache=True, on_retry=cb, on_success=cb, on_cache_hit=cb)(f)
    w()
    w()
    assert events == [("retry", "f"), ("success", "f"), ("cache_hit", "f"), ("success", "f")]
    fails: list[str] = []
    g = opero(retries=0, on_failure=lambda e: fails.append(type(e.error).__name__))(flaky(9)[0])
    with pytest.raises(AllFailedError):
        g()
    assert fails == ["AllFailedError"]


def test_broken_callback_does_not_break_the_call() -> None:
    """An exception inside a callback is logged, not raised into the user's call."""

    @opero(on_success=lambda e: 1 / 0)
    def ok() -> int:
        return 7

    assert ok() == 7


def test_unknown_option_names_closest() -> None:
    """A typo raises ConfigurationError with a did-you-mean hint at decoration time."""
    with pytest.raises(ConfigurationError, match="did you mean 'retries'"):
        opero(retires=3)


def test_map_only_options_accepted_and_ignored() -> None:
    """@opero accepts opmap's options so one config dict can feed both."""

    @opero(mode="thread", workers=4, ordered=False, progress=False, chunksize=10)
    def f(x: int) -> int:
        return x

    assert f(3) == 3


def test_testing_mode_skips_sleeps() -> None:
    """Inside opero.testing() long backoffs do not sleep; outside they do again."""
    f, _ = flaky(3)
    w = opero(retries=3, min_delay=5, max_delay=5)(f)
    t0 = time.perf_counter()
    with opero_pkg.testing():
        assert w() == 4
    assert time.perf_counter() - t0 < 1.0
    g, _ = flaky(1)
    t0 = time.perf_counter()
    assert opero(retries=1, min_delay=0.05, max_delay=0.05, jitter=0)(g)() == 2
    assert time.perf_counter() - t0 >= 0.05


def test_decorated_function_pickles_by_value() -> None:
    """A decorated function travels by value (cloudpickle) to another process and still works there."""
    import pickle
    import subprocess
    import sys

    script = (
        "import sys, cloudpickle\n"
        "from opero import opero\n"
        "CALLS = []\n"
        "@opero(retries=2, min_delay=0.001, cache=True, rate_limit=1000)\n"
        "def f(x):\n"
        "    CALLS.append(x)\n"
        "    return x * 3\n"
        "sys.stdout.buffer.write(cloudpickle.dumps(f))\n"
    )
    blob = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    g = pickle.loads(blob)
    assert [g(2), g(2), g(3)] == [6, 6, 9]
    assert g.__wrapped__.__globals__["CALLS"] == [2, 3]  # the second g(2) was a cache hit


def test_unpickled_function_stats_are_live() -> None:
    """Unpickled by value, fn.stats and fn.cache_clear are those of the plan rebuilt there."""
    import pickle

    import cloudpickle

    def f(x: int) -> int:
        return x

    f.__module__ = "__main__"  # functions of __main__ and notebooks travel by value
    g = pickle.loads(cloudpickle.dumps(opero(cache=True)(f)))
    assert [g(1), g(1)] == [1, 1]
    assert (g.stats.calls, g.stats.cache_hits) == (2, 1)
    g.cache_clear()
    assert g(1) == 1
    assert (g.stats.calls, g.stats.cache_hits, g.stats.cache_misses) == (3, 1, 2)


def test_cache_hit_skips_call() -> None:
    """A cached result is returned without running the function; stats count hits."""
    calls: list[int] = []

    @opero(cache=True)
    def get(x: int) -> int:
        calls.append(x)
        return x

    assert [get(1), get(1), get(2)] == [1, 1, 2]
    assert calls == [1, 2]
    assert (get.stats.cache_hits, get.stats.cache_misses) == (1, 2)
    get.cache_clear()
    assert get(1) == 1
    assert calls == [1, 2, 1]


def test_failures_are_not_cached() -> None:
    """A call that failed stores nothing: the next call runs the function again."""
    f, calls = flaky(1)
    wrapped = opero(retries=0, cache=True)(f)
    with pytest.raises(AllFailedError):
        wrapped()
    assert wrapped() == 2
    assert wrapped() == 2
    assert len(calls) == 2


def test_rate_limit_spaces_attempts() -> None:
    """rate_limit=20: 4 calls take >= 3 intervals, and waits are counted."""

    @opero(rate_limit=20)
    def hit() -> float:
        return time.monotonic()

    began = time.monotonic()
    stamps = [hit() for _ in range(4)]
    # Grants are >= 1/r apart and the first is after `began` (exact spacing: test_limit_*.py).
    assert 0.15 <= stamps[-1] - began < 0.45 + 0.1
    assert hit.stats.rate_waits >= 1


def test_method_with_fallback_cache_and_rate_limit() -> None:
    """The seed's MockAPIClient shape, sync: a method with fallback, cache and rate limit."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @opero(retries=3, cache=True, cache_ttl=60, rate_limit=50.0, arg_fallback="api_key")
        def fetch(self, endpoint: str, api_key: list[str]) -> dict[str, str]:
            self.calls += 1
            if api_key[0] == "bad":
                raise ConnectionError("bad key")
            return {"endpoint": endpoint, "key": api_key[0]}

    c = Client()
    out = c.fetch("e", api_key=["bad", "good"])
    assert out == {"endpoint": "e", "key": "good"}
    assert c.fetch("e", api_key=["bad", "good"]) == out
    assert c.calls == 2
    other = Client()
    other.fetch("e", api_key=["good"])
    assert other.calls == 1  # self is part of the key: another instance misses
