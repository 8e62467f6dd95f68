"""``import opero`` is light and exposes exactly the public API ."""

from __future__ import annotations

from tests._fixtures_redis import run_python


def test_import_pulls_no_heavy_modules() -> None:
    """Importing opero imports no pandas, ipywidgets, IPython, redis or dask."""
    code = (
        "import sys, opero; heavy = [m for m in ('pandas','ipywidgets','IPython','redis','dask',"
        "'distributed','numpy') if m in sys.modules]; print(','.join(heavy))"
    )
    assert run_python(code).strip() == ""


def test_import_loads_no_third_party_package() -> None:
    """import opero loads only the standard library and opero itself: no tenacity, no tqdm.

    Import time is a benchmark target (benchmarks/, not a timed test: a loaded CI machine
    makes wall-clock bounds flaky); what this test pins is its cause: every third-party
    package (tenacity alone pulled in tornado and colorama) is imported on first use.
    """
    code = (
        "import sys; import asyncio; before = set(sys.modules); import opero; "
        "new = {m.partition('.')[0] for m in set(sys.modules) - before}; "
        "print(','.join(sorted(m for m in new if m != 'opero' and m not in sys.stdlib_module_names)))"
    )
    assert run_python(code).strip() == ""
