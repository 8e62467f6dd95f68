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
from tests.shared.security import _disk_fn

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
    store = opero.parts(f).limiter.store
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
    store = opero.parts(f).limiter.store
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
    store = opero.parts(f).limiter.store
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

    store = opero.parts(f).limiter.store
    os.unlink(store.path)
    Path(store.path).symlink_to("/etc/hostname")
    import pickle

    with pytest.warns(RuntimeWarning, match="not trusted"):
        copy = pickle.loads(pickle.dumps(store))
    assert copy.path != store.path
    assert min(_grant_gaps(copy, 20, 4)) >= 1 / 20 - 1e-6


def test_planted_generation_link_found_by_clear_cache(tmp_path: Path) -> None:
    """clear_cache() of all namespaces bumps every generation file it finds, but not a link's target."""
    root = Path(os.environ["OPERO_CACHE_DIR"])
    root.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data, not a token")
    (root / f".opero-gen-{uuid.uuid4().hex[:8]}").symlink_to(victim)
    opero.clear_cache()
    assert victim.read_bytes() == b"precious data, not a token"


def _entry_of(work: opero.OperoFunction[[int], int], calls: list[int]) -> Path:
    root = Path(os.environ["OPERO_CACHE_DIR"])
    assert work(3) == 30
    (entry,) = sorted(root.rglob("*.pkl"))
    return entry


def test_fifo_at_an_entry_is_a_miss_not_a_hang(caplog: pytest.LogCaptureFixture) -> None:
    """A FIFO in an entry's place is a logged miss at once (a plain open would block forever)."""
    import threading

    calls: list[int] = []
    entry = _entry_of(_disk_fn(calls), calls)
    entry.unlink()
    os.mkfifo(entry)
    fresh = _disk_fn(calls)  # a new decoration: an empty memory tier, the same folder
    out: list[int] = []
    with caplog.at_level("WARNING", logger="opero"):
        t = threading.Thread(target=lambda: out.append(fresh(3)), daemon=True)
        t.start()
        t.join(10)
    if t.is_alive():  # release the blocked reader before failing
        os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO entry hung")
    assert out == [30] and calls == [3, 3]
    assert any("not a regular file" in r.getMessage() for r in caplog.records)
    assert entry.is_file()  # the new result replaced the FIFO (os.replace, nothing followed)


def test_symlinked_entry_is_a_miss(tmp_path: Path) -> None:
    """An entry that is a symlink (to a valid entry elsewhere) is not followed: a miss."""
    calls: list[int] = []
    entry = _entry_of(_disk_fn(calls), calls)
    elsewhere = tmp_path / "elsewhere.pkl"
    os.replace(entry, elsewhere)
    entry.symlink_to(elsewhere)
    assert _disk_fn(calls)(3) == 30
    assert calls == [3, 3]
    assert not entry.is_symlink()  # replaced by a regular file
    assert elsewhere.is_file()


def test_symlinked_function_folder_is_not_used(tmp_path: Path) -> None:
    """A function folder replaced by a link is neither read through nor written through."""
    import shutil

    calls: list[int] = []
    entry = _entry_of(_disk_fn(calls), calls)
    folder = entry.parent
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder, elsewhere)
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    fresh = _disk_fn(calls)
    assert [fresh(3), fresh(4)] == [30, 40]
    assert calls == [3, 3, 4]
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_planted_marker_link_is_not_followed(tmp_path: Path) -> None:
    """The namespace marker is created without following a link planted at its path."""
    root = Path(os.environ["OPERO_CACHE_DIR"])
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    (root / namespace).mkdir(parents=True, mode=0o700)
    target = tmp_path / "created-through-link"
    (root / namespace / ".opero-namespace").symlink_to(target)
    calls: list[int] = []
    assert _disk_fn(calls, namespace)(1) == 10
    assert not target.exists()


def test_fallback_candidates_never_printed(caplog: pytest.LogCaptureFixture) -> None:
    """arg_fallback candidates (often API keys) appear in no log line, warning or error."""
    keys = [f"sk-live-{uuid.uuid4().hex}", f"sk-live-{uuid.uuid4().hex}"]
    seen: list[str] = []

    @opero.opero(arg_fallback="api_key", retries=1, min_delay=0.001, max_delay=0.002)
    def call(x: int, api_key: list[str] = keys) -> int:
        seen.append(api_key[0])
        raise ConnectionError("quota exceeded")

    with caplog.at_level("DEBUG", logger="opero"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(opero.AllFailedError) as info:
            call(1)
    assert seen == [keys[0], keys[1], keys[0], keys[1]]
    texts = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    texts += [str(info.value), repr(info.value), *(str(e) for e in info.value.errors)]
    assert texts
    assert not [t for t in texts for k in keys if k in t]


# -- one signed store: the cell cache writes through stores/ (issue 10.3) -----------------------


def test_cell_cache_uses_the_signed_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cell entries are the persistent cache's signed entries: same format and HMAC, 0700/0600,
    and a link planted at an entry's path is a miss, never followed."""
    from opero.notebook.cellcache import DiskCellStore
    from opero.stores import _signed

    monkeypatch.setenv("OPERO_CACHE_SECRET", "s3cret")
    store = DiskCellStore("cells-signed", tmp_path)
    store.set("k", b"payload")
    path = store.folder / "k.pkl"
    raw = path.read_bytes()
    assert raw.startswith(_signed.MAGIC)
    assert _signed.decode(raw, time.time(), "test") == (b"payload", 0.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    assert store.get("k") == b"payload"
    monkeypatch.setenv("OPERO_CACHE_SECRET", "another")
    assert store.get("k") is None  # signed with another secret: ignored before unpickling
    monkeypatch.setenv("OPERO_CACHE_SECRET", "s3cret")
    store.set("k", b"payload")
    elsewhere = tmp_path / "elsewhere.pkl"
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)
    assert store.get("k") is None


def test_notebook_config_never_prints_a_redis_password(capsys: pytest.CaptureFixture[str]) -> None:
    """`%opero config` shows cache_backend_config with its password and URL masked."""
    from opero.notebook.magics import OperoMagics

    magic = OperoMagics(shell=None).opero  # `%opero config` needs no shell
    secret = f"pw-{uuid.uuid4().hex[:8]}"
    line = f"cache_backend='redis' cache_backend_config={{'url':'redis://u:{secret}@127.0.0.1:1/0','password':'{secret}'}}"
    try:
        magic(f"config {line}")
        out = capsys.readouterr().out
    finally:
        magic("config reset")
    assert "cache_backend_config" in out and "redis://u:***@127.0.0.1:1/0" in out
    assert secret not in out
