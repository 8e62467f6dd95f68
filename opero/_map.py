"""``@opmap``: a resilient parallel map.

This module owns what the caller sees: input checks (str/bytes refused, generators consumed
lazily, pandas handed to ``opero._pandas``), one result slot per item in input or completion
order, the progress bar, and the ``item_failed`` events. Where items run is ``executors``'
business; how one item runs is the Plan's (``_policy``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Concatenate, Unpack, overload

from ._batch import batch_plan
from ._compat import mark_coroutine_function
from ._decorator import build_plan, check_decoratable
from ._errors import ConfigurationError, portable
from ._map_batched import BatchedRuns
from ._map_flights import MapFlights
from ._map_results import MISSING, Release, finish, from_thread, place, then
from ._map_types import AsyncMapFunction, MapFunction, OpmapDecorator, P, R, T
from ._options import OperoOptions, Options, resolve_options
from ._policy import Plan
from ._progress import FailureLog, MapProgress, keep_interrupted, new_failure_log
from .executors import async_outcomes, default_workers, sync_outcomes
from .executors._chunks import ListSource, MapCall, Outcome, Run, Window
from .executors.dask import joblib_config

if TYPE_CHECKING:  # the types only: `import opero` never imports pandas
    import pandas as pd

__all__ = ["AsyncMapFunction", "MapFunction", "opmap"]

#: items a streamed map may hold between the input and the caller (bounded memory)
_STREAM_WINDOW = 4096
_UNBOUNDED = 1 << 62


def _is_pandas(items: object) -> bool:
    # Detect without importing pandas (import opero stays light).
    return type(items).__module__.startswith("pandas")


def _checked(name: str, items: object) -> Iterable[object]:
    """``items``, refused when it is no iterable of items (a str is one: of characters)."""
    if isinstance(items, str | bytes | bytearray):
        raise ConfigurationError(
            f"{name} got a {type(items).__name__} as items; it would map over its characters. "
            "Pass an iterable of items, e.g. a list: fn([text])"
        )
    if not isinstance(items, Iterable):
        raise ConfigurationError(
            f"{name} needs an iterable of items as its first argument, got {type(items).__name__}"
        )
    return items


class _Engine:
    """One decorated function's map machinery (shared by every call and bound method)."""

    def __init__(self, func: Callable[..., object], options: Options, plan: Plan | None = None) -> None:
        self.func = func
        self.options = options
        # a given plan is a parent's, rebuilt here (``_Mapped.__reduce__``)
        self.plan: Plan = build_plan(func, options) if plan is None else plan
        self.plan.in_map = True  # an open breaker makes items wait for its probe, not fail
        self.name = self.plan.name
        self.is_async = self.plan.is_async
        self.mode = options.mode or ("async" if self.is_async else "thread")
        #: every failed item of this function (``fn.failures()``)
        self.failures: FailureLog = new_failure_log(self.name)
        #: with ``batch_size``: the batch maps (``opero._batch``)
        self.batched: BatchedRuns | None = None
        if options.batch_size is not None:
            self.batched = BatchedRuns(
                batch_plan(self.plan), options.batch_size, self._progress, self._account, self._batches_async
            )
        #: the last list map's results, also when interrupted (``fn.last_results()``)
        self.last_results: list[object] | None = None

    # -- one call ----------------------------------------------------------------------------

    def _call(
        self,
        prefix: tuple[object, ...],
        items: Iterable[object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
    ) -> MapCall:
        try:
            total: int | None = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
        opts = self.options
        workers = opts.workers
        if workers is None and self.mode in ("thread", "process"):
            config = joblib_config()
            if config is not None and config[1] is not None and config[1] > 0:
                workers = config[1]
        if workers is None:
            workers = default_workers(self.mode)
        elif workers < 0:  # joblib's convention: -1 every CPU, -2 all but one, ...
            workers = max(1, (os.cpu_count() or 1) + 1 + workers)
        chunksize = None if opts.chunksize == "auto" else int(opts.chunksize)
        return MapCall(self.plan, self.mode, workers, chunksize, prefix, args, kwargs, total)

    def _progress(self, call: MapCall, labels: Sequence[object] | None = None) -> MapProgress:
        stats = self.plan.stats
        return MapProgress(
            self.name,
            call.total,
            self.options.progress,
            lambda: stats.retries,
            stop=call.stop,
            labels=labels,
            failures=self.failures,
            workers=call.workers,  # notebook: in flight is never shown above the workers
        )

    def _account(self, batch: list[Outcome] | Run, progress: MapProgress) -> None:
        rec = self.plan.recorder
        if isinstance(batch, Run):  # consecutive items: only the failed ones need a step
            for pos, item in batch.failed.items():
                value = batch.values[pos] = portable(batch.values[pos])
                progress.item_failed(batch.start + pos, item, value)
                rec.emit("item_failed", error=value, item=item)
            progress.advance(len(batch), len(batch.failed))
            return
        failed = 0
        for pos, (idx, ok, value, item) in enumerate(batch):
            if not ok:
                failed += 1
                # Results hold errors that pickle and hash (cell caching, saving a frame): one
                # holding an open response (urllib's HTTPError) becomes a faithful RemoteError.
                value = portable(value)
                batch[pos] = (idx, ok, value, item)
                # Recorded here, with the item's own final error and its position: the
                # failure log never has to match errors to items afterwards.
                progress.item_failed(idx, item, value)
                rec.emit("item_failed", error=value, item=item)
        progress.advance(len(batch), failed)

    def _source(
        self, call: MapCall, items: Iterable[object], progress: MapProgress, window: Window
    ) -> tuple[Iterator[tuple[int, object]], MapFlights | None]:
        # Counts the items handed to the executor, so "in flight" is real in every mode:
        # progress reads the counter that numbers them (no Python step per item).
        plain = not (call.prefix or call.args or call.kwargs or self.is_async)
        if plain and type(items) is list and call.mode == "thread" and not MapFlights.wanted(self.plan):
            # a plain thread map over a list: lanes take slices of it, no (index, item) pairs
            listed = ListSource(items)
            progress.count_taken(lambda: listed.taken)
            return listed, None
        counter = itertools.count()
        progress.count_taken(counter)
        pairs: Iterator[tuple[int, object]] = zip(counter, items)
        if not MapFlights.wanted(self.plan):
            return pairs, None
        # Each distinct call once: duplicates of a key in flight wait here, not in a worker.
        flights = MapFlights(self.plan, call.prefix, call.args, call.kwargs, window)
        return flights.source(pairs), flights

    def run_list(
        self, prefix: tuple[object, ...], items: object, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        """The whole map: a list (or, for ``async def``, an awaitable of it)."""
        __tracebackhide__ = True  # notebook (issue 21)
        if _is_pandas(items):
            return self._pandas(prefix, items, args, kwargs)
        checked = _checked(self.name, items)
        if "resume" in kwargs and self._resume_is_ours():
            kwargs = dict(kwargs)
            return self._resume(prefix, checked, kwargs.pop("resume"), args, kwargs)
        call = self._call(prefix, checked, args, kwargs)
        if self.is_async:
            return self._list_async(call, checked)
        return self._list_sync(call, checked)

    # -- resume: rerun only what failed ----------------------------------------------------------

    def _resume_is_ours(self) -> bool:
        # ``resume=`` belongs to the map unless the function has a parameter of that name.
        try:
            return "resume" not in inspect.signature(self.func).parameters
        except (TypeError, ValueError):
            return True

    def _resume(
        self,
        prefix: tuple[object, ...],
        items: Iterable[object],
        previous: object,
        args: tuple[object, ...],
        kwargs: dict[str, object],
    ) -> object:
        """``fn(items, resume=earlier)``: run the items whose earlier result is an exception."""
        if previous is None:
            return self.run_list(prefix, items, args, kwargs)
        items = list(items)
        if not isinstance(previous, Iterable):
            raise ConfigurationError(
                f"{self.name}: resume= takes the list an earlier call returned, got {type(previous).__name__}"
            )
        earlier = list(previous)
        if len(earlier) != len(items):
            raise ConfigurationError(
                f"{self.name}: resume= holds {len(earlier)} earlier results for {len(items)} items; "
                "pass the list an earlier call of the same items returned"
            )
        rows = [i for i, r in enumerate(earlier) if isinstance(r, BaseException)]
        todo = [items[i] for i in rows]

        def merge(fresh: list[object]) -> list[object]:
            for i, value in zip(rows, fresh, strict=True):
                earlier[i] = value
            return earlier

        if self.is_async:
            return then(
                self._list_async(self._call(prefix, todo, args, kwargs), todo) if rows else None, merge
            )
        return merge(self._list_sync(self._call(prefix, todo, args, kwargs), todo) if rows else [])

    def _list_sync(
        self, call: MapCall, items: Iterable[object], labels: Sequence[object] | None = None
    ) -> list[object]:
        __tracebackhide__ = True  # notebook (issue 21): IPython shows an interrupt without opero frames
        if self.batched is not None:
            return self.batched.run_sync(call, items, labels)
        progress, results, source, flights, window = self._begin_list(call, items, labels)
        try:
            for batch in sync_outcomes(call, source, window):
                self._land(batch, flights, progress, results)
        except BaseException as exc:  # notebook (issue 21): keep what was done (last_results)
            self._keep(call, results, progress, items, exc)
            raise
        return self._end_list(call, progress, results)

    async def _list_async(
        self, call: MapCall, items: Iterable[object], labels: Sequence[object] | None = None
    ) -> list[object]:
        __tracebackhide__ = True  # notebook (issue 21): IPython shows an interrupt without opero frames
        if self.batched is not None:
            return await self.batched.run_async(call, items, labels)
        progress, results, source, flights, window = self._begin_list(call, items, labels)
        try:
            async for batch in self._batches_async(call, source, window):
                self._land(batch, flights, progress, results)
        except BaseException as exc:  # notebook (issue 21): keep what was done (last_results)
            self._keep(call, results, progress, items, exc)
            raise
        return self._end_list(call, progress, results)

    def _begin_list(
        self, call: MapCall, items: Iterable[object], labels: Sequence[object] | None
    ) -> tuple[MapProgress, list[object], Iterator[tuple[int, object]], MapFlights | None, Window]:
        window = Window(_UNBOUNDED)
        progress = self._progress(call, labels)
        results: list[object] = []
        self.last_results = results  # notebook (issue 21): fn.last_results()
        source, flights = self._source(call, items, progress, window)
        return progress, results, source, flights, window

    def _land(
        self,
        batch: list[Outcome],
        flights: MapFlights | None,
        progress: MapProgress,
        results: list[object],
    ) -> None:
        if flights is not None:
            batch = flights.expand(batch)
        self._account(batch, progress)
        place(results, batch, self.options.ordered)

    def _keep(
        self,
        call: MapCall,
        results: list[object],
        progress: MapProgress,
        items: Iterable[object],
        exc: BaseException,
    ) -> None:
        """An interrupted list map: stop it and keep what was done (``fn.last_results()``).

        An interrupt is raised again here without its executor frames.
        """
        __tracebackhide__ = True  # notebook (issue 21): IPython shows an interrupt without opero frames
        call.stop.set()
        keep_interrupted(results, MISSING, progress, items, self.options.ordered)
        if isinstance(exc, KeyboardInterrupt):
            raise exc.with_traceback(None) from None

    @staticmethod
    def _end_list(call: MapCall, progress: MapProgress, results: list[object]) -> list[object]:
        call.stop.set()
        progress.close(cancelled=finish(results, progress, call.total))
        return results

    def _batches_async(
        self, call: MapCall, source: Iterator[tuple[int, object]], window: Window
    ) -> AsyncIterator[list[Outcome]]:
        if call.mode == "async":
            return async_outcomes(call, source, window)
        # thread/process/dask from async code: the blocking driver runs in a helper thread
        return from_thread(lambda: sync_outcomes(call, source, window), call)

    # -- streaming ---------------------------------------------------------------------------

    def imap(
        self, prefix: tuple[object, ...], items: object, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        """Stream results: a generator (an async generator for ``async def``)."""
        checked = _checked(self.name, items)
        call = self._call(prefix, checked, args, kwargs)
        if self.batched is not None:
            stream = self.batched.stream_async if self.is_async else self.batched.stream_sync
            return stream(call, checked, _STREAM_WINDOW)
        if self.is_async:
            return self._imap_async(call, checked)
        return self._imap_sync(call, checked)

    def _imap_sync(self, call: MapCall, items: Iterable[object]) -> Iterator[object]:
        window = Window(_STREAM_WINDOW)
        progress = self._progress(call)
        pairs, flights = self._source(call, items, progress, window)
        source = sync_outcomes(call, pairs, window)
        release = Release(window, self.options.ordered)
        interrupted = True
        try:
            for batch in source:
                if flights is not None:
                    batch = flights.expand(batch)
                self._account(batch, progress)
                yield from release(batch)
            interrupted = False
        finally:
            call.stop.set()
            window.close()
            source.close()  # type: ignore[attr-defined]
            progress.close(interrupted=interrupted)

    async def _imap_async(self, call: MapCall, items: Iterable[object]) -> AsyncIterator[object]:
        window = Window(_STREAM_WINDOW)
        progress = self._progress(call)
        pairs, flights = self._source(call, items, progress, window)
        batches = self._batches_async(call, pairs, window)
        release = Release(window, self.options.ordered)
        interrupted = True
        try:
            async for batch in batches:
                if flights is not None:
                    batch = flights.expand(batch)
                self._account(batch, progress)
                for value in release(batch):
                    yield value
            interrupted = False
        finally:
            call.stop.set()
            window.close()
            await batches.aclose()  # type: ignore[attr-defined]
            progress.close(interrupted=interrupted)

    # -- pandas ------------------------------------------------------------------------------

    def _pandas(
        self, prefix: tuple[object, ...], data: object, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        # Loaded by name: the pandas adapter sits above the map (it calls back into it) and
        # is imported only for pandas input, so `import opero` never imports pandas.
        pandas = importlib.import_module("opero._pandas")
        func = functools.partial(self.func, *prefix) if prefix else self.func
        name = getattr(self.func, "__name__", self.name)

        def run_sync(
            values: list[object], a: tuple[object, ...], kw: dict[str, object], labels: list[Hashable], /
        ) -> list[object]:
            return self._list_sync(self._call(prefix, values, a, kw), values, labels)

        def run_async(
            values: list[object], a: tuple[object, ...], kw: dict[str, object], labels: list[Hashable], /
        ) -> Awaitable[list[object]]:
            return self._list_async(self._call(prefix, values, a, kw), values, labels)

        request = pandas.Request(data, args, kwargs, name, func)
        if self.is_async:
            return pandas.dispatch_async(run_async, request)
        return pandas.dispatch(run_sync, request)


class _Mapped:
    """The object ``@opmap`` returns; binds like a function when it is a method."""

    def __init__(
        self, func: Callable[..., object], options: Options, kind: str | None, plan: Plan | None = None
    ) -> None:
        functools.update_wrapper(self, func)
        self._engine = _Engine(func, options, plan)
        self._kind = kind
        plan = self._engine.plan
        self.stats = plan.stats
        self.cache_clear: Callable[[], None] = plan.cache.clear if plan.cache is not None else _no_cache
        self._opero_plan = plan
        if self._engine.is_async:
            mark_coroutine_function(self)  # iscoroutinefunction(fn), as for the function it wraps

    def __call__(self, items: object, /, *args: object, **kwargs: object) -> object:
        __tracebackhide__ = True  # notebook (issue 21)
        try:
            return self._engine.run_list((), items, args, kwargs)
        except KeyboardInterrupt as exc:  # notebook (issue 21): the traceback ends here
            raise exc.with_traceback(None) from None

    def last_results(self) -> list[object] | None:
        """The last map's results (None before any), also after a ``KeyboardInterrupt``.

        An interrupted map keeps what finished; each item that was running at that moment
        holds ``opero.Cancelled`` (and is counted in ``fn.stats["cancelled"]`` and listed in
        ``fn.failures()``), as does each item that had not started.
        """
        return self._engine.last_results

    def imap(self, items: object, /, *args: object, **kwargs: object) -> object:
        """Stream results in order (completion order with ``ordered=False``), bounded memory."""
        return self._engine.imap((), items, args, kwargs)

    def failures(self) -> pd.DataFrame:
        """Every failed item of this function's maps as a pandas DataFrame, newest last.

        Columns: ``item`` (the row index for DataFrame rows, a short repr otherwise),
        ``error_type``, ``status`` (the HTTP status of HTTP errors) and ``message`` of the
        item's own final error (the last attempt's), ``attempts``, ``time`` (a timestamp)
        and ``call`` (which map run, e.g. ``"fetch #2"``).
        The last 10,000 failures are kept; ``fn.stats.failures`` counts all of them.
        """
        return self._engine.failures.frame()

    def __get__(self, obj: object, owner: type | None = None) -> _Mapped | _Bound:
        if self._kind == "staticmethod":
            return self
        if self._kind == "classmethod":
            return _Bound(self, owner if owner is not None else type(obj))
        if obj is None:
            return self
        return _Bound(self, obj)

    def __repr__(self) -> str:
        return f"<opmap {self._engine.name} mode={self._engine.mode}>"

    def __reduce__(self) -> tuple[object, ...]:
        # A class defined in a notebook travels by value to process workers, with its
        # opmap'd methods: the plan travels by its one route (``rebuild``: the parent's limiter,
        # breaker and pace, no locks), the map machinery is built around it there.
        engine = self._engine
        return (_Mapped, (self.__wrapped__, engine.options, self._kind, engine.plan))  # type: ignore[attr-defined]


class _Bound:
    """An opmap'd method bound to its instance (or class): items come after ``self``."""

    __slots__ = ("__wrapped__", "_mapped", "_self")

    def __init__(self, mapped: _Mapped, bound: object) -> None:
        self._mapped = mapped
        self._self = bound
        self.__wrapped__ = functools.partial(mapped.__wrapped__, bound)  # type: ignore[attr-defined]

    def __call__(self, items: object, /, *args: object, **kwargs: object) -> object:
        return self._mapped._engine.run_list((self._self,), items, args, kwargs)

    def imap(self, items: object, /, *args: object, **kwargs: object) -> object:
        """Stream results (see ``opmap``)."""
        return self._mapped._engine.imap((self._self,), items, args, kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._mapped, name)

    def __repr__(self) -> str:
        return f"<bound {self._mapped!r} of {self._self!r}>"


def _no_cache() -> None:
    """Nothing to clear: this function does not cache."""


@overload
def opmap(func: Callable[Concatenate[T, P], Awaitable[R]], /) -> AsyncMapFunction[T, P, R]: ...  # type: ignore[overload-overlap]


@overload
def opmap(func: Callable[Concatenate[T, P], R], /) -> MapFunction[T, P, R]: ...


@overload
def opmap(func: None = None, /, **options: Unpack[OperoOptions]) -> OpmapDecorator: ...


def opmap(func: Callable[..., object] | None = None, /, **options: Unpack[OperoOptions]) -> object:
    """Turn a function of one item into a resilient, parallel function of many.

    ``fn(items, *args, **kwargs)`` calls ``func(item, *args, **kwargs)`` for every item, each
    call with the full resilience of ``@opero`` (retries, fallbacks, timeout, cache, rate
    limit), and returns a list with one entry per item: the result or, for an item that
    failed, its exception. One bad item never fails the map. ``fn.imap(items)`` streams the
    results with bounded memory. An ``async def`` function gives an awaitable (and an async
    generator for ``imap``). On a method, the items are the first argument after ``self``.

    Example:
        >>> from opero import opmap
        >>> @opmap(mode="thread", workers=4, progress=False)
        ... def square(x: int) -> int:
        ...     return x * x
        >>> square([1, 2, 3])
        [1, 4, 9]

    Args:
        func: the function, when used bare.
        **options: any option of ``@opero`` plus ``mode`` ("thread", "process", "async",
            "async_process", "dask"; default "async" for ``async def``, else "thread"),
            ``workers`` (-1: every CPU), ``ordered``, ``progress`` and ``chunksize``; see
            the options reference.

    Raises:
        ConfigurationError: an unknown option or an invalid value, at decoration time; a
            ``str``/``bytes`` passed as items, at call time.
    """

    if func is not None:
        return _decorate(func, options)
    resolve_options(options)  # fail at decoration time even before the function is known
    return functools.partial(_decorate, options=options)


def _decorate(f: Callable[..., object], options: OperoOptions) -> _Mapped:
    check_decoratable(f, "opmap")
    kind: str | None = None
    target: Callable[..., object] = f
    if isinstance(f, classmethod):
        kind, target = "classmethod", f.__func__
    elif isinstance(f, staticmethod):
        kind, target = "staticmethod", f.__func__
    return _Mapped(target, resolve_options(options, target), kind)
