"""pandas adapters for ``@opmap``: map over a Series or DataFrame columns.

opmap imports this module lazily, only when its items argument is a pandas object, so
``import opero`` never imports pandas. opmap hands over with :func:`dispatch`; this module
turns the frame into plain item lists (column-wise, never row by row: no ``iterrows`` and no
per-row Series), lets opmap run them, and puts the results and exceptions back on the
input's index.

Calling conventions, for a function ``enrich`` decorated with ``@opmap``:

- ``enrich(series, *args, **kwargs)`` → a Series on the series' index named ``enrich``,
  holding each item's result or, for a failed item, its exception.
- ``enrich(df, column, *args, **kwargs)`` (so ``df.pipe(enrich, column, ...)``) → a copy of
  ``df`` plus ``enrich`` (results) and ``enrich_error`` (None or the exception). ``column``
  is one column name (passed as the first argument), a list of names (passed as the first
  positional arguments, in order) or a dict ``{parameter: column}`` (passed by keyword).
  ``column=`` also works as a keyword when the function has no parameter of that name.
- Keywords consumed here and never passed to the function: ``result_column=``,
  ``error_column=`` (rename the two new columns), ``expand=True`` (spread dict results
  over ``<result_column>.<key>`` columns, which replace the result column) and ``resume=``
  (rerun only what failed, see :func:`resume_rows`; consumed only when the function has no
  parameter of that name).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

import pandas as pd

from ._errors import ConfigurationError
from .executors._chunks import Spread

__all__ = ["Request", "RunList", "dispatch", "dispatch_async"]

Out_co = TypeVar("Out_co", covariant=True)
Out = TypeVar("Out")


class RunList(Protocol[Out_co]):
    """``run_list(items, args, kwargs, labels)`` from opmap: its map over plain items.

    It maps the function over ``items`` with full resilience and returns one entry per
    item, in order: the result, or the exception of a failed item (an awaitable of that
    list for ``async def`` functions). An item reaches the function as
    ``func(item, *args, **kwargs)``; a row of several columns is a ``Spread`` of its
    arguments, positional (``func(*row, *args, **kwargs)``) or by keyword. ``labels`` are
    the rows' index labels: failed rows are reported by them, not by their values.
    """

    def __call__(
        self,
        items: list[object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        labels: list[Hashable],
        /,
    ) -> Out_co: ...


#: Keywords of a pandas call that belong to this module, not to the function.
_OWN_KEYWORDS = ("result_column", "error_column", "expand", "resume")

#: Column lists in error messages are cut after this many names (wide frames).
_MAX_LISTED = 30


@dataclass(frozen=True, slots=True)
class Request:
    """One pandas call of a mapped function, as opmap received it."""

    #: the Series or DataFrame the user passed as the items argument (typed ``object`` so
    #: that opmap can pass its items through after its own check)
    data: object
    #: the positional arguments after ``data``; for a DataFrame the first one is the column
    #: specification (one name, a list of names or a ``{parameter: column}`` dict), the rest
    #: pass through to every call
    args: tuple[object, ...]
    #: the keyword arguments of the call; ``result_column``, ``error_column``, ``expand``
    #: (and ``resume``) are taken out, the rest pass through to every call. Not modified.
    kwargs: dict[str, object]
    #: the function's ``__name__``, the default result column name
    name: str
    #: the undecorated function; its signature validates the column mapping
    func: Callable[..., object]


def dispatch(run_list: RunList[list[object]], request: Request) -> pd.Series[Any] | pd.DataFrame:
    """Map a function over a Series or DataFrame columns through opmap's ``run_list``.

    Args:
        run_list: opmap's resilient parallel map over plain items (see :class:`RunList`).
        request: the call: the Series or DataFrame and the arguments that came with it.

    Returns:
        A Series for a Series input (a DataFrame with ``expand=True``), a new DataFrame for
        a DataFrame input.

    Raises:
        ConfigurationError: a missing or unknown column, a DataFrame without a column, a
            dict naming a parameter the function does not have, a new column name that is
            already taken, or arguments the function cannot accept.
    """
    job = _Job.prepare(request)
    return job.finish(job.run(run_list) if job.runs else [])


async def dispatch_async(
    run_list: RunList[Awaitable[list[object]]], request: Request
) -> pd.Series[Any] | pd.DataFrame:
    """:func:`dispatch` for an ``async def`` function, whose ``run_list`` gives an awaitable.

    Its errors are raised when the coroutine is awaited, like every other error of an
    async map.
    """
    job = _Job.prepare(request)
    results: list[object] = await job.run(run_list) if job.runs else []
    return job.finish(results)


def _pop_columns(name: str, kwargs: dict[str, object]) -> tuple[Hashable, Hashable, bool, bool]:
    """Pop and check ``result_column=``, ``error_column=`` and ``expand=``.

    Returns ``(result_column, error_column, error_column given, expand)``.
    """
    result_column: Hashable = kwargs.pop("result_column", None)
    error_column: Hashable = kwargs.pop("error_column", None)
    error_given = error_column is not None
    expand = kwargs.pop("expand", False)
    if not isinstance(expand, bool):
        raise ConfigurationError(f"{name}: expand must be True or False, got {expand!r}")
    if result_column is None:
        result_column = name
    if error_column is None:
        error_column = f"{result_column}_error"
    if result_column == error_column:
        raise ConfigurationError(
            f"{name}: result_column and error_column are both {result_column!r}; give them different names"
        )
    return result_column, error_column, error_given, expand


@dataclass(slots=True)
class _Job:
    """One validated pandas call: what to run and how to put the answers back."""

    data: pd.Series[Any] | pd.DataFrame
    #: Plain items for run_list: column values, or a ``Spread`` of each row's values.
    items: list[object]
    args: tuple[object, ...]
    kwargs: dict[str, object]
    result_column: Hashable
    error_column: Hashable
    expand: bool
    #: resume: the positions of the rows to run (None: every row) and the earlier results
    rows: list[int] | None = None
    previous: list[object] | None = None

    @classmethod
    def prepare(cls, request: Request) -> _Job:
        """Validate a call and build its items; nothing runs yet."""
        data, args, name, func = request.data, request.args, request.name, request.func
        kwargs = dict(request.kwargs)  # the caller's dict is not ours to change
        result_column, error_column, error_given, expand = _pop_columns(name, kwargs)
        signature = _signature(func)
        resume: object = None
        if "resume" in kwargs and (signature is None or "resume" not in signature.parameters):
            resume = kwargs.pop("resume")
        if isinstance(data, pd.Series):
            if error_given and not expand:
                raise ConfigurationError(
                    f"{name}: error_column= applies to DataFrames (or to expand=True); "
                    "a Series result holds each failed item's exception in place"
                )
            _check_bind(name, signature, (None, *args), kwargs)
            job = cls(data, data.tolist(), args, kwargs, result_column, error_column, expand)
            if resume is not None and resume is not False:
                job.resume_series(name, resume)
            return job

        if not isinstance(data, pd.DataFrame):  # opmap only routes pandas objects here
            raise ConfigurationError(
                f"{name}: expected a pandas Series or DataFrame, got {type(data).__name__}"
            )
        resuming = _resuming(name, resume, expand)
        if not resuming:
            _check_free(name, data, result_column, error_column, expand)
        items, rest = _frame_items(name, data, args, kwargs, func, signature)
        job = cls(data, items, rest, kwargs, result_column, error_column, expand)
        if resuming:
            job.resume_frame()
        return job

    def resume_frame(self) -> None:
        """``resume=True``: run the rows whose error cell is set, or every row when the frame
        does not hold both columns of an earlier run."""
        df = self.data
        assert isinstance(df, pd.DataFrame)
        if self.result_column not in df.columns or self.error_column not in df.columns:
            return
        self.previous = df[self.result_column].tolist()
        self.rows = resume_rows(df[self.error_column].tolist())
        errors = df[self.error_column].tolist()
        for i in self.rows:
            self.previous[i] = errors[i]  # a rerun row's earlier outcome: its error

    def resume_series(self, name: str, previous: object) -> None:
        """``fn(series, resume=earlier)``: run the items whose earlier result is an exception."""
        if not isinstance(previous, Iterable):
            raise ConfigurationError(
                f"{name}: resume= takes the Series or list an earlier call returned, "
                f"got {type(previous).__name__}"
            )
        earlier = previous.tolist() if isinstance(previous, pd.Series) else list(previous)
        if len(earlier) != len(self.items):
            raise ConfigurationError(
                f"{name}: resume= holds {len(earlier)} earlier results for {len(self.items)} items"
            )
        self.previous = earlier
        self.rows = [i for i, r in enumerate(earlier) if isinstance(r, BaseException)]

    @property
    def runs(self) -> bool:
        """Whether any row is to run (an empty frame, or a resume with nothing failed: no)."""
        return bool(self.items) and (self.rows is None or bool(self.rows))

    def run(self, run_list: RunList[Out]) -> Out:
        """Hand the items to opmap; a list of results (or an awaitable of one)."""
        rows, index = self.rows, self.data.index
        if rows is None:
            return run_list(self.items, self.args, self.kwargs, index.tolist())
        return run_list([self.items[i] for i in rows], self.args, self.kwargs, index[rows].tolist())

    def merged(self, results: Sequence[object]) -> Sequence[object]:
        """A resumed run's results for the rows that ran, with the earlier ones of the rest."""
        if self.rows is None or self.previous is None:
            return results
        full = list(self.previous)
        for i, value in zip(self.rows, results, strict=True):
            full[i] = value
        return full

    def finish(self, results: Sequence[object]) -> pd.Series[Any] | pd.DataFrame:
        """Put one result or exception per item back on the input's index."""
        results = self.merged(results)
        data = self.data
        if len(results) != len(data):
            raise RuntimeError(f"opmap returned {len(results)} results for {len(data)} rows")
        index = data.index
        if isinstance(data, pd.Series) and not self.expand:
            # Results and exceptions share one Series; pandas infers the dtype.
            return pd.Series(list(results), index=index, name=self.result_column)

        errors: list[BaseException | None] = [r if isinstance(r, BaseException) else None for r in results]
        new: dict[Hashable, pd.Series[Any]] = {}
        if self.expand:
            new.update(_expanded(results, errors, self.result_column, index))
        else:
            new[self.result_column] = _values(results, errors, index)
        new[self.error_column] = pd.Series(errors, index=index, dtype=object)

        # The caller's frame stays untouched: with copy-on-write (pandas 3) a shallow copy is
        # enough and free; without it, a deep copy keeps later edits of `out` off the input.
        out = pd.DataFrame(index=index) if isinstance(data, pd.Series) else data.copy(deep=not _cow(pd))
        for key, column in new.items():
            # Same index object on both sides, so pandas does not realign (duplicates are safe).
            out[key] = column
        return out


def _resuming(name: str, resume: object, expand: bool) -> bool:
    """Whether a DataFrame call resumes an earlier output frame (``resume=True``)."""
    if resume is None or resume is False:
        return False
    if resume is not True or expand:
        raise ConfigurationError(
            f"{name}: resume=True reruns the failed rows of an earlier output frame "
            f"(without expand=True); got resume={resume!r}" + (" with expand=True" if expand else "")
        )
    return True


def _frame_items(
    name: str,
    df: pd.DataFrame,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    func: Callable[..., object],
    signature: inspect.Signature | None,
) -> tuple[list[object], tuple[object, ...]]:
    """``(items, rest)`` of a DataFrame call: the column spec (first argument, or ``column=``)
    read into items (several columns: a ``Spread`` of each row's values, positional for a
    list, by keyword for a dict); ``rest`` are the arguments passed through."""
    if args:
        spec, rest = args[0], args[1:]
    elif "column" in kwargs and (signature is None or "column" not in signature.parameters):
        # df.pipe(enrich, column="address") reads naturally; it is only ours when the
        # function has no parameter of that name.
        spec, rest = kwargs.pop("column"), ()
    else:
        raise ConfigurationError(
            f"{name} got a DataFrame but no column to map over: name the column(s), e.g. "
            f"{name}(df, {_example(df)!r}) or df.pipe({name}, {_example(df)!r}); "
            f"columns: {_listing(df.columns)}"
        )
    # _check_bind gets None placeholders for row values: it checks arity and names only.
    if isinstance(spec, Mapping):
        names = _check_parameters(name, func, signature, spec, kwargs)
        columns = [_column(name, df, spec[param]) for param in names]
        rows = zip(*columns) if columns else (() for _ in range(len(df)))
        items: list[object] = [Spread((), dict(zip(names, row))) for row in rows]
        _check_bind(name, signature, rest, {**dict.fromkeys(names), **kwargs})
        return items, rest
    if isinstance(spec, list | pd.Index):
        if not len(spec):
            raise ConfigurationError(f"{name}: the list of columns is empty; columns: {_listing(df.columns)}")
        columns = [_column(name, df, key) for key in spec]
        _check_bind(name, signature, (*(None for _ in columns), *rest), kwargs)
        return [Spread(row, {}) for row in zip(*columns)], rest
    items = _column(name, df, spec)
    _check_bind(name, signature, (None, *rest), kwargs)
    return items, rest


def resume_rows(errors: Sequence[Any]) -> list[int]:  # cells of a frame: any dtype
    """Positions whose error cell is set (an exception: a failure, ``Cancelled``; or its text,
    in a frame read back from a file), not None or NaN."""
    return [
        i for i, e in enumerate(errors) if e is not None and not (pd.api.types.is_scalar(e) and pd.isna(e))
    ]


def _cow(pd: ModuleType) -> bool:
    """Whether pandas copies on write (always from pandas 3, opt-in before)."""
    return int(pd.__version__.split(".")[0]) >= 3 or bool(pd.get_option("mode.copy_on_write"))


def _values(
    results: Sequence[object], errors: list[BaseException | None], index: pd.Index[Any]
) -> pd.Series[Any]:
    """The result column: failed rows become a missing value of the inferred dtype."""
    if any(e is not None for e in errors):
        values = [None if e is not None else r for r, e in zip(results, errors)]
    else:
        values = list(results)
    if not values:
        return pd.Series(values, index=index, dtype=object)
    return pd.Series(values, index=index)


def _expanded(
    results: Sequence[object],
    errors: list[BaseException | None],
    result_column: Hashable,
    index: pd.Index[Any],
) -> dict[str, pd.Series[Any]]:
    """``<result_column>.<key>`` columns from dict results, keys in first-seen order.

    A row that returned None has missing values everywhere. A row that returned something
    other than a mapping cannot be spread; rather than drop its answer silently, its error
    cell gets a ``TypeError`` saying so (the row shows up with the failed ones).
    """
    keys: dict[Hashable, None] = {}
    rows: list[Mapping[object, object] | None] = []
    for i, (result, error) in enumerate(zip(results, errors)):
        if error is not None or result is None:
            rows.append(None)
        elif isinstance(result, Mapping):
            keys.update(dict.fromkeys(result))
            rows.append(result)
        else:
            errors[i] = TypeError(
                f"expand=True needs dict results, got {type(result).__name__}: {result!r:.80}"
            )
            rows.append(None)
    return {
        f"{result_column}.{key}": pd.Series(
            [row.get(key) if row is not None else None for row in rows], index=index
        )
        for key in keys
    }


def _column(name: str, df: pd.DataFrame, key: Hashable) -> list[object]:
    """One column's values as a plain list (Python scalars, fast, no per-row objects)."""
    try:
        hash(key)
        present = key in df.columns
    except TypeError:
        present = False
    if not present:
        hint = _closest(key, df.columns)
        raise ConfigurationError(
            f"{name}: column {key!r} is not in the DataFrame{hint}; available columns: {_listing(df.columns)}"
        )
    values = df[key]
    if isinstance(values, pd.DataFrame):
        raise ConfigurationError(
            f"{name}: column {key!r} appears {values.shape[1]} times in the DataFrame; "
            "rename the duplicates so each row has one value"
        )
    result: list[object] = values.tolist()
    return result


def _check_free(
    name: str, df: pd.DataFrame, result_column: Hashable, error_column: Hashable, expand: bool
) -> None:
    """Refuse to overwrite input columns: the input's data must survive untouched."""
    how = "pass result_column=/error_column= to choose other names, or select the input columns first"
    if expand:
        prefix = f"{result_column}."
        taken = [c for c in df.columns if isinstance(c, str) and c.startswith(prefix)]
        if taken:
            raise ConfigurationError(
                f"{name}: expand=True writes columns {prefix}<key>, but the DataFrame already has "
                f"{_listing(taken)}; {how}"
            )
    else:
        _check_unused(name, df, "result", result_column, how)
    _check_unused(name, df, "error", error_column, how)


def _check_unused(name: str, df: pd.DataFrame, kind: str, column: Hashable, how: str) -> None:
    if column in df.columns:
        raise ConfigurationError(
            f"{name}: the {kind} column {column!r} already exists in the DataFrame "
            f"(columns: {_listing(df.columns)}); {how}"
        )


def _check_parameters(
    name: str,
    func: Callable[..., object],
    signature: inspect.Signature | None,
    spec: Mapping[object, object],
    kwargs: Mapping[str, object],
) -> list[str]:
    """The parameter names of a ``{parameter: column}`` mapping, each one checked."""
    names = _parameter_names(name, spec, kwargs)
    if signature is None:
        return names
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return names  # **kwargs takes any name
    available = [p.name for p in params.values() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for param in names:
        if param not in params:
            raise ConfigurationError(
                f"{name}: the column dict names parameter {param!r}, but "
                f"{getattr(func, '__name__', name)}() has no such parameter"
                f"{_closest(param, available)}; its parameters are {available!r}"
            )
        if params[param].kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigurationError(
                f"{name}: parameter {param!r} is positional-only and cannot take a column by "
                "keyword; pass a list of columns instead"
            )
    return names


def _parameter_names(name: str, spec: Mapping[object, object], kwargs: Mapping[str, object]) -> list[str]:
    """The keys of a ``{parameter: column}`` mapping: names, each not given by keyword too."""
    if not spec:
        raise ConfigurationError(f"{name}: the {{parameter: column}} dict is empty")
    names: list[str] = []
    for param in spec:
        if not isinstance(param, str):
            raise ConfigurationError(
                f"{name}: the dict maps parameters to columns ({{parameter: column}}); "
                f"key {param!r} is not a parameter name"
            )
        if param in kwargs:
            raise ConfigurationError(
                f"{name}: parameter {param!r} gets both a column ({spec[param]!r}) and a keyword argument"
            )
        names.append(param)
    return names


def _check_bind(
    name: str, signature: inspect.Signature | None, args: Iterable[object], kwargs: Mapping[str, object]
) -> None:
    """Fail before any work when no row could be called: otherwise every row would fail
    the same way, after its retries and backoff sleeps."""
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(
            f"{name}{signature} cannot take the row values and arguments given: {exc}"
        ) from None


def _signature(func: Callable[..., object]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # builtins and C callables may have none
        return None


def _example(df: pd.DataFrame) -> object:
    return df.columns[0] if len(df.columns) else "column"


def _listing(columns: Iterable[object]) -> str:
    names = list(columns)
    if len(names) <= _MAX_LISTED:
        return repr(names)
    return f"{names[:_MAX_LISTED]!r} and {len(names) - _MAX_LISTED} more"


def _closest(key: object, candidates: Iterable[object]) -> str:
    if not isinstance(key, str):
        return ""
    names = [c for c in candidates if isinstance(c, str)]
    match = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
