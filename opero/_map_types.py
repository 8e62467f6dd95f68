"""The types ``@opmap`` returns: what a type checker sees of a mapped function.

The sync and async protocols differ only in their return types (``list`` or an awaitable of
it, ``Iterator`` or ``AsyncIterator``); Python's typing has no way to write them once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from ._telemetry import FunctionStats

if TYPE_CHECKING:  # the types only: `import opero` never imports pandas
    import pandas as pd

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
T_contra = TypeVar("T_contra", contravariant=True)
S = TypeVar("S")
T2 = TypeVar("T2")
P2 = ParamSpec("P2")
S_contra = TypeVar("S_contra", contravariant=True)
T2_contra = TypeVar("T2_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class _UnboundMap(Protocol[S_contra, T2_contra, P2, R_co]):
    # An opmap'd method before binding: self, then the item, then the rest. Matching it pulls
    # the item type out of the signature (a ParamSpec cannot be split otherwise); it matches
    # on imap because __call__ is overloaded (pandas).
    def imap(
        self, items: Iterable[S_contra], item: T2_contra, /, *args: P2.args, **kwargs: P2.kwargs
    ) -> Iterator[R_co | BaseException]: ...


class _UnboundAsyncMap(Protocol[S_contra, T2_contra, P2, R_co]):
    def imap(
        self, items: Iterable[S_contra], item: T2_contra, /, *args: P2.args, **kwargs: P2.kwargs
    ) -> AsyncIterator[R_co | BaseException]: ...


class _MapMembers(Protocol):
    """The members a mapped function has besides calling it (sync and async alike)."""

    @property
    def stats(self) -> FunctionStats:
        """Live counters of the mapped function."""
        ...

    def cache_clear(self) -> None:
        """Drop the function's cached results."""
        ...

    def failures(self) -> Any:
        """Every failed item (the last 10,000) as a pandas DataFrame."""
        ...

    def last_results(self) -> list[Any] | None:
        """The last map's results, also after a KeyboardInterrupt (notebook, issue 21)."""
        ...


class MapFunction(_MapMembers, Protocol[T_contra, P, R]):
    """What ``@opmap`` returns for a sync function: a map over items, plus ``imap``.

    ``fn(items, *args, **kwargs)`` returns a list with one result (or exception) per item;
    ``fn(series)`` a Series and ``fn(df, column, ...)`` (so ``df.pipe(fn, column)``) a
    DataFrame (see the pandas guide). On a method, the items come after ``self``.
    """

    # pandas first: a DataFrame or Series is also an Iterable, and wins over the list form
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, items: pd.DataFrame, column: Any, /, *args: Any, **kwargs: Any
    ) -> pd.DataFrame: ...

    @overload
    def __call__(self, items: pd.Series[Any], /, *args: Any, **kwargs: Any) -> pd.Series[Any]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(
        self, items: Iterable[T_contra], /, *args: P.args, **kwargs: P.kwargs
    ) -> list[R | BaseException]: ...

    def __call__(self, items: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def imap(
        self, items: Iterable[T_contra], /, *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[R | BaseException]:
        """Stream the results (bounded memory)."""
        ...

    # Methods: on an instance, ``self`` is bound and the items are the next parameter.
    @overload
    def __get__(self, obj: None, owner: type | None = None) -> MapFunction[T_contra, P, R]: ...

    @overload
    def __get__(
        self: _UnboundMap[S, T2, P2, R], obj: S, owner: type | None = None
    ) -> MapFunction[T2, P2, R]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any: ...


class AsyncMapFunction(_MapMembers, Protocol[T_contra, P, R]):
    """What ``@opmap`` returns for an ``async def`` function: the same, awaited."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, items: pd.DataFrame, column: Any, /, *args: Any, **kwargs: Any
    ) -> Awaitable[pd.DataFrame]: ...

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, items: pd.Series[Any], /, *args: Any, **kwargs: Any
    ) -> Awaitable[pd.Series[Any]]: ...

    @overload
    def __call__(
        self, items: Iterable[T_contra], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[list[R | BaseException]]: ...

    def __call__(self, items: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def imap(
        self, items: Iterable[T_contra], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[R | BaseException]:
        """Stream the results as an async generator (bounded memory)."""
        ...

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> AsyncMapFunction[T_contra, P, R]: ...

    @overload
    def __get__(
        self: _UnboundAsyncMap[S, T2, P2, R], obj: S, owner: type | None = None
    ) -> AsyncMapFunction[T2, P2, R]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any: ...


class OpmapDecorator(Protocol):
    """What ``opmap(**options)`` returns: a decorator."""

    @overload
    def __call__(self, func: Callable[Concatenate[T, P], Awaitable[R]], /) -> AsyncMapFunction[T, P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[Concatenate[T, P], R], /) -> MapFunction[T, P, R]: ...

    def __call__(self, func: Callable[..., Any], /) -> Any: ...
