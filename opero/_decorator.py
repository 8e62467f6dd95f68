"""``@opero``: one resilient call (retries, fallbacks, timeout, cache, rate limit, telemetry)."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar, Unpack, cast, overload

from ._errors import ConfigurationError
from ._keys import callable_name
from ._options import OperoOptions, Options, resolve_options
from ._policy import Plan
from ._telemetry import FunctionStats

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["OperoFunction", "build_plan", "check_decoratable", "opero", "qualified_name"]

P = ParamSpec("P")
R = TypeVar("R")
P2 = ParamSpec("P2")
S = TypeVar("S")


class OperoFunction(Protocol[P, R]):
    """What ``@opero`` returns: the function, same signature, plus ``stats``/``cache_clear``."""

    __wrapped__: Callable[P, R]

    @property
    def stats(self) -> FunctionStats:
        """Live counters of this function (see :class:`FunctionStats`)."""
        ...

    def cache_clear(self) -> None:
        """Drop this function's cached results."""
        ...

    def failures(self) -> pd.DataFrame:
        """Every failed call (the last 10,000) as a pandas DataFrame (notebook, issue 21)."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    # Methods: accessed on an instance, the first parameter (self) is bound.
    @overload
    def __get__(self, obj: None, owner: type | None = None) -> OperoFunction[P, R]: ...

    @overload
    def __get__(
        self: OperoFunction[Concatenate[S, P2], R], obj: S, owner: type | None = None
    ) -> OperoFunction[P2, R]: ...

    def __get__(self, obj: object, owner: type | None = None) -> object: ...


def qualified_name(func: Callable[..., object]) -> str:
    """``module.qualname`` of a function: its name in stats, logs and limiter scopes.

    A ``functools.partial`` is named after its function, a callable object after its class.
    """
    return callable_name(func)


def check_decoratable(func: object, decorator: str) -> None:
    """Refuse what cannot be decorated, at decoration time.

    Raises:
        ConfigurationError: ``func`` is a class.
        TypeError: ``func`` is not callable (``opero(42)``, ``opmap("x")``).
    """
    if isinstance(func, type):
        raise ConfigurationError(
            f"@{decorator} decorates functions, not classes: got class {func.__qualname__}. "
            "Decorate its methods (or its __call__) instead."
        )
    if isinstance(func, classmethod | staticmethod):
        return
    if not callable(func):
        shown = repr(func)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TypeError(
            f"{decorator}() takes a function, a functools.partial or a callable object; got "
            f"{type(func).__name__} {shown}. Options are keywords: @{decorator}(retries=3)."
        )


def build_plan(func: Callable[..., object], options: Options) -> Plan:
    """The call plan of ``func`` (shared by ``@opero`` and ``@opmap``)."""
    return Plan(func, options, qualified_name(func))


def _unwrap_method(
    func: Callable[..., object],
) -> tuple[Callable[..., object], Callable[[Callable[..., object]], object] | None]:
    if isinstance(func, classmethod):
        return func.__func__, classmethod
    if isinstance(func, staticmethod):
        return func.__func__, staticmethod
    return func, None


def _attach(wrapper: Callable[..., object], plan: Plan) -> None:
    # A wrapper pickled by value (cloudpickle, from __main__ or a notebook) is rebuilt from its
    # __dict__ in this order: the plan first (rebuilt there, registering its stats), then
    # ``stats`` (which unpickles as the registered stats of that name: the plan's) and
    # ``cache_clear`` (bound to the same rebuilt plan), so both stay the live plan's.
    attributes = vars(wrapper)  # a function's own attributes (what OperoFunction declares)
    attributes["_opero_plan"] = plan
    attributes["stats"] = plan.stats
    attributes["cache_clear"] = (
        functools.partial(_clear_cache_of, plan) if plan.cache is not None else _no_cache
    )
    # notebook (issue 21): plain calls have fn.failures() too (the log lives a layer above)
    plan.recorder.log_failures = True
    attributes["failures"] = functools.partial(_failures_of, plan.name)


def _failures_of(name: str) -> pd.DataFrame:
    """Every failed call of the function ``name`` as a pandas DataFrame (``fn.failures()``)."""
    frame: pd.DataFrame = importlib.import_module("opero._progress").failures_frame(name)
    return frame


def _clear_cache_of(plan: Plan) -> None:
    """Drop the cached results of ``plan``'s function."""
    if plan.cache is not None:
        plan.cache.clear()


def _no_cache() -> None:
    """Nothing to clear: this function does not cache."""


def _materialised(func: Callable[..., object]) -> Callable[..., object]:
    """A function that runs the generator ``func`` to the end and returns its values as a list.

    With ``cache=True`` a generator function's values are what gets cached (and retried): the
    plan calls this, the wrapper hands out a fresh generator over the list at every call.
    """
    if inspect.isasyncgenfunction(func):

        async def collect_async(*args: object, **kwargs: object) -> list[object]:
            return [value async for value in func(*args, **kwargs)]

        collected: Callable[..., object] = collect_async
    elif inspect.isgeneratorfunction(func):

        def collect(*args: object, **kwargs: object) -> list[object]:
            return list(func(*args, **kwargs))

        collected = collect
    else:  # _wrap sends only generator functions here
        raise TypeError(f"not a generator function: {func!r}")
    functools.update_wrapper(collected, func)
    vars(collected)["__opero_target__"] = func  # keys: the generator's own source, closure and name
    return collected


def _wrap_generator(func: Callable[..., object], options: Options) -> Callable[..., object]:
    plan = build_plan(_materialised(func), options)
    # the plan's function returns the generator's values as a list (said once, at decoration)
    if inspect.isasyncgenfunction(func):
        call_async = cast(
            "Callable[[tuple[object, ...], dict[str, object]], Awaitable[list[object]]]", plan.call_async
        )

        @functools.wraps(func)
        async def async_gen_wrapper(*args: object, **kwargs: object) -> AsyncIterator[object]:
            for value in await call_async(args, kwargs):
                yield value

        _attach(async_gen_wrapper, plan)
        return async_gen_wrapper

    call_sync = cast("Callable[[tuple[object, ...], dict[str, object]], list[object]]", plan.call_sync)

    @functools.wraps(func)
    def gen_wrapper(*args: object, **kwargs: object) -> Iterator[object]:
        # Still a generator function: nothing runs until the first next(), like the original;
        # then every value is produced (or read from the cache) at once and handed out.
        yield from call_sync(args, kwargs)

    _attach(gen_wrapper, plan)
    return gen_wrapper


def _wrap(func: Callable[..., object], options: Options) -> Callable[..., object]:
    if options.cache and (inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)):
        return _wrap_generator(func, options)
    plan = build_plan(func, options)
    # The plan's entry is the wrapper itself (its fast path without a frame in between).
    wrapper = functools.wraps(func)(plan.async_entry() if plan.is_async else plan.sync_entry())
    _attach(wrapper, plan)
    return wrapper


@overload
def opero(func: Callable[P, R], /) -> OperoFunction[P, R]: ...


@overload
def opero(
    func: None = None, /, **options: Unpack[OperoOptions]
) -> Callable[[Callable[P, R]], OperoFunction[P, R]]: ...


def opero(
    func: Callable[P, R] | None = None, /, **options: Unpack[OperoOptions]
) -> OperoFunction[P, R] | Callable[[Callable[P, R]], OperoFunction[P, R]]:
    """Make a function resilient: retries, fallbacks, timeout, cache, rate limit, telemetry.

    Use it bare (``@opero``) or with options (``@opero(retries=3, cache=True)``), on plain
    and ``async def`` functions, methods, classmethods and staticmethods. The result keeps
    the function's name, docstring and signature, exposes the original as ``__wrapped__``,
    and adds ``.stats`` and ``.cache_clear()``.

    Example:
        >>> from opero import opero
        >>> @opero(retries=2, cache=True)
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> double(21)
        42

    Args:
        func: the function, when used bare.
        **options: any option of the options reference (each with its type, default and
            meaning there; typed, so a type checker rejects a misspelt name). opmap's
            options (``mode``, ``workers``, ``ordered``, ``progress``, ``chunksize``) are
            accepted and ignored, so one option dict can feed both decorators.

    Raises:
        ConfigurationError: an unknown option or an invalid value, at decoration time.
    """

    def decorate(f: Callable[P, R]) -> OperoFunction[P, R]:
        check_decoratable(f, "opero")
        target, rewrap = _unwrap_method(f)
        wrapped = _wrap(target, resolve_options(options, target))
        # the wrapper built above, with the attributes OperoFunction declares (_attach)
        return cast("OperoFunction[P, R]", rewrap(wrapped) if rewrap is not None else wrapped)

    if func is not None:
        return decorate(func)
    resolve_options(options)  # fail at decoration time even before the function is known
    return decorate
