"""opmap over pandas Series and DataFrame columns (SPEC §9)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import opero
from opero import AllFailedError, opmap
from opero.demo import first_attempt_fails, geocode


@pytest.fixture(autouse=True)
def _no_sleeps() -> Iterator[None]:
    """Retry backoff would only slow these tests down."""
    with opero.testing():
        yield


# Module-level functions so process workers can import them by name.
@opmap(mode="process", workers=2, progress=False, retries=0)
def square_in_process(x: int) -> int:
    """Square, in a worker process."""
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


def test_process_mode() -> None:
    """mode="process" enriches a small frame; a failed row keeps its exception."""
    df = pd.DataFrame({"x": [3, -1, 4]}, index=["a", "b", "c"])
    out = df.pipe(square_in_process, "x")
    assert out.loc["a", "square_in_process"] == 9
    assert out.loc["c", "square_in_process"] == 16
    assert np.isnan(out.loc["b", "square_in_process"])
    error = out.loc["b", "square_in_process_error"]
    assert isinstance(error, AllFailedError | ValueError)
    assert "negative: -1" in str(error)


# -- realistic: the loopback demo API -------------------------------------------------------


def _http_get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _server_error(exc: BaseException) -> bool:
    return isinstance(exc, urllib.error.HTTPError) and exc.code >= 500


def test_geocode_demo_server(demo_server: Any) -> None:
    """Geocoding a frame against the loopback API: flaky rows retry, 404 rows fail."""
    base = demo_server.url

    @opmap(mode="thread", workers=4, progress=False, retries=2, retry_on=_server_error)
    def geo(address: str) -> dict[str, Any]:
        query = urllib.parse.urlencode({"address": address})
        return _http_get_json(f"{base}/geocode?{query}")  # type: ignore[no-any-return]

    names = [f"{n} Main Street" for n in range(12)] + ["1 Nowhere Lane"]
    assert any(first_attempt_fails(a, fail_rate=0.3, namespace="geocode") for a in names)
    df = pd.DataFrame({"address": names, "id": range(100, 113)}).set_index("id")

    out = df.pipe(geo, "address", expand=True)
    ok = out["geo_error"].isna()
    assert ok.sum() == 12
    for address, lat, lon in out.loc[ok, ["address", "geo.lat", "geo.lon"]].itertuples(index=False):
        assert (lat, lon) == geocode(address)
    error = out.loc[112, "geo_error"]
    # kept in its picklable form: an HTTPError holds an open response (issue 14)
    from opero._errors import RemoteError

    assert isinstance(error, RemoteError) and error.type_name == "urllib.error.HTTPError"
    assert error.status == 404
    assert np.isnan(out.loc[112, "geo.lat"])


# -- packaging -------------------------------------------------------------------------------


def test_import_opero_does_not_import_pandas() -> None:
    """``import opero`` leaves pandas unimported; only a pandas input loads the adapter."""
    code = "import sys, opero; print('pandas' in sys.modules, 'opero._pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
