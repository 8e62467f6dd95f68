"""Planted files and leaked secrets (issue 11.13-15): nothing another user plants is trusted.

Tests run as root, so a file "planted by another user" is made by ``os.chown`` to uid 65534
(nobody). The host-wide limiter folder is pointed at a test folder (``host.BASE``).
"""

from __future__ import annotations

import itertools
import os
import stat
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import opero
from opero.stores import host

OTHER = 65534


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A sticky, world-writable base folder like /dev/shm, used by this test only."""
    base = tmp_path / "shm"
    base.mkdir()
    os.chmod(base, 0o1777)
    monkeypatch.setattr(host, "BASE", str(base))
    monkeypatch.setattr(host, "_folder_cache", None)
    yield base
    host._folder_cache = None


def _limited_elapsed(fn: opero.OperoFunction[[], None], calls: int) -> float:
    began = time.monotonic()
    for _ in range(calls):
        fn()
    return time.monotonic() - began


def _grant_gaps(store: host.HostStore, rate: float, n: int) -> list[float]:
    # The grant times the limiter decides, under its lock (exact spacing is checked on these).
    grants: list[float] = []
    interval = 1 / rate
    for _ in range(n):
        delay = store.reserve(interval, 1)
        if delay > 0:
            time.sleep(delay)
        while (d := store.confirm(interval, 1)) > 0:
            time.sleep(d)
        grants.append(store.transact(lambda now, tat, last: (last, tat, last)))
    return [b - a for a, b in itertools.pairwise(grants)]


def test_limiter_folder_is_private(shm: Path) -> None:
    """Limiter files live in <base>/opero-<uid>/, a 0700 folder of this user, files 0600."""

    @opero.opero(rate_limit=50, rate_limit_scope=f"s-{uuid.uuid4().hex}")
    def f() -> None:
        pass

    f()
    store = f._opero_plan.limiter.store  # type: ignore[attr-defined]
    folder = shm / f"opero-{os.getuid()}"
    assert Path(store.path).parent == folder
    st = os.lstat(folder)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_own_folder_with_wide_mode_is_tightened(shm: Path) -> None:
    """Our own folder left at 0755 is chmod-ed back to 0700, not abandoned."""
    folder = shm / f"opero-{os.getuid()}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    assert host.folder() == str(folder)
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700


@pytest.mark.parametrize("planted", ["other owner", "symlink", "file"])
def test_planted_folder_is_not_trusted(shm: Path, tmp_path: Path, planted: str) -> None:
    """A folder owned by another user, a symlink or a file at the folder's path is refused:
    a warning (path and owner, nothing else), a private folder, and calls still limited."""
    folder = shm / f"opero-{os.getuid()}"
    if planted == "other owner":
        folder.mkdir(mode=0o777)
        os.chmod(folder, 0o777)
        os.chown(folder, OTHER, OTHER)
    elif planted == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        folder.symlink_to(target)
    else:
        folder.write_bytes(b"")
    scope = f"s-{uuid.uuid4().hex}"
    with pytest.warns(RuntimeWarning, match="not trusted") as caught:

        @opero.opero(rate_limit=20, rate_limit_scope=scope)
        def f() -> None:
            pass

    message = str(caught[0].message)
    assert str(folder) in message
    if planted == "other owner":
        assert f"uid {OTHER}" in message
    store = f._opero_plan.limiter.store  # type: ignore[attr-defined]
    private = Path(store.path).parent
    assert private != folder and private.parent == shm
    assert os.lstat(private).st_uid == os.getuid()
    assert stat.S_IMODE(os.lstat(private).st_mode) == 0o700
    assert not list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else True
    if planted == "symlink":
        assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing written through the link
    # Still limited: 11 calls at 20/s, burst 1, take at least 10/20 s.
    assert _limited_elapsed(f, 11) >= 0.5 - 0.01
    assert min(_grant_gaps(store, 20, 5)) >= 1 / 20 - 1e-6


@pytest.mark.parametrize("planted", ["other owner", "symlink", "fifo", "group-writable"])
def test_planted_scope_file_is_not_trusted(shm: Path, tmp_path: Path, planted: str) -> None:
    """A scope file planted by another user (or a link, a FIFO, a file others may write) is
    never used: opero warns and limits through a private file; a link's target is untouched."""
    folder = Path(host.folder())
    scope = f"s-{uuid.uuid4().hex}"
    path = Path(host.scope_path(scope))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    if planted == "other owner":
        # A stalling budget: tat far in the future would hold every call back for a day.
        path.write_bytes(b"\0" * host._SIZE)
        fd = os.open(path, os.O_RDWR)
        os.pwrite(fd, host._STATE.pack(time.monotonic() + 86400, 0.0), 0)
        os.pwrite(fd, host._LIMIT.pack(20.0, 1.0), host._LIMIT_AT)
        os.close(fd)
        os.chmod(path, 0o666)
        os.chown(path, OTHER, OTHER)
    elif planted == "symlink":
        path.symlink_to(victim)
    elif planted == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"")
        os.chmod(path, 0o620)
    with pytest.warns(RuntimeWarning, match="not trusted") as caught:

        @opero.opero(rate_limit=20, rate_limit_scope=scope)
        def f() -> None:
            pass

    assert str(path) in str(caught[0].message)
    store = f._opero_plan.limiter.store  # type: ignore[attr-defined]
    assert store.path != str(path) and Path(store.path).parent == folder
    st = os.lstat(store.path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
    assert victim.read_bytes() == b"precious"
    elapsed = _limited_elapsed(f, 11)
    assert 0.5 - 0.01 <= elapsed < 0.5 * 3 + 1  # limited, and not stalled by the planted state
    assert min(_grant_gaps(store, 20, 5)) >= 1 / 20 - 1e-6


def test_planted_function_budget_is_not_trusted(shm: Path) -> None:
    """A worker's copy of a function budget never opens a file someone swapped in."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @opero.opero(rate_limit=20)
        def f() -> None:
            pass

    store = f._opero_plan.limiter.store  # type: ignore[attr-defined]
    os.unlink(store.path)
    Path(store.path).symlink_to("/etc/hostname")
    import pickle

    with pytest.warns(RuntimeWarning, match="not trusted"):
        copy = pickle.loads(pickle.dumps(store))
    assert copy.path != store.path
    assert min(_grant_gaps(copy, 20, 4)) >= 1 / 20 - 1e-6
