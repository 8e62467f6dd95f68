"""``opero.testing()``: switch off sleeps, rate-limit waits and (optionally) caching."""

from __future__ import annotations

from types import TracebackType

__all__ = ["TestingSwitch", "state", "testing"]


class _State:
    __slots__ = ("active", "cache")

    def __init__(self) -> None:
        #: True while testing mode is on: retry sleeps and rate-limit waits are skipped.
        self.active = False
        #: False when testing mode also turned caching off.
        self.cache = True


state = _State()


class TestingSwitch:
    """Returned by :func:`testing`; a context manager that restores the previous mode."""

    __test__ = False  # not a pytest test class

    def __init__(self, previous: tuple[bool, bool]) -> None:
        self._previous = previous

    def __enter__(self) -> TestingSwitch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state.active, state.cache = self._previous


def testing(enabled: bool = True, *, cache: bool = True) -> TestingSwitch:  # noqa: PT028
    """Turn testing mode on (or off) at once; use it bare or as a context manager.

    In testing mode retry backoff sleeps and rate-limit waits are skipped, so users' test
    suites run fast; with ``cache=False`` caching is off too. The mode is process-wide.

    Example:
        >>> import opero
        >>> with opero.testing():
        ...     pass  # retries of decorated functions do not sleep here

    Args:
        enabled: True to turn testing mode on, False to turn it off.
        cache: False to also bypass every cache while testing mode is on.

    Returns:
        A context manager whose exit restores the mode that was in force before the call.
    """
    previous = (state.active, state.cache)
    state.active = enabled
    state.cache = cache or not enabled
    return TestingSwitch(previous)
