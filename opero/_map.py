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

            @functools.wraps(f)
            async def amap(items: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
                check(items)
                out: list[Any] = []
                for item in items:
                    try:
                        out.append(await plan.call_async((item, *args), kwargs))
                    except Exception as exc:
                        out.append(exc)
                return out

            amap.stats = plan.stats  # type: ignore[attr-defined]
            return amap

        @functools.wraps(f)
        def smap(items: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
            check(items)
            out: list[Any] = []
            for item in items:
                try:
                    out.append(plan.call_sync((item, *args), kwargs))
                except Exception as exc:
                    out.append(exc)
            return out

        smap.stats = plan.stats  # type: ignore[attr-defined]
        return smap

    if func is not None:
        return decorate(func)
    resolve_options(options)
    return decorate
