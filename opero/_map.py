"""``@opmap``: placeholder until the executors land (sequential, same contract)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._decorator import build_plan
from ._errors import ConfigurationError
from ._options import resolve_options

__all__ = ["opmap"]


def opmap(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function of one item into a resilient function of many (SPEC §5)."""

    def decorate(f: Callable[..., Any]) -> Any:
        import functools

        plan = build_plan(f, resolve_options(options, f))

        def check(items: Any) -> None:
            if isinstance(items, str | bytes):
                raise ConfigurationError("opmap got a str/bytes; pass an iterable of items")

        if plan.is_async:

            async def arun(
                items: Iterable[Any],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
                *,
                spread: str | None = None,
                names: list[str] | None = None,
            ) -> list[Any]:
                out: list[Any] = []
                for item in items:
                    try:
                        out.append(await plan.call_async(*_spread(item, args, kwargs, spread, names)))
                    except Exception as exc:
                        out.append(exc)
                return out

            @functools.wraps(f)
            async def amap(items: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
                check(items)
                if _is_pandas(items):  # pandas hook (SPEC §9)
                    from . import pandas as opd

                    return await opd.dispatch(
                        arun, items, args, kwargs, name=f.__name__, is_async=True, func=f
                    )
                return await arun(items, args, kwargs)

            amap.stats = plan.stats  # type: ignore[attr-defined]
            return amap

        def run(
            items: Iterable[Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            *,
            spread: str | None = None,
            names: list[str] | None = None,
        ) -> list[Any]:
            out: list[Any] = []
            for item in items:
                try:
                    out.append(plan.call_sync(*_spread(item, args, kwargs, spread, names)))
                except Exception as exc:
                    out.append(exc)
            return out

        @functools.wraps(f)
        def smap(items: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
            check(items)
            if _is_pandas(items):  # pandas hook (SPEC §9)
                from . import pandas as opd

                return opd.dispatch(run, items, args, kwargs, name=f.__name__, is_async=False, func=f)
            return run(items, args, kwargs)

        smap.stats = plan.stats  # type: ignore[attr-defined]
        return smap

    if func is not None:
        return decorate(func)
    resolve_options(options)
    return decorate


def _is_pandas(items: Any) -> bool:
    """pandas hook: True for a Series/DataFrame, without importing pandas (SPEC §1)."""
    import sys

    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(items, pd.Series | pd.DataFrame)


def _spread(
    item: Any, args: tuple[Any, ...], kwargs: dict[str, Any], spread: str | None, names: list[str] | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """pandas hook: the call's (args, kwargs) for one item under run_list's spread contract."""
    if spread == "positional":
        return (*item, *args), kwargs
    if spread == "keyword":
        return args, {**dict(zip(names or (), item)), **kwargs}
    return (item, *args), kwargs
