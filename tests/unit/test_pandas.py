"""opmap over pandas Series and DataFrame columns (SPEC §9)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest

from opero import AllFailedError, ConfigurationError, opmap


@opmap(progress=False, retries=1)
def enrich(address: str) -> int:
    """Length of an address; addresses containing 'bad' always fail."""
    if "bad" in address:
        raise ValueError(f"cannot enrich {address!r}")
    return len(address)


@opmap(progress=False, retries=0)
def locate(address: str, scale: float = 1.0) -> dict[str, float]:
    """A dict result for expand=True; 'bad' addresses fail."""
    if "bad" in address:
        raise ValueError(address)
    return {"lat": len(address) * scale, "lon": -len(address) * scale}


def addresses() -> pd.DataFrame:
    """A small frame with one failing row."""
    return pd.DataFrame({"address": ["1 Main St", "bad road", "22 Elm St"], "n": [1, 2, 3]})


# -- Series --------------------------------------------------------------------------------


def test_series_in_series_out() -> None:
    """A Series gives a Series on the same index, named after the function."""
    s = pd.Series(["ab", "abc", "a"], index=pd.Index([10, 20, 30], name="row"), name="address")
    out = enrich(s)
    assert isinstance(out, pd.Series)
    assert out.name == "enrich"
    pd.testing.assert_index_equal(out.index, s.index)
    assert out.tolist() == [2, 3, 1]


def test_series_failed_item_holds_exception() -> None:
    """A failed item's cell holds its exception, the others their results."""
    out = enrich(pd.Series(["ok", "bad", "fine"]))
    assert out[0] == 2
    assert out[2] == 4
    assert isinstance(out[1], AllFailedError)
    assert isinstance(out[1].__cause__, ValueError)
    assert len(out[1].errors) == 2  # retries=1: two rounds


def test_series_result_column_renames() -> None:
    """result_column= names the returned Series."""
    out = enrich(pd.Series(["ab"]), result_column="length")
    assert out.name == "length"
    assert out.tolist() == [2]


def test_series_expand_gives_frame() -> None:
    """expand=True on a Series gives a frame of <name>.<key> columns plus the error column."""
    s = pd.Series(["ab", "bad"], index=["x", "y"])
    out = locate(s, expand=True)
    assert list(out.columns) == ["locate.lat", "locate.lon", "locate_error"]
    assert out.loc["x", "locate.lat"] == 2.0
    assert np.isnan(out.loc["y", "locate.lat"])
    assert isinstance(out.loc["y", "locate_error"], AllFailedError)


# -- DataFrame: column forms -----------------------------------------------------------------


def test_dataframe_one_column_via_pipe() -> None:
    """df.pipe(fn, column) adds <name> and <name>_error after the input's columns."""
    df = addresses()
    out = df.pipe(enrich, "address")
    assert list(out.columns) == ["address", "n", "enrich", "enrich_error"]
    assert out["enrich"].iloc[0] == 9
    assert out["enrich"].iloc[2] == 9
    assert out["enrich_error"].iloc[0] is None
    assert out["enrich_error"].iloc[2] is None


def test_failed_row_has_missing_result_and_exception() -> None:
    """A failed row's result is NaN in a numeric column and its error cell says why."""
    out = addresses().pipe(enrich, "address")
    assert out["enrich"].dtype == np.float64  # ints with a missing value: pandas' inference
    assert np.isnan(out["enrich"].iloc[1])
    error = out["enrich_error"].iloc[1]
    assert isinstance(error, AllFailedError)
    assert "cannot enrich 'bad road'" in str(error)


def test_failed_row_missing_value_for_object_results() -> None:
    """With string results a failed row's cell is a missing value too."""

    @opmap(progress=False, retries=0)
    def shout(text: str) -> str:
        if text == "bad":
            raise ValueError(text)
        return text.upper()

    out = pd.DataFrame({"t": ["a", "bad"]}).pipe(shout, "t")
    assert out["shout"].iloc[0] == "A"
    assert pd.isna(out["shout"].iloc[1])


def test_non_retryable_exception_lands_unchanged() -> None:
    """An exception retry_on rejects is stored as itself, not wrapped."""

    @opmap(progress=False, retry_on=TimeoutError)
    def lookup(key: str) -> int:
        return {"a": 1}[key]

    out = pd.DataFrame({"k": ["a", "zz"]}).pipe(lookup, "k")
    assert out["lookup"].iloc[0] == 1
    assert type(out["lookup_error"].iloc[1]) is KeyError


def test_list_of_columns_are_positional() -> None:
    """A list of columns passes each row's values as the first positional arguments."""

    @opmap(progress=False)
    def describe(street: str, number: int, sep: str = " ") -> str:
        return f"{number}{sep}{street}"

    df = pd.DataFrame({"street": ["Main", "Elm"], "no": [1, 22]})
    out = df.pipe(describe, ["street", "no"], "-")
    assert out["describe"].tolist() == ["1-Main", "22-Elm"]


def test_dict_of_columns_are_keywords() -> None:
    """A {parameter: column} dict passes each row's values by keyword."""

    @opmap(progress=False)
    def describe(street: str, number: int) -> str:
        return f"{number} {street}"

    df = pd.DataFrame({"s": ["Main", "Elm"], "no": [1, 22]})
    out = df.pipe(describe, {"number": "no", "street": "s"})
    assert out["describe"].tolist() == ["1 Main", "22 Elm"]


def test_column_keyword() -> None:
    """column= works as a keyword when the function has no parameter of that name."""
    out = addresses().pipe(enrich, column="address")
    assert out["enrich"].iloc[0] == 9


def test_items_are_plain_python_scalars() -> None:
    """Rows reach the function as Python scalars, not numpy scalars or per-row Series."""
    seen: list[type] = []

    @opmap(progress=False, mode="thread", workers=1)
    def record(a: Any, b: Any) -> None:
        seen.extend([type(a), type(b)])

    pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}).pipe(record, ["a", "b"])
    assert set(seen) == {int, float}


# -- pass-through arguments ------------------------------------------------------------------


def test_extra_args_and_kwargs_pass_through() -> None:
    """Extra positional and keyword arguments reach every call."""

    @opmap(progress=False)
    def scaled(x: int, factor: int, *, offset: int = 0) -> int:
        return x * factor + offset

    out = pd.DataFrame({"x": [1, 2, 3]}).pipe(scaled, "x", 10, offset=5)
    assert out["scaled"].tolist() == [15, 25, 35]


def test_arg_fallback_keys_pass_through() -> None:
    """keys=[...] for arg_fallback reach the calls; a revoked first key falls back."""
    used: list[str] = []

    @opmap(progress=False, arg_fallback="keys", retries=0, mode="thread", workers=1)
    def fetch(item: str, keys: list[str] | None = None) -> str:
        assert keys is not None
        if keys[0] == "revoked":
            raise PermissionError(keys[0])
        used.append(keys[0])
        return f"{item}:{keys[0]}"

    out = pd.DataFrame({"id": ["a", "b"]}).pipe(fetch, "id", keys=["revoked", "backup"])
    assert out["fetch"].tolist() == ["a:backup", "b:backup"]
    assert out["fetch_error"].isna().all()
    assert used == ["backup", "backup"]


def test_expand_spreads_dict_results() -> None:
    """expand=True replaces <name> with <name>.<key> columns; failed rows are NaN there."""
    out = addresses().pipe(locate, "address", expand=True)
    assert list(out.columns) == ["address", "n", "locate.lat", "locate.lon", "locate_error"]
    assert out["locate.lat"].iloc[0] == 9.0
    assert out["locate.lon"].iloc[2] == -9.0
    assert np.isnan(out["locate.lat"].iloc[1])
    assert isinstance(out["locate_error"].iloc[1], AllFailedError)


def test_expand_with_extra_kwargs_and_rename() -> None:
    """expand=True uses result_column= as the prefix and still passes kwargs through."""
    out = addresses().pipe(locate, "address", scale=2.0, expand=True, result_column="geo")
    assert list(out.columns[-3:]) == ["geo.lat", "geo.lon", "geo_error"]
    assert out["geo.lat"].iloc[0] == 18.0


def test_expand_non_dict_result_is_reported() -> None:
    """A non-dict result under expand=True shows up as a TypeError in the error cell."""

    @opmap(progress=False)
    def maybe(x: int) -> Any:
        return {"v": x} if x else 7

    out = pd.DataFrame({"x": [1, 0]}).pipe(maybe, "x", expand=True)
    assert out["maybe.v"].iloc[0] == 1
    assert np.isnan(out["maybe.v"].iloc[1])
    assert isinstance(out["maybe_error"].iloc[1], TypeError)
    assert "expand=True needs dict results" in str(out["maybe_error"].iloc[1])


def test_renamed_columns() -> None:
    """result_column= and error_column= rename the two new columns."""
    out = addresses().pipe(enrich, "address", result_column="length", error_column="why")
    assert list(out.columns) == ["address", "n", "length", "why"]
    assert isinstance(out["why"].iloc[1], AllFailedError)


# -- shape, index, dtypes, immutability -------------------------------------------------------


def test_empty_frame_gives_empty_result_with_both_columns() -> None:
    """An empty frame gives an empty frame with the input columns and both new ones."""
    df = pd.DataFrame({"address": pd.Series([], dtype=str), "n": pd.Series([], dtype="int64")})
    out = df.pipe(enrich, "address")
    assert out.empty
    assert list(out.columns) == ["address", "n", "enrich", "enrich_error"]
    assert out["n"].dtype == np.int64


def test_empty_series_gives_empty_series() -> None:
    """An empty Series gives an empty Series named after the function."""
    out = enrich(pd.Series([], dtype=object))
    assert isinstance(out, pd.Series)
    assert out.empty
    assert out.name == "enrich"


@pytest.mark.parametrize(
    "index",
    [
        pd.Index(["b", "a", "b"], name="key"),  # duplicates, strings, a name
        pd.MultiIndex.from_tuples([("x", 1), ("x", 1), ("y", 2)], names=["city", "no"]),
        pd.DatetimeIndex(["2024-01-02", "2024-01-01", "2024-01-02"], name="day"),
        pd.Index([3.5, 1.5, 3.5], dtype="float64"),
        pd.CategoricalIndex(["p", "q", "p"], name="cat"),
    ],
    ids=["duplicates", "multiindex", "datetime", "float", "categorical"],
)
def test_index_survives(index: pd.Index[Any]) -> None:
    """The index (names, dtype, duplicates) comes back unchanged and rows stay aligned."""
    df = addresses().set_axis(index, axis=0)
    out = df.pipe(enrich, "address")
    pd.testing.assert_index_equal(out.index, df.index)
    assert out["enrich"].iloc[0] == 9
    assert isinstance(out["enrich_error"].iloc[1], AllFailedError)
    series_out = enrich(df["address"])
    pd.testing.assert_index_equal(series_out.index, df.index)


def test_dtypes_and_column_order_survive() -> None:
    """Every input column keeps its position and dtype."""
    df = pd.DataFrame(
        {
            "z_int": np.array([1, 2], dtype="int32"),
            "address": ["a", "b"],
            "cat": pd.Categorical(["u", "v"]),
            "when": pd.to_datetime(["2024-01-01", "2024-06-01"]),
            "nullable": pd.array([1, None], dtype="Int64"),
            "flag": [True, False],
        }
    )
    out = df.pipe(enrich, "address")
    assert list(out.columns[: len(df.columns)]) == list(df.columns)
    pd.testing.assert_series_equal(out.dtypes[: len(df.columns)], df.dtypes)


def test_input_is_not_modified() -> None:
    """The input frame equals a deep copy taken before the call, columns and all."""
    df = addresses()
    before = copy.deepcopy(df)
    out = df.pipe(enrich, "address")
    out.loc[0, "address"] = "changed"  # and editing the result does not reach the input
    pd.testing.assert_frame_equal(df, before)
    assert "enrich" not in df.columns


def test_rerun_failed_rows_and_merge_back() -> None:
    """The docs workflow: filter failed rows, re-run only those, merge the answers back."""
    calls: dict[str, int] = {}

    @opmap(progress=False, retries=0, mode="thread", workers=1)
    def flaky(address: str) -> int:
        calls[address] = calls.get(address, 0) + 1
        if address.startswith("x") and calls[address] == 1:
            raise ConnectionError(address)
        return len(address)

    df = pd.DataFrame({"address": ["a", "xb", "cc", "xdd"]})
    out = df.pipe(flaky, "address")
    failed = out[out["flaky_error"].notna()]
    assert failed["address"].tolist() == ["xb", "xdd"]

    retry = failed[df.columns].pipe(flaky, "address")
    out.loc[retry.index, ["flaky", "flaky_error"]] = retry[["flaky", "flaky_error"]]
    assert out["flaky"].tolist() == [1, 2, 2, 3]
    assert out["flaky_error"].isna().all()
    assert calls == {"a": 1, "xb": 2, "cc": 1, "xdd": 2}  # only failed rows ran twice


# -- modes -----------------------------------------------------------------------------------


def test_thread_mode() -> None:
    """mode="thread" enriches a frame in order."""

    @opmap(mode="thread", workers=4, progress=False)
    def double(x: int) -> int:
        return 2 * x

    df = pd.DataFrame({"x": range(200)})
    out = df.pipe(double, "x")
    assert out["double"].tolist() == [2 * x for x in range(200)]
    assert out["double_error"].isna().all()


@pytest.mark.asyncio
async def test_async_series() -> None:
    """An async def function returns an awaitable of the Series."""

    @opmap(progress=False, retries=0)
    async def upper(text: str) -> str:
        if text == "bad":
            raise ValueError(text)
        return text.upper()

    pending = upper(pd.Series(["a", "bad"], index=[7, 7]))
    out = await pending
    assert isinstance(out, pd.Series)
    assert out.name == "upper"
    assert out.iloc[0] == "A"
    assert isinstance(out.iloc[1], AllFailedError | ValueError)
    pd.testing.assert_index_equal(out.index, pd.Index([7, 7]))


@pytest.mark.asyncio
async def test_async_dataframe() -> None:
    """An async def function returns an awaitable of the new DataFrame."""

    @opmap(mode="async", workers=8, progress=False)
    async def add(a: int, b: int) -> int:
        return a + b

    df = pd.DataFrame({"a": [1, 2], "b": [10, 20]})
    out = await df.pipe(add, ["a", "b"])
    assert out["add"].tolist() == [11, 22]
    assert list(out.columns) == ["a", "b", "add", "add_error"]


@pytest.mark.asyncio
async def test_async_configuration_error_on_await() -> None:
    """An async map's configuration error is raised when it is awaited."""

    @opmap(progress=False)
    async def noop(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError, match="'nope'"):
        await noop(pd.DataFrame({"x": [1]}), "nope")


# -- errors users make -----------------------------------------------------------------------


def test_missing_column_names_available_ones() -> None:
    """A column that does not exist names the available columns and the closest one."""
    with pytest.raises(ConfigurationError) as info:
        addresses().pipe(enrich, "adress")
    message = str(info.value)
    assert "'adress'" in message
    assert "['address', 'n']" in message
    assert "did you mean 'address'" in message


def test_missing_column_in_list() -> None:
    """A bad name inside a list of columns is reported the same way."""
    with pytest.raises(ConfigurationError, match=r"column 'zip' is not in the DataFrame.*\['address', 'n'\]"):
        addresses().pipe(locate, ["address", "zip"])


def test_dataframe_without_column() -> None:
    """A DataFrame without a column says how to name one and lists the columns."""
    with pytest.raises(ConfigurationError) as info:
        enrich(addresses())
    message = str(info.value)
    assert "no column" in message
    assert "df.pipe(enrich, 'address')" in message
    assert "['address', 'n']" in message


def test_dict_with_unknown_parameter() -> None:
    """A dict naming a parameter the function lacks names the function's parameters."""
    with pytest.raises(ConfigurationError) as info:
        addresses().pipe(locate, {"adress": "address"})
    message = str(info.value)
    assert "'adress'" in message
    assert "locate()" in message
    assert "['address', 'scale']" in message


def test_result_column_collision() -> None:
    """A result column that already exists is refused before any work runs."""
    df = addresses().assign(enrich=0)
    with pytest.raises(ConfigurationError, match="result column 'enrich' already exists"):
        df.pipe(enrich, "address")


def test_error_column_collision() -> None:
    """An error column that already exists is refused, naming it."""
    with pytest.raises(ConfigurationError, match="error column 'n' already exists"):
        addresses().pipe(enrich, "address", error_column="n")


def test_expand_column_collision() -> None:
    """expand=True refuses when <name>.<key> columns already exist."""
    df = addresses().assign(**{"locate.lat": 1.0})
    with pytest.raises(ConfigurationError, match=r"already has \['locate\.lat'\]"):
        df.pipe(locate, "address", expand=True)


def test_duplicate_input_column() -> None:
    """A column name that appears twice cannot give one value per row."""
    df = pd.DataFrame([[1, 2]], columns=["x", "x"])
    with pytest.raises(ConfigurationError, match="'x' appears 2 times"):
        df.pipe(enrich, "x")


def test_arguments_the_function_cannot_take() -> None:
    """Too many columns for the function fail at once, not row by row after retries."""
    with pytest.raises(ConfigurationError, match="cannot take the row values"):
        addresses().pipe(enrich, ["address", "n"])


def test_column_and_keyword_for_same_parameter() -> None:
    """A parameter given both a column and a keyword argument is refused."""
    with pytest.raises(ConfigurationError, match="'scale' gets both a column"):
        addresses().pipe(locate, {"address": "address", "scale": "n"}, scale=2.0)
