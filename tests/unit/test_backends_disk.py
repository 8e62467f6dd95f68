"""Disk cache (issue 3): persistence, TTL, edits, corruption, signatures, permissions, clearing."""

from __future__ import annotations

import logging
import os
import pickle
import stat
import time
from pathlib import Path
from typing import Any

import pytest

import opero
from tests.shared.backends_disk import _entries, check_closures_do_not_share, check_plain_globals_in_key


def test_ttl_expiry_seconds_and_callable() -> None:
    """An entry is served until its TTL (seconds or a callable) runs out, then recomputed."""
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="disk", cache_ttl=0.3)
    def fixed(x: int) -> int:
        calls.append(x)
        return x

    @opero.opero(cache=True, cache_backend="disk", cache_ttl=lambda: 0.3)
    def dynamic(x: int) -> int:
        calls.append(-x)
        return x

    assert [fixed(1), fixed(1), dynamic(2), dynamic(2)] == [1, 1, 2, 2]
    assert calls == [1, -2]
    time.sleep(0.4)
    assert [fixed(1), dynamic(2)] == [1, 2]
    assert calls == [1, -2, 1, -2]


def test_corrupt_entries_are_misses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated, byte-flipped and garbage entries are recomputed, logged, never a crash."""
    root = Path(os.environ["OPERO_CACHE_DIR"])
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="disk")
    def f(x: int) -> dict[str, int]:
        calls.append(x)
        return {"value": x}

    damage = [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-3] + bytes([b[-3] ^ 0x01]) + b[-2:],  # one bit flipped in the pickle
        lambda b: b"not an entry at all",
        lambda b: b"",
    ]
    f(1)
    with caplog.at_level(logging.WARNING, logger="opero"):
        for i, spoil in enumerate(damage):
            (entry,) = _entries(root)
            entry.write_bytes(spoil(entry.read_bytes()))
            opero.parts(f).cache._tier.clear()  # force a disk read
            assert f(1) == {"value": 1}
            assert len(calls) == i + 2
    assert f(1) == {"value": 1} and len(calls) == 5  # the rewritten entry is good again
    assert capsys.readouterr().out == ""
    assert sum("opero cache:" in r.getMessage() for r in caplog.records) >= 3


def test_unreadable_entry_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    """An entry the process may not read (a directory in its place) is a logged miss."""
    root = Path(os.environ["OPERO_CACHE_DIR"])
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="disk")
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(3)
    (entry,) = _entries(root)
    entry.unlink()
    entry.mkdir()
    opero.parts(f).cache._tier.clear()
    with caplog.at_level(logging.WARNING, logger="opero"):
        assert f(3) == 3
    assert calls == [3, 3]
    assert any("cannot" in r.getMessage() for r in caplog.records)


class _Exploit:
    """Unpickling this touches a file: proof that a tampered entry was (not) loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def test_signed_entries_reject_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With OPERO_CACHE_SECRET, forged, unsigned or wrongly keyed entries are never unpickled."""
    from opero.stores import _signed as _entry

    monkeypatch.setenv("OPERO_CACHE_SECRET", "s3cret")
    root = Path(os.environ["OPERO_CACHE_DIR"])
    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="disk")
    def f(x: int) -> int:
        calls.append(x)
        return x * 10

    assert f(1) == 10
    (entry,) = _entries(root)
    good = entry.read_bytes()
    assert good[4] == 1  # signed flag
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(str(marker)))
    header = good[:13]
    forged = [
        header + good[13:45] + evil,  # real header and MAC, payload swapped
        header[:4] + b"\x00" + header[5:] + bytes(32) + evil,  # claims to be unsigned
    ]
    monkeypatch.setenv("OPERO_CACHE_SECRET", "other-key")
    forged.append(_entry.encode(_Exploit(str(marker)), None))  # signed with another key
    monkeypatch.setenv("OPERO_CACHE_SECRET", "s3cret")
    with caplog.at_level(logging.WARNING, logger="opero"):
        for i, data in enumerate(forged):
            entry.write_bytes(data)
            opero.parts(f).cache._tier.clear()
            assert f(1) == 10
            assert len(calls) == i + 2
    assert not marker.exists()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("bad signature" in m for m in messages) == 2
    assert sum("unsigned entry" in m for m in messages) == 1


def test_folders_are_private(tmp_path: Path) -> None:
    """Cache folders are created with mode 0700 and entry files with 0600."""
    location = tmp_path / "deep" / "cache"

    @opero.opero(cache=True, cache_backend="disk", cache_backend_config={"location": str(location)})
    def f(x: int) -> int:
        return x

    f(1)
    folders = [location, *[p for p in location.rglob("*") if p.is_dir()]]
    assert len(folders) == 3  # root, namespace, function
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o700}
    assert {stat.S_IMODE(p.stat().st_mode) for p in _entries(location)} == {0o600}


def test_unpicklable_result_is_not_stored() -> None:
    """A result that cannot be pickled is returned but not stored (logged, no error)."""
    import threading

    calls: list[int] = []

    @opero.opero(cache=True, cache_backend="disk")
    def f(x: int) -> object:
        calls.append(x)
        return threading.Lock()

    assert f(1) is not f(1)
    assert calls == [1, 1]


# -- keys cover what the function closes over (issue 11.11) and big arguments (11.12) -----------


def test_closures_from_one_factory_do_not_share_entries() -> None:
    """make(2) must not return make(1)'s cached result (disk)."""
    check_closures_do_not_share("disk")


def test_plain_globals_are_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing a plain global the function reads is a miss, not a stale hit (disk)."""
    check_plain_globals_in_key("disk", monkeypatch)


def test_big_bytes_argument_costs_one_content_hash() -> None:
    """A 32 MB bytes argument's persistent key costs about one joblib.hash, not a repr."""
    import joblib

    data = os.urandom(32 * 2**20)

    @opero.opero(cache=True, cache_backend="disk")
    def size(b: bytes) -> int:
        return len(b)

    keys = opero.parts(size).keys

    def best(fn: Any) -> float:
        times = []
        for _ in range(2):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        return min(times)

    one_hash = best(lambda: joblib.hash(data))
    key = best(lambda: keys.key((data,), {}))
    nested = best(lambda: keys.key(((data, 1),), {}))
    # Before: 1.5-2.7 s for a key against ~0.2 s for one joblib.hash (the repr was hashed).
    assert key < 3 * one_hash + 0.1, (key, one_hash)
    assert nested < 3 * one_hash + 0.1, (nested, one_hash)
    assert keys.key((data,), {}) != keys.key((data[:-1] + b"x",), {})
    assert size(data) == size(data) == len(data)


_COUNTER = 0


def test_names_the_function_assigns_are_not_in_the_key() -> None:
    """A global or nonlocal counter the function bumps itself does not make every call a miss."""
    hits = 0

    @opero.opero(cache=True, cache_backend="disk")
    def counted(x: int) -> int:
        global _COUNTER
        nonlocal hits
        _COUNTER += 1
        hits += 1
        return x

    assert [counted(1), counted(1), counted(1)] == [1, 1, 1]
    assert hits == 1 and counted.stats.cache_hits == 2
