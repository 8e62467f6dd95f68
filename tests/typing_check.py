"""Type-checked by mypy (not run by pytest): the decorators keep signatures (ParamSpec)."""

from __future__ import annotations

from typing import assert_type

from opero import opero
from opero._telemetry import FunctionStats


@opero(retries=2)
def add(a: int, b: int = 1) -> int:
    return a + b


@opero
async def fetch(url: str) -> bytes:
    return url.encode()


class Client:
    @opero(cache=True)
    def get(self, key: str) -> str:
        return key


assert_type(add(1, b=2), int)
assert_type(add.stats, FunctionStats)
add.cache_clear()
assert_type(Client().get("k"), str)


async def use() -> None:
    assert_type(await fetch("u"), bytes)
