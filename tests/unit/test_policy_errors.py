"""Errors users can catch, backoff through wait strategies, deadlines, wrong calls, recursion."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from tenacity import wait_exception, wait_fixed, wait_random, wait_random_exponential

from opero import AllFailedError, opero
from tests.shared.core import Driver, flaky

PROGRAMMING = [
    TypeError,
    NameError,
    AttributeError,
    ImportError,
    ModuleNotFoundError,
    SyntaxError,
    AssertionError,
    NotImplementedError,
    RecursionError,
]


def failing(times: int, exc: type[Exception] = ConnectionError):
    calls: list[float] = []

    def f() -> int:
        calls.append(time.perf_counter())
        if len(calls) <= times:
            raise exc(f"failure {len(calls)}")
        return len(calls)

    return f, calls


# -- reraise ---------------------------------------------------------------------------------


def test_reraise_raises_the_last_error_with_earlier_ones_in_notes(driver: Driver) -> None:
    """reraise=True, sync and async: `except ConnectionError` works; the notes list the earlier attempts."""
    f, calls = flaky(driver, 10)
    with pytest.raises(ConnectionError, match="failure 3") as info:
        driver.call(opero(retries=2, min_delay=0.001, reraise=True)(f))
    assert len(calls) == 3
    notes = info.value.__notes__
    assert notes[0] == "opero: attempt 1 of 3 failed: ConnectionError: failure 1"
    assert notes[1] == "opero: attempt 2 of 3 failed: ConnectionError: failure 2"
    assert len(notes) == 2


def test_without_reraise_all_failed_error_stays() -> None:
    """The default still raises AllFailedError with every error."""
    f, calls = failing(10)
    with pytest.raises(AllFailedError) as info:
        opero(retries=1, min_delay=0.001)(f)()
    assert [str(e) for e in info.value.errors] == ["failure 1", "failure 2"]


# -- programming errors ---------------------------------------------------------------------


@pytest.mark.parametrize("exc", PROGRAMMING)
def test_default_retry_on_does_not_retry_bugs(exc: type[Exception]) -> None:
    """A bug propagates at once, as itself, after one attempt and no backoff."""
    f, calls = failing(10, exc)
    wrapped = opero(retries=3, min_delay=0.5)(f)
    with pytest.raises(exc):
        wrapped()
    # counts, not a clock: no second attempt and no retry (so no backoff) was scheduled
    assert len(calls) == 1
    assert (wrapped.stats.attempts, wrapped.stats.retries) == (1, 0)
    assert wrapped.stats.retries == 0


def test_retry_on_naming_a_bug_retries_it() -> None:
    """retry_on is used as given: naming TypeError (or Exception) retries it."""
    f, calls = failing(2, TypeError)
    assert opero(retries=3, min_delay=0.001, retry_on=(TypeError,))(f)() == 3
    g, calls = failing(2, AttributeError)
    assert opero(retries=3, min_delay=0.001, retry_on=Exception)(g)() == 3


def test_recursion_error_is_never_retried() -> None:
    """Not even when retry_on names it: retrying deep recursion explodes."""
    f, calls = failing(10, RecursionError)
    with pytest.raises(RecursionError):
        opero(retries=3, min_delay=0.001, retry_on=Exception)(f)()
    assert len(calls) == 1


# -- wait strategies and deadline -------------------------------------------------------------


def test_wait_strategy_replaces_the_builtin_backoff() -> None:
    """wait_fixed(0.3) + wait_random(0, 0.1): every gap is 0.3-0.4 s, not min_delay's 1 ms."""
    f, calls = failing(2)
    wrapped = opero(retries=3, min_delay=0.001, max_delay=0.001, wait=wait_fixed(0.3) + wait_random(0, 0.1))(
        f
    )
    assert wrapped() == 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(gaps) == 2
    assert all(0.3 <= g < 1.3 for g in gaps), gaps


def test_wait_strategy_sees_rounds_and_the_error() -> None:
    """A strategy reads attempt_number (rounds), outcome.exception() and seconds_since_start."""
    seen: list[tuple[int, str, float]] = []

    def strategy(state: object) -> float:
        seen.append(
            (
                state.attempt_number,  # type: ignore[attr-defined]
                str(state.outcome.exception()),  # type: ignore[attr-defined]
                state.seconds_since_start,  # type: ignore[attr-defined]
            )
        )
        return 0.0

    f, calls = failing(3)
    assert opero(retries=3, wait=strategy)(f)() == 4
    assert [(n, e) for n, e, _ in seen] == [(1, "failure 1"), (2, "failure 2"), (3, "failure 3")]
    assert all(s >= 0 for _, _, s in seen)
    # tenacity's own strategies that read the state work too
    g, _ = failing(2)
    assert opero(retries=3, wait=wait_exception(lambda e: 0.0))(g)() == 3
    h, _ = failing(2)
    assert opero(retries=3, wait=wait_random_exponential(multiplier=0.001, max=0.01))(h)() == 3


def test_wait_strategy_skipped_under_testing() -> None:
    """opero.testing() skips every wait, strategies included."""
    import opero as opero_pkg

    f, calls = failing(2)
    with opero_pkg.testing():
        t0 = time.perf_counter()
        assert opero(retries=3, wait=wait_fixed(5))(f)() == 3
        assert time.perf_counter() - t0 < 2.0


def test_deadline_bounds_the_whole_call() -> None:
    """No attempt starts after the deadline; the call ends with AllFailedError saying why."""
    f, calls = failing(10_000)
    wrapped = opero(retries=1000, min_delay=0.05, max_delay=0.05, jitter=0, deadline=0.5)(f)
    t0 = time.perf_counter()
    with pytest.raises(AllFailedError) as info:
        wrapped()
    took = time.perf_counter() - t0
    assert took < 1.5
    assert all(c - t0 < 0.5 for c in calls)
    assert 3 <= len(calls) <= 11
    assert any("deadline=0.5s" in n for n in info.value.__notes__)


def test_deadline_does_not_sleep_into_it() -> None:
    """A backoff that would cross the deadline ends the call at once instead of sleeping."""
    f, calls = failing(10)
    wrapped = opero(retries=3, min_delay=5.0, max_delay=5.0, deadline=1.0)(f)
    t0 = time.perf_counter()
    with pytest.raises(AllFailedError):
        wrapped()
    assert time.perf_counter() - t0 < 0.5
    assert len(calls) == 1


# -- wrong calls and recursion ----------------------------------------------------------------


def test_wrong_call_fails_at_once() -> None:
    """Arguments that don't bind raise their own TypeError on the first attempt, even when
    retry_on would retry a TypeError raised inside the function."""
    calls: list[int] = []

    @opero(retries=3, min_delay=0.2, retry_on=Exception)
    def f(x: int) -> int:
        calls.append(x)
        return x

    t0 = time.perf_counter()
    with pytest.raises(TypeError, match="positional argument"):
        f(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        f(1, y=2)  # type: ignore[call-arg]
    assert time.perf_counter() - t0 < 0.15
    assert f.stats.attempts == 2
    assert f.stats.retries == 0


def test_wrong_call_async_fails_at_once() -> None:
    @opero(retries=3, min_delay=0.2, retry_on=Exception)
    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError):
        asyncio.run(f())  # type: ignore[call-arg]
    assert f.stats.retries == 0


def test_inner_failure_is_not_retried_by_outer_levels() -> None:
    """An AllFailedError of an inner call of the same function propagates through the outer
    calls: the innermost retries, the others don't ((retries+1)*1 attempts, not (r+1)**depth)."""
    calls: list[int] = []

    @opero(retries=2, min_delay=0.001, retry_on=Exception)
    def down(n: int) -> int:
        calls.append(n)
        if n == 0:
            raise ValueError("bottom")
        return down(n - 1)

    with pytest.raises(AllFailedError, match="bottom"):
        down(4)
    assert sorted(calls) == [0, 0, 0, 1, 2, 3, 4]


def test_inner_reraised_failure_is_not_retried_by_outer_levels() -> None:
    """The same with reraise=True: the error itself is marked as final for this function."""
    calls: list[int] = []

    @opero(retries=2, min_delay=0.001, reraise=True)
    def down(n: int) -> int:
        calls.append(n)
        if n == 0:
            raise ValueError("bottom")
        return down(n - 1)

    with pytest.raises(ValueError, match="bottom"):
        down(4)
    assert sorted(calls) == [0, 0, 0, 1, 2, 3, 4]
