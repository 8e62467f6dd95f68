"""The types ``@opmap`` returns: what a type checker sees of a mapped function.

The sync and async protocols share one base, :class:`_Mapping`, generic in what a call
gives back (a list or an awaitable of it, ``Iterator`` or ``AsyncIterator``); Python's
typing has no type constructor parameters, so each protocol names its return types in full.
Only binding (``__get__``) is written twice: it returns the protocol itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
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
#: what a call of each form gives back: a DataFrame, a Series, the list, the stream
Frame_co = TypeVar("Frame_co", covariant=True)
Series_co = TypeVar("Series_co", covariant=True)
List_co = TypeVar("List_co", covariant=True)
Stream_co = TypeVar("Stream_co", covariant=True)

#: the column(s) of ``fn(df, column)``: one name, or a list (an Index) of names, or a
#: ``{parameter: column}`` dict, which iterates over its parameter names
Columns = Hashable | Iterable[Hashable]


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


class _Mapping(Protocol[T_contra, P, R, Frame_co, Series_co, List_co, Stream_co]):
    """The members a mapped function has, sync and async alike (see :class:`MapFunction`)."""

    # pandas first: a DataFrame or Series is also an Iterable, and wins over the list form.
    # Its calls take keywords of their own (result_column=, expand=, ...) besides the
    # function's, which a ParamSpec cannot add: their arguments are checked at call time.
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, items: pd.DataFrame, column: Columns, /, *args: object, **kwargs: object
    ) -> Frame_co: ...

    @overload
    def __call__(self, items: pd.Series[Any], /, *args: object, **kwargs: object) -> Series_co: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, items: Iterable[T_contra], /, *args: P.args, **kwargs: P.kwargs) -> List_co: ...

    def __call__(self, items: object, /, *args: object, **kwargs: object) -> object: ...

    def imap(self, items: Iterable[T_contra], /, *args: P.args, **kwargs: P.kwargs) -> Stream_co:
        """Stream the results with bounded memory: an ``Iterator[R | BaseException]``, an
        ``AsyncIterator`` of them for ``async def``; ``ordered=False``: as they finish."""
        ...

    @property
    def stats(self) -> FunctionStats:
        """Live counters of the mapped function."""
        ...

    def cache_clear(self) -> None:
        """Drop the function's cached results."""
        ...

    def failures(self) -> pd.DataFrame:
        """Every failed item (the last 10,000) as a pandas DataFrame."""
        ...

    def last_results(self) -> list[R | BaseException] | None:
        """The last map's results, also after a KeyboardInterrupt (notebook, issue 21)."""
        ...


class MapFunction(
    _Mapping[
        T_contra,
        P,
        R,
        "pd.DataFrame",
        "pd.Series[Any]",
        list[R | BaseException],
        Iterator[R | BaseException],
    ],
    Protocol[T_contra, P, R],
):
    """What ``@opmap`` returns for a sync function: a map over items, plus ``imap``.

    ``fn(items, *args, **kwargs)`` returns a list with one result (or exception) per item;
    ``fn(series)`` a Series and ``fn(df, column, ...)`` (so ``df.pipe(fn, column)``) a
    DataFrame (see the pandas guide). On a method, the items come after ``self``.
    """

    # Methods: on an instance, ``self`` is bound and the items are the next parameter.
    @overload
    def __get__(self, obj: None, owner: type | None = None) -> MapFunction[T_contra, P, R]: ...

    @overload
    def __get__(
        self: _UnboundMap[S, T2, P2, R], obj: S, owner: type | None = None
    ) -> MapFunction[T2, P2, R]: ...

    def __get__(self, obj: object, owner: type | None = None) -> object: ...


class AsyncMapFunction(
    _Mapping[
        T_contra,
        P,
        R,
        "Awaitable[pd.DataFrame]",
        "Awaitable[pd.Series[Any]]",
        Awaitable[list[R | BaseException]],
        AsyncIterator[R | BaseException],
    ],
    Protocol[T_contra, P, R],
):
    """What ``@opmap`` returns for an ``async def`` function: the same, awaited."""

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> AsyncMapFunction[T_contra, P, R]: ...

    @overload
    def __get__(
        self: _UnboundAsyncMap[S, T2, P2, R], obj: S, owner: type | None = None
    ) -> AsyncMapFunction[T2, P2, R]: ...

    def __get__(self, obj: object, owner: type | None = None) -> object: ...


class OpmapDecorator(Protocol):
    """What ``opmap(**options)`` returns: a decorator."""

    @overload
    def __call__(self, func: Callable[Concatenate[T, P], Awaitable[R]], /) -> AsyncMapFunction[T, P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[Concatenate[T, P], R], /) -> MapFunction[T, P, R]: ...

    def __call__(self, func: Callable[..., object], /) -> object: ...
