"""opero.parts(fn): the live cache, limiter, breaker and sticky demotions behind a function."""

from __future__ import annotations

import dataclasses
import functools

import pytest

import opero
from opero import opmap, parts


def test_parts_of_a_plain_function_are_none() -> None:
    """A function with no cache, limit, breaker or sticky fallback has None for each part."""

    @opero.opero
    def plain(x: int) -> int:
        return x

    got = parts(plain)
    assert (got.cache, got.keys, got.limiter, got.breaker, got.sticky, got.pace) == (None,) * 6
    assert got.recorder.name == plain.stats.name


def test_parts_are_the_live_objects() -> None:
    """The cache behind parts() is the one calls fill; the breaker's state is the calls' state."""

    @opero.opero(cache=True, rate_limit=1000, circuit_breaker=True)
    def square(x: int) -> int:
        return x * x

    assert [square(3), square(3)] == [9, 9]
    got = parts(square)
    assert got.keys is not None and got.cache is not None
    assert got.cache.get(got.keys.key((3,), {})) == 9
    assert got.limiter is not None and got.limiter.current_rate() == 1000
    assert got.breaker is not None and got.breaker.state() == "closed"
    assert parts(square).cache is got.cache  # the same object each time, not a copy


def test_parts_is_a_frozen_record() -> None:
    """The record cannot be rebound: it is a view, not a way to swap parts."""

    @opero.opero
    def f() -> int:
        return 1

    with pytest.raises(dataclasses.FrozenInstanceError):
        parts(f).limiter = None  # type: ignore[misc]


def test_parts_of_a_mapped_function_and_a_method() -> None:
    """@opmap functions and methods (bound or from the class) give their plan's parts."""

    @opmap(arg_fallback="key", progress=False)
    def mapped(x: int, key: list[str]) -> int:
        return x

    class Api:
        @opero.opero(rate_limit=50)
        def get(self) -> int:
            return 1

    assert parts(mapped).sticky is not None
    assert parts(mapped).sticky.demoted(["a", "b"]) == [False, False]
    assert parts(Api().get).limiter is parts(Api.get).limiter
    assert parts(Api.get).limiter is not None


def test_parts_of_classmethods_and_staticmethods() -> None:
    """Decorated classmethods and staticmethods give their parts, from the class or its dict."""

    class Api:
        @opero.opero(rate_limit=5)
        @classmethod
        def made(cls) -> int:
            return 1

        @opero.opero(circuit_breaker=True)
        @staticmethod
        def ping() -> int:
            return 1

    assert parts(Api.made).limiter is parts(Api.__dict__["made"]).limiter is not None
    assert parts(Api.ping).breaker is parts(Api.__dict__["ping"]).breaker is not None


@pytest.mark.parametrize("thing", [len, lambda: 1, functools.partial(print), 3, None])
def test_parts_refuses_other_callables(thing: object) -> None:
    """Anything not made by @opero or @opmap raises a TypeError that says what was expected."""
    with pytest.raises(TypeError, match=r"decorated with @opero or @opmap"):
        parts(thing)
