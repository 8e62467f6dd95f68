"""The memory cache: keys, TTL, LRU bound, methods, unhashable arguments (SPEC §4)."""

from __future__ import annotations

import time
import warnings

import pytest

import opero as opero_pkg
from opero import opero
from tests.shared.cache_memory import counter


def test_hit_returns_cached_value_without_calling() -> None:
    """The second identical call is a hit; stats count hits and misses."""
    f, calls = counter()
    w = opero(cache=True)(f)
    assert w(1) == w(1) == (1, 0)
    assert len(calls) == 1
    assert (w.stats.cache_hits, w.stats.cache_misses) == (1, 1)


def test_defaults_and_keywords_bind_to_one_key() -> None:
    """f(1), f(1, 0), f(x=1) and f(1, y=0) are the same call once defaults are applied."""
    f, calls = counter()
    w = opero(cache=True)(f)
    w(1)
    w(1, 0)
    w(x=1)
    w(1, y=0)
    assert len(calls) == 1


def test_keys_are_typed() -> None:
    """f(1), f(1.0) and f(True) are three entries."""
    f, calls = counter()
    w = opero(cache=True)(f)
    w(1)
    w(1.0)
    w(True)
    assert [type(c[0]) for c in calls] == [int, float, bool]


def test_unhashable_arguments_hash_by_content() -> None:
    """Lists and dicts are keyed by content through joblib.hash."""
    f, calls = counter()
    w = opero(cache=True)(f)
    w([1, 2], {"a": 1})
    w([1, 2], {"a": 1})
    w([1, 3], {"a": 1})
    assert len(calls) == 2


def test_numpy_arrays_by_content() -> None:
    """Equal arrays share an entry; a changed element misses."""
    import numpy as np

    f, calls = counter()
    w = opero(cache=True)(f)
    w(np.arange(5))
    w(np.arange(5))
    w(np.arange(5) + 1)
    assert len(calls) == 2


def test_unpicklable_argument_runs_uncached_with_one_warning() -> None:
    """An argument joblib cannot hash makes the call run uncached; one warning per function."""
    import threading

    f, calls = counter()
    w = opero(cache=True)(f)
    lock_list = [threading.Lock()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w(lock_list)
        w(lock_list)
        w(lock_list)
    assert len(calls) == 3
    assert len([c for c in caught if "cannot be hashed" in str(c.message)]) == 1


def test_ttl_seconds_expire() -> None:
    """An entry older than cache_ttl is a miss."""
    f, calls = counter()
    w = opero(cache=True, cache_ttl=0.1)(f)
    w(1)
    w(1)
    time.sleep(0.15)
    w(1)
    assert len(calls) == 2


def test_ttl_callable_evaluated_at_store_time() -> None:
    """cache_ttl may be a zero-argument callable returning seconds."""
    ttls = iter([0.05, 100.0])
    f, calls = counter()
    w = opero(cache=True, cache_ttl=lambda: next(ttls))(f)
    w(1)
    time.sleep(0.08)
    w(1)  # expired: stored again with ttl 100
    time.sleep(0.08)
    w(1)
    assert len(calls) == 2


def test_lru_bound() -> None:
    """The memory cache keeps at most max_size entries, dropping the least recently used."""
    f, calls = counter()
    w = opero(cache=True, cache_backend_config={"max_size": 2})(f)
    w(1)
    w(2)
    w(1)  # 1 is now most recent
    w(3)  # evicts 2
    w(1)
    w(2)
    assert [c[0] for c in calls] == [1, 2, 3, 2]


def test_cache_key_receives_arguments_by_name() -> None:
    """cache_key(**arguments) sees positional arguments by parameter name (seed example)."""
    seen: list[dict[str, object]] = []

    def key(*args: object, **kwargs: object) -> str:
        seen.append(kwargs)
        assert args == ()
        return f"id-{kwargs['data']['id']}"  # type: ignore[index]

    calls: list[float | None] = []

    @opero(cache=True, cache_key=key)
    def process(data: dict[str, str], timestamp: float | None = None) -> str:
        calls.append(timestamp)
        return data["value"]

    assert process({"id": "1", "value": "a"}, timestamp=1) == "a"
    assert process({"id": "1", "value": "a"}, timestamp=2) == "a"
    assert calls == [1]
    assert seen[0] == {"data": {"id": "1", "value": "a"}, "timestamp": 1}


def test_methods_key_on_self_identity() -> None:
    """Two instances have separate entries; the same instance hits."""

    class Svc:
        def __init__(self) -> None:
            self.calls = 0

        @opero(cache=True)
        def get(self, x: int) -> int:
            self.calls += 1
            return x

    a, b = Svc(), Svc()
    a.get(1)
    a.get(1)
    b.get(1)
    assert (a.calls, b.calls) == (1, 1)


def test_failures_are_not_cached() -> None:
    """Only successful results are stored."""
    calls: list[int] = []

    @opero(cache=True, retries=0)
    def f(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ConnectionError
        return x

    with pytest.raises(opero_pkg.AllFailedError):
        f(1)
    assert f(1) == 1
    assert f(1) == 1
    assert len(calls) == 2


def test_testing_cache_false_bypasses_cache() -> None:
    """opero.testing(cache=False) turns caching off while active."""
    f, calls = counter()
    w = opero(cache=True)(f)
    with opero_pkg.testing(cache=False):
        w(1)
        w(1)
    assert len(calls) == 2
    w(1)
    w(1)
    assert len(calls) == 3


def test_cache_hit_takes_no_rate_token() -> None:
    """A cache hit does not wait for the rate limiter."""
    f, _ = counter()
    w = opero(cache=True, rate_limit=2)(f)
    w(1)
    t0 = time.perf_counter()
    for _ in range(20):
        w(1)
    assert time.perf_counter() - t0 < 0.2
    assert w.stats.rate_waits == 0
