"""The ``driver`` fixture: one test body runs once through a sync and once through an async function.

A test writes the decorated function's body as plain sync code and hands it to
``driver.define(body)``; the async driver wraps it in an ``async def`` that yields to the loop
first, so the async path really awaits. ``driver.call(fn, ...)`` calls the decorated function
and returns its result (the async driver runs it on the test's own event loop, one loop per
test, so loop-bound state such as limiters and locks behaves as in one program).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest


class Driver:
    """Defines and calls the function under test, sync or async."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "async"
        self.mode = "async" if self.is_async else "thread"  # the map mode matching the function
        self._loop = asyncio.new_event_loop() if self.is_async else None

    def define(self, body: Callable[..., Any]) -> Callable[..., Any]:
        """``body`` itself (sync), or an ``async def`` with its name and signature running it."""
        if not self.is_async:
            return body

        @functools.wraps(body)
        async def run(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return body(*args, **kwargs)

        return run

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` and return its result; an async function is awaited on the test's loop."""
        result = fn(*args, **kwargs)
        if self._loop is None:
            return result
        return self._loop.run_until_complete(result)

    def close(self) -> None:
        """Close the async driver's loop."""
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """Each test using this fixture runs twice: through a sync and through an async function."""
    d = Driver(request.param)
    yield d
    d.close()


def flaky(driver: Driver, failures: int, exc: type[Exception] = ConnectionError) -> tuple[Any, list[int]]:
    """A function failing ``failures`` times, then returning the call count."""
    calls: list[int] = []

    def f() -> int:
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"failure {len(calls)}")
        return len(calls)

    return driver.define(f), calls
