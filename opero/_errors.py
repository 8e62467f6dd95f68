"""opero's exception hierarchy."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["AllFailedError", "ConfigurationError", "OperoError", "WorkerLostError"]


class OperoError(Exception):
    """Base class of every error that opero raises itself."""


class ConfigurationError(OperoError, ValueError):
    """An option has a bad name or value; raised at decoration time where possible."""


class AllFailedError(OperoError):
    """Every attempt (retry rounds x fallback candidates) of one call failed.

    Attributes:
        errors: every attempt's exception, in the order the attempts ran.
        func_name: qualified name of the function that failed.
    """

    def __init__(self, func_name: str, errors: Sequence[BaseException]) -> None:
        self.func_name = func_name
        self.errors: list[BaseException] = list(errors)
        last = self.errors[-1] if self.errors else None
        detail = f"{type(last).__name__}: {last}" if last is not None else "no attempt ran"
        super().__init__(f"{func_name}: all {len(self.errors)} attempts failed; last error: {detail}")

    def __reduce__(self) -> tuple[type[AllFailedError], tuple[str, list[BaseException]]]:
        # Exceptions cross process boundaries in opmap; keep both fields on unpickle.
        return (type(self), (self.func_name, self.errors))


class WorkerLostError(OperoError):
    """A worker process died (signal, segfault, OOM kill) while it held this item.

    It is retryable: the item's next attempt runs on a fresh worker.
    """

    def __init__(self, detail: str, exitcode: int | None = None) -> None:
        self.detail = detail
        self.exitcode = exitcode
        super().__init__(detail)

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[str, int | None]]:
        return (type(self), (self.detail, self.exitcode))
