"""%opero / %%opero in an in-process IPython shell: option parsing, cell cache, dashboard."""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import IPython  # noqa: F401  (required: a dev dependency)
import pytest

from opero import ConfigurationError, _telemetry
from opero._options import current_overrides
from opero.notebook import cellcache, dashboard
from opero.notebook.magics import parse_options
from tests.shared.notebook_magics import run

# -- option parsing ------------------------------------------------------------------------------


def test_parse_space_separated_literals() -> None:
    """Options are Python literals separated by spaces."""
    assert parse_options("retries=2 timeout=60 cache=True cache_namespace='x y'") == {
        "retries": 2,
        "timeout": 60,
        "cache": True,
        "cache_namespace": "x y",
    }


def test_parse_comma_separated_and_names() -> None:
    """Commas work too, and bare names (exception classes) resolve in the namespace."""

    class Flaky(Exception):
        pass

    opts = parse_options("retry_on=(ConnectionError, Flaky), retries=1", {"Flaky": Flaky})
    assert opts == {"retry_on": (ConnectionError, Flaky), "retries": 1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("retries", "expected option=value"),
        ("retries=len('ab')", "not a Python literal"),
        ("retries=1 retries=2", "given twice"),
        ("retry_on=NoSuchError", "not defined"),
    ],
)
def test_parse_errors(line: str, message: str) -> None:
    """Malformed options raise ConfigurationError saying what is wrong."""
    with pytest.raises(ConfigurationError, match=message):
        parse_options(line)


# -- static analysis -----------------------------------------------------------------------------


def names(source: str) -> cellcache.CellNames:
    return cellcache.analyse(ast.parse(source))


def test_inputs_are_names_read_before_assigned() -> None:
    """A name read before the cell assigns it is an input; one assigned first is not."""
    n = names("y = x + 1\nz = y * 2\nx = 0\nprint(z)")
    assert n.inputs == ("x", "print")
    assert n.outputs == ("y", "z", "x")


def test_augmented_assignment_reads_then_writes() -> None:
    """``x += 1`` makes x both an input and an output."""
    n = names("x += 1")
    assert n.inputs == ("x",)
    assert n.outputs == ("x",)


def test_nested_scopes_read_globals() -> None:
    """Globals read inside functions, lambdas and comprehensions count unless the cell binds them."""
    n = names(
        "import json\n"
        "def f(a):\n    b = a + scale\n    return json.dumps(b)\n"
        "g = lambda v: v * factor\n"
        "out = [f(i) + offset for i in items]\n"
        "helper_value = 3\n"
        "def h():\n    return helper_value\n"
    )
    assert set(n.inputs) == {"scale", "factor", "offset", "items"}
    assert set(n.outputs) == {"json", "f", "g", "out", "helper_value", "h"}


def test_imports_for_with_and_star() -> None:
    """Imports bind their top name (and are remembered in full); star imports are flagged."""
    source = "import urllib.request\nfrom os import path as p\nfor k in ks:\n    pass\n"
    source += "with open(fn) as fh:\n    x = 1"
    n = names(source)
    assert set(n.outputs) == {"urllib", "p", "k", "fh", "x"}
    assert n.imports == ("urllib.request",)
    assert set(n.inputs) == {"ks", "open", "fn"}
    assert names("from os.path import *").star_import


# -- %%opero in a shell ---------------------------------------------------------------------------


def test_cell_retries_until_it_passes(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Retries re-run the whole cell; its last expression is the cell's value."""
    run(ip, "attempts = 0")
    result = run(
        ip,
        "%%opero retries=3 min_delay=0.001 max_delay=0.002\nattempts += 1\n"
        "if attempts < 3:\n    raise ValueError('flaky')\nattempts * 10\n",
    )
    assert result.success and result.result == 30
    assert ip.user_ns["attempts"] == 3
    assert capsys.readouterr().out.count("failed (ValueError: flaky)") == 2


def test_cell_that_keeps_failing_raises_all_failed(ip: Any) -> None:
    """When every attempt fails the cell raises AllFailedError with each attempt's error."""
    from opero import AllFailedError

    result = run(ip, "%%opero retries=1 min_delay=0.001\nraise KeyError('nope')")
    assert isinstance(result.error_in_exec, AllFailedError)
    assert len(result.error_in_exec.errors) == 2


def test_non_retryable_error_propagates(ip: Any) -> None:
    """An error that retry_on does not accept stops at once, as itself."""
    run(ip, "tries = 0")
    result = run(ip, "%%opero retries=3 retry_on=ConnectionError\ntries += 1\nraise KeyError('x')")
    assert isinstance(result.error_in_exec, KeyError)
    assert ip.user_ns["tries"] == 1


def test_cell_timeout_interrupts(ip: Any) -> None:
    """timeout bounds the cell: a sleeping cell is interrupted with TimeoutError."""
    import time

    began = time.perf_counter()
    result = run(ip, "%%opero timeout=0.2 retries=0\nimport time\ntime.sleep(5)")
    assert time.perf_counter() - began < 2
    assert isinstance(result.error_in_exec.__cause__, TimeoutError)


def test_invalid_option_shows_configuration_error(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option shows the ConfigurationError hint; the cell does not run."""
    run(ip, "%%opero retires=2\nran = True")
    out = capsys.readouterr()
    assert "did you mean 'retries'" in out.out + out.err
    assert "ran" not in ip.user_ns


def test_top_level_await_in_a_cell(ip: Any) -> None:
    """A %%opero cell may await: the coroutine runs via opero.run."""
    result = run(ip, "%%opero\nimport asyncio\nawait asyncio.sleep(0)\nawaited = 7\nawaited")
    assert result.result == 7


@pytest.mark.parametrize("backend", ["disk", "memory"])
def test_cached_cell_restores_names_and_output(
    ip: Any, capsys: pytest.CaptureFixture[str], backend: str, tmp_path: Any
) -> None:
    """A cached cell with unchanged inputs is skipped; names, prints and value come back."""
    marker = tmp_path / "runs"
    marker.write_text("")
    ip.user_ns.update(MARK=str(marker), base=10)
    cell = (
        f"%%opero cache=True cache_backend={backend!r}\nimport math, pathlib\n"
        "pathlib.Path(MARK).write_text(pathlib.Path(MARK).read_text() + 'x')\n"
        "square = base ** 2\ndef plus(v):\n    return v + base\n"
        "print('square is', square)\nsquare + 1\n"
    )
    first = run(ip, cell)
    assert first.result == 101
    assert "square is 100" in capsys.readouterr().out
    for name in ("square", "plus", "math"):
        del ip.user_ns[name]
    second = run(ip, cell)
    out = capsys.readouterr()
    assert second.result == 101
    assert marker.read_text() == "x", "the cell did not run again"
    assert out.out.count("square is 100") == 1
    assert "cell skipped" in out.out
    assert ip.user_ns["square"] == 100
    assert ip.user_ns["math"].sqrt(4) == 2
    ip.user_ns["base"] = 20
    assert ip.user_ns["plus"](1) == 21, "a restored function reads the live namespace"

    third = run(ip, cell)  # base changed: runs again
    assert third.result == 401
    assert marker.read_text() == "xx"


def test_cell_that_mutates_its_input_is_not_cached(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell that changes an input in place runs uncached, with a one-line note."""
    run(ip, "seen = []")
    cell = "%%opero cache=True\nseen.append(1)\ncount = len(seen)"
    run(ip, cell)
    assert "changes its input 'seen' in place" in capsys.readouterr().out


def test_unpicklable_name_runs_uncached_with_a_note(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A name that cannot be pickled makes the cell run uncached, with a one-line note."""
    cell = "%%opero cache=True\nimport threading\nguard = threading.Lock()\nhits = 1"
    run(ip, cell)
    err = capsys.readouterr().out
    assert err.count("\n") == 1 and "'guard' (lock) cannot be pickled" in err
    run(ip, cell)
    assert "cell skipped" not in capsys.readouterr().out
    assert isinstance(ip.user_ns["guard"], type(threading.Lock()))


def test_signed_entries_reject_tampering(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With OPERO_CACHE_SECRET, a changed entry is ignored before it is unpickled."""
    monkeypatch.setenv("OPERO_CACHE_SECRET", "s3cret")
    store = cellcache.DiskCellStore("signed")
    store.set("k", b"payload")
    assert store.get("k") == b"payload"
    path = store.folder / "k.pkl"
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    assert store.get("k") is None
    assert oct(store.folder.stat().st_mode & 0o777) == "0o700"


# -- line magics ------------------------------------------------------------------------------


def test_config_sets_notebook_defaults(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """%opero config k=v sets opero.configure defaults; 'reset' drops them."""
    run(ip, "%opero config retries=1 min_delay=0.5")
    assert current_overrides() == {"retries": 1, "min_delay": 0.5}
    assert "retries=1" in capsys.readouterr().out
    run(ip, "%opero config reset")
    assert current_overrides() == {}


def test_stats_returns_the_frame(ip: Any) -> None:
    """%opero stats returns opero.stats() (a DataFrame with one row per function)."""
    import pandas  # noqa: F401  (required: a dev dependency)

    run(ip, "from opero import opero\n@opero\ndef twice(v):\n    return 2 * v\ntwice(2)")
    frame = run(ip, "%opero stats").result
    assert frame.loc["__main__.twice", "calls"] >= 1


def test_dashboard_without_a_kernel_prints_text(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Outside a kernel %opero dashboard degrades to a text table, without error."""
    run(ip, "from opero import opero\n@opero\ndef textual(v):\n    return v\ntextual(1)")
    result = run(ip, "%opero dashboard")
    assert result.success
    out = capsys.readouterr().out
    assert "textual" in out and "calls" in out


def test_nest_is_opt_in(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Loading the extension does not patch asyncio; %opero nest does."""
    import asyncio

    assert asyncio.run.__module__ == "asyncio.runners", "loading the extension patched nothing"
    result = run(ip, "%opero help")
    assert result.success and "%opero nest" in capsys.readouterr().out


# -- dashboard ---------------------------------------------------------------------------------


def test_cell_dashboard_shows_only_new_work() -> None:
    """A cell's dashboard lists only functions that did work after it was created."""
    from opero import opero

    @opero
    def before_cell() -> int:
        return 1

    before_cell()
    board = dashboard.Dashboard.for_new_work("cell")

    @opero
    def during_cell() -> int:
        return 2

    during_cell()
    shown = {row["function"] for row in board.rows()}
    assert any(name.endswith("during_cell") for name in shown)
    assert not any(name.endswith("before_cell") for name in shown)


def test_cell_runs_once_unless_retries_given(ip: Any) -> None:
    """%%opero timeout=1 runs a failing cell once and shows the user's own error."""
    run(ip, "runs = 0")
    result = run(ip, "%%opero timeout=1\nruns += 1\nraise KeyError('nope')")
    assert ip.user_ns["runs"] == 1
    assert isinstance(result.error_in_exec, KeyError)


def test_failing_cell_hides_opero_frames(ip: Any) -> None:
    """The traceback of a failing cell holds the user's frames, not opero's."""
    import traceback

    run(ip, "def inner():\n    raise ValueError('deep')")
    result = run(ip, "%%opero\ninner()")
    error = result.error_in_exec
    assert isinstance(error, ValueError)
    opero_dir = str(Path(__import__("opero").__file__).parent)
    shown = []
    tb = error.__traceback__
    while tb is not None:
        # IPython hides frames that set __tracebackhide__ (the magic's own entry points)
        if not tb.tb_frame.f_locals.get("__tracebackhide__"):
            shown.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert any("ipython-input" in f for f in shown), "the user's frames are kept"
    assert not [f for f in shown if f.startswith(opero_dir)], shown
    text = "".join(traceback.format_exception(error))
    assert "_policy.py" not in text and "ValueError: deep" in text


def test_help_lists_the_options(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """%opero help lists the cell options itself, with no spec references."""
    run(ip, "%opero help")
    out = capsys.readouterr().out
    for option in ("retries=0", "timeout=None", "cache=False", "cache_ttl", "rate_limit", "dashboard=True"):
        assert option in out
    assert "SPEC" not in out and "§" not in out


def test_two_runs_of_a_cached_cell_count_two_calls(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Each run of a cell adds to the same stats row, cached or not."""
    cell = "%%opero cache=True cache_backend='memory' name='counted-cell'\nk = 41 + 1"
    run(ip, cell)
    run(ip, cell)
    run(ip, cell)
    stats = _telemetry.lookup("counted-cell")
    assert (stats.calls, stats.cache_hits, stats.cache_misses) == (3, 2, 1)
    assert "cell skipped" in capsys.readouterr().out
