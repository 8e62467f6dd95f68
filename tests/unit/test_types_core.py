"""The core's typed shapes (issue 18, types): breaker settings, records, options merging, markers."""

from __future__ import annotations

import asyncio
import inspect
import pickle

import pytest

import opero
from opero import opero as opero_decorator
from opero._compat import mark_coroutine_function
from opero._limit import Adaptive, Limiter, LocalRecord, aimd_read, aimd_succeeded
from opero._options import BREAKER_DEFAULTS, resolve_options


def test_breaker_settings_fill_every_key() -> None:
    """circuit_breaker=True and a partial dict both give all four settings, defaults filled in."""
    assert resolve_options({"circuit_breaker": True}).breaker == dict(BREAKER_DEFAULTS)
    settings = resolve_options({"circuit_breaker": {"open": 2.5}}).breaker
    assert settings == {"failures": 5, "window": 10.0, "open": 2.5, "fail_fast": False}
    assert resolve_options({"circuit_breaker": False}).breaker is None


def test_configure_and_environment_name_the_same_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure(timeout=...) with OPERO_DEFAULT_TIMEOUT set merges (configure wins), no TypeError."""
    monkeypatch.setenv("OPERO_DEFAULT_TIMEOUT", "5")
    assert resolve_options({}).timeout == 5.0
    opero.configure(timeout=2)
    assert resolve_options({}).timeout == 2.0
    assert resolve_options({"timeout": 1}).timeout == 1.0


def test_record_apply_returns_the_operation_result() -> None:
    """LocalRecord.apply hands back what the operation returns, sync and async."""
    record = LocalRecord([4.0, 1.0, 4.0, 0.0, 0.0])
    assert record.apply("aimd_read", aimd_read) == (4.0, 1.0)
    climbed = asyncio.run(record.apply_async("aimd_succeeded", aimd_succeeded, 0.1, 0.25, 0.1, 0.0))
    assert climbed == pytest.approx(4.1)
    assert record.values[0] == pytest.approx(4.1)


def test_adaptive_pickles_with_its_record_and_ceiling() -> None:
    """An Adaptive (a slotted dataclass) survives pickling inside its limiter, ceiling included."""
    limiter = Limiter("typed", 8.0, adaptive=Adaptive(LocalRecord(Adaptive.initial(8.0, False)), 20.0))
    copy = pickle.loads(pickle.dumps(limiter))
    assert copy.adaptive is not None
    assert copy.adaptive.ceiling == 20.0
    assert copy.current() == (8.0, 0.0)
    assert copy.adaptive != limiter.adaptive  # identity equality, as before (eq=False)


def test_mark_coroutine_function_marks_a_callable_object() -> None:
    """A callable object marked by _compat reads as a coroutine function (asyncio; inspect on 3.12+)."""

    class Caller:
        async def run(self) -> int:
            return 3

        def __call__(self) -> object:
            return self.run()

    caller = Caller()
    assert not asyncio.iscoroutinefunction(caller)
    mark_coroutine_function(caller)
    assert asyncio.iscoroutinefunction(caller)
    assert inspect.iscoroutinefunction(caller) is hasattr(inspect, "markcoroutinefunction")
    assert asyncio.run(caller()) == 3  # type: ignore[arg-type]


def test_cached_generators_still_yield_their_values() -> None:
    """@opero(cache=True) on sync and async generator functions replays the cached values."""
    runs: list[int] = []

    @opero_decorator(cache=True)
    def numbers(n: int):  # type: ignore[no-untyped-def]
        runs.append(n)
        yield from range(n)

    @opero_decorator(cache=True)
    async def letters(n: int):  # type: ignore[no-untyped-def]
        runs.append(-n)
        for c in "abc"[:n]:
            yield c

    async def collect() -> list[str]:
        return [c async for c in letters(2)]

    assert list(numbers(3)) == [0, 1, 2]
    assert list(numbers(3)) == [0, 1, 2]
    assert asyncio.run(collect()) == ["a", "b"]
    assert asyncio.run(collect()) == ["a", "b"]
    assert runs == [3, -2]
