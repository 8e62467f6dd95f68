"""What can be decorated (issue 11.8) and generators with cache=True (issue 11.9)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import opero
from opero import ConfigurationError, opmap

# -- what can be decorated ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [42, "x", None.__class__.__name__, b"raw", 3.5])
def test_not_callable_is_a_type_error_at_decoration(bad: Any) -> None:
    """opero(42), opero(retries=1)(42) and opmap("x") fail at once, with a TypeError."""
    with pytest.raises(TypeError, match="takes a function") as info:
        opero.opero(bad)
    assert type(bad).__name__ in str(info.value)
    with pytest.raises(TypeError, match="takes a function"):
        opero.opero(retries=1)(bad)
    with pytest.raises(TypeError, match="takes a function"):
        opmap(bad)
    with pytest.raises(TypeError, match="takes a function"):
        opmap(workers=2)(bad)


def test_a_class_is_a_configuration_error() -> None:
    """Decorating a class is a ConfigurationError naming it."""

    class Client:
        def __init__(self, x: int) -> None:
            self.x = x

    for decorate in (opero.opero, opero.opero(retries=1), opmap, opmap(workers=2)):
        with pytest.raises(ConfigurationError, match=r"not classes: got class .*Client"):
            decorate(Client)


def _add(a: int, b: int) -> int:
    return a + b


class _Scale:
    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        return x * self.k


@pytest.mark.parametrize("backend", [None, "memory", "disk"])
def test_partial_and_callable_objects_work(backend: str | None) -> None:
    """functools.partial and callable objects decorate, with and without cache=True."""
    options: dict[str, Any] = {} if backend is None else {"cache": True, "cache_backend": backend}
    one, two = functools.partial(_add, 1), functools.partial(_add, 2)
    f1, f2 = opero.opero(**options)(one), opero.opero(**options)(two)
    assert [f1(10), f2(10), f1(10), f2(10)] == [11, 12, 11, 12]
    s3, s4 = _Scale(3), _Scale(4)
    g3, g4 = opero.opero(**options)(s3), opero.opero(**options)(s4)
    assert [g3(2), g4(2), g3(2), g4(2)] == [6, 8, 6, 8]
    assert (s3.calls, s4.calls) == ((1, 1) if backend else (2, 2))
    assert g3.stats.calls == 2
    assert f1.stats.name == f"{__name__}._add.partial"
    assert g3.stats.name == f"{__name__}._Scale"
    mapped = opmap(**options)(functools.partial(_add, 5))
    assert list(mapped([1, 2])) == [6, 7]
    assert list(opmap(**options)(_Scale(2))([1, 2])) == [2, 4]


# -- generators with cache=True ----------------------------------------------------------------


def test_generator_values_are_cached_and_replayed() -> None:
    """The second call gets a fresh generator over the cached values, never an exhausted one."""
    runs: list[int] = []

    @opero.opero(cache=True)
    def count(n: int) -> Iterator[int]:
        runs.append(n)
        yield from range(n)

    assert inspect.isgeneratorfunction(count)
    first, second = count(3), count(3)
    assert list(first) == [0, 1, 2]
    assert list(second) == [0, 1, 2]
    assert list(count(3)) == [0, 1, 2] and runs == [3]
    assert list(count(2)) == [0, 1] and runs == [3, 2]
    assert count.stats.cache_hits == 2


def test_generator_failing_midway_is_retried_whole() -> None:
    """With cache=True an attempt is the whole production: a failure midway retries it."""
    attempts: list[int] = []

    @opero.opero(cache=True, retries=2, min_delay=0.001, max_delay=0.002)
    def flaky() -> Iterator[int]:
        attempts.append(1)
        yield 1
        if len(attempts) < 2:
            raise ConnectionError("dropped")
        yield 2

    assert list(flaky()) == [1, 2]
    assert len(attempts) == 2 and flaky.stats.attempts == 2
    assert list(flaky()) == [1, 2] and len(attempts) == 2


def test_generator_on_disk_persists_its_values() -> None:
    """A generator's values are stored in the disk cache like any result."""
    _RUNS.clear()

    def make() -> Any:
        @opero.opero(cache=True, cache_backend="disk")
        def letters(word: str) -> Iterator[str]:
            _RUNS.append(1)  # a module global (not plain): not part of the key
            yield from word

        return letters

    assert list(make()("abc")) == ["a", "b", "c"]
    assert list(make()("abc")) == ["a", "b", "c"]  # a new decoration: read from disk
    assert _RUNS == [1]


_RUNS: list[int] = []


def test_async_generator_values_are_cached() -> None:
    """An async generator function with cache=True stays one, replaying its cached values."""
    runs: list[int] = []

    @opero.opero(cache=True)
    async def ticks(n: int) -> AsyncIterator[int]:
        runs.append(n)
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    assert inspect.isasyncgenfunction(ticks)

    async def main() -> list[list[int]]:
        return [[v async for v in ticks(3)] for _ in range(3)]

    assert asyncio.run(main()) == [[0, 1, 2]] * 3
    assert runs == [3]


def test_generator_without_cache_stays_lazy() -> None:
    """Without cache=True a generator function is untouched: values come one at a time."""
    produced: list[int] = []

    @opero.opero
    def lazy() -> Iterator[int]:
        for i in range(3):
            produced.append(i)
            yield i

    gen = lazy()
    assert next(gen) == 0 and produced == [0]
