"""Disk cache (issue 3): persistence, TTL, edits, corruption, signatures, permissions, clearing."""

from __future__ import annotations

import os
from pathlib import Path

import opero
from tests._fixtures_redis import run_python
from tests.shared.backends_disk import _entries

SCRIPT = """
import os, sys
from opero import opero

@opero(cache=True, cache_backend="disk", cache_namespace=os.environ.get("NS", "opero"))
def work(x):
    with open(os.environ["CALLS"], "a") as f:
        f.write(f"{{x}}\\n")
    return x * {factor}

print(work(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
"""


def _calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_survives_process_restart(tmp_path: Path) -> None:
    """A result written by one process is a hit in a fresh process (the function runs once)."""
    calls = tmp_path / "calls"
    env = {"OPERO_CACHE_DIR": str(tmp_path / "cache"), "CALLS": str(calls)}
    code = SCRIPT.format(factor=2)
    assert run_python(code, env).strip() == "14"
    assert run_python(code, env).strip() == "14"
    assert _calls(calls) == ["7"]


def test_edited_function_misses(tmp_path: Path) -> None:
    """Editing the function's source (a script and ``python -c`` code) makes old entries miss."""
    calls = tmp_path / "calls"
    env = {"OPERO_CACHE_DIR": str(tmp_path / "cache"), "CALLS": str(calls)}
    v1, v2 = tmp_path / "v1.py", tmp_path / "v2.py"
    v1.write_text(SCRIPT.format(factor=2))
    v2.write_text(SCRIPT.format(factor=3))
    outs = [run_python(f"exec(open({str(p)!r}).read())", env).strip() for p in (v1, v2, v1)]
    assert outs == ["14", "21", "14"]
    assert _calls(calls) == ["7", "7"]  # v1 computed, v2 computed, v1 hit
    # ``python -c``: no source file; the code object's constants still tell versions apart.
    outs = [run_python(SCRIPT.format(factor=f), env).strip() for f in (5, 6, 5)]
    assert outs == ["35", "42", "35"]
    assert _calls(calls) == ["7", "7", "7", "7"]


def test_clear_cache_clears_only_that_namespace(tmp_path: Path) -> None:
    """clear_cache("a") drops namespace a on disk (also other processes' entries), not b."""
    root = Path(os.environ["OPERO_CACHE_DIR"])
    calls = tmp_path / "calls"
    env = {"OPERO_CACHE_DIR": str(root), "CALLS": str(calls)}
    for ns, x in (("a", 1), ("b", 2)):
        run_python(SCRIPT.format(factor=2) + f"\nwork({x + 10})", {**env, "NS": ns})
    assert len(_entries(root / "a")) == 2 and len(_entries(root / "b")) == 2
    opero.clear_cache("a")
    assert _entries(root / "a") == [] and len(_entries(root / "b")) == 2
    opero.clear_cache()
    assert _entries(root) == []


def test_memory_tier_sees_clear_from_another_process() -> None:
    """A value held in this process's memory tier is dropped when another process clears."""
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="disk", cache_namespace="tiered")
    def f(x: int) -> int:
        calls.append(x)
        return x

    assert [f(5), f(5)] == [5, 5] and calls == [5]
    run_python("import opero; opero.clear_cache('tiered')")
    assert f(5) == 5 and calls == [5, 5]
    f.cache_clear()
    assert f(5) == 5 and calls == [5, 5, 5]
