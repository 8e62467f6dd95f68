"""Type-checked, never run: what mypy --strict and pyright see of opero's public API.

Every line that must be rejected carries ``type: ignore[<mypy code>]``. tests/integration/test_typing.py
runs mypy with ``--warn-unused-ignores`` (so each expected error must really occur, and
nothing else may) and pyright with ignore comments disabled, asserting that it reports
errors on exactly those lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

import pandas as pd

import opero as opero_pkg
from opero import configure, opero, opmap
from opero._options import OperoOptions
from opero._telemetry import FunctionStats

# -- options are typed: misspelt names and wrong types are rejected -----------------------


@opero(retires=2)  # type: ignore[call-overload, untyped-decorator]
def misspelt() -> None: ...


@opero(retries="3")  # type: ignore[call-overload, untyped-decorator]
def wrong_type() -> None: ...


@opmap(workers="4")  # type: ignore[call-overload, untyped-decorator]
def wrong_map_option(x: int) -> int:
    return x


configure(cache_backend="s3")  # type: ignore[arg-type]
configure(rate_limit=[10])  # type: ignore[arg-type]
configure(retries=2, cache=True, cache_backend="disk", rate_limit="auto", circuit_breaker={"failures": 3})
opero_pkg.configure(timeout=None, progress="auto", workers=-1)

# one config dict feeds both decorators
config: OperoOptions = {"retries": 2, "cache": True, "workers": 4}


@opero(**config)
def from_config(x: int) -> int:
    return x


# -- @opero keeps signatures ----------------------------------------------------------------


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

    @opmap(workers=2, progress=False)
    def lengths(self, text: str, scale: int = 1) -> int:
        return len(text) * scale


assert_type(add(1, b=2), int)
assert_type(add.stats, FunctionStats)
add.cache_clear()
add("x")  # type: ignore[arg-type]
assert_type(Client().get("k"), str)
assert_type(from_config(1), int)


async def use() -> None:
    assert_type(await fetch("u"), bytes)


# -- @opmap: lists, imap, methods -----------------------------------------------------------


@opmap(workers=4, progress=False)
def square(x: int) -> int:
    return x * x


@opmap
async def download(url: str) -> bytes:
    return url.encode()


assert_type(square([1, 2, 3]), list[int | BaseException])
assert_type(square.imap(range(10)), Iterator[int | BaseException])
square(["a"])  # type: ignore[list-item]
assert_type(square.stats, FunctionStats)
assert_type(Client().lengths(["ab", "c"]), list[int | BaseException])
assert_type(Client().lengths(["ab"], scale=2), list[int | BaseException])
assert_type(Client().lengths.imap(["ab"]), Iterator[int | BaseException])
Client().lengths([1, 2])  # type: ignore[list-item]


async def use_map() -> None:
    assert_type(await download(["u"]), list[bytes | BaseException])
    assert_type(download.imap(["u"]), AsyncIterator[bytes | BaseException])


# -- pandas: a Series gives a Series, a DataFrame (and df.pipe) a DataFrame ----------------

frame = pd.DataFrame({"n": [1, 2]})
assert_type(square(frame, "n"), pd.DataFrame)
assert_type(square(frame, ["n"], result_column="sq"), pd.DataFrame)
assert_type(frame.pipe(square, "n"), pd.DataFrame)
series: pd.Series[int] = pd.Series([1, 2])
assert_type(square(series), pd.Series[Any])


async def use_pandas() -> None:
    assert_type(await download(frame, "n"), pd.DataFrame)
