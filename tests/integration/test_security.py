"""Planted files and leaked secrets (issue 11.13-15): nothing another user plants is trusted.

Tests run as root, so a file "planted by another user" is made by ``os.chown`` to uid 65534
(nobody). The host-wide limiter folder is pointed at a test folder (``host.BASE``).
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import pytest

import opero
from tests.shared.security import _disk_fn


def test_planted_generation_link_is_never_written_through(tmp_path: Path) -> None:
    """A `.opero-gen-*` symlink planted in the cache folder never makes a clear write through it."""
    root = Path(os.environ["OPERO_CACHE_DIR"])
    root.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data, not a token")
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    (root / f".opero-gen-{namespace}").symlink_to(victim)
    calls: list[int] = []
    work = _disk_fn(calls, namespace)
    assert [work(1), work(1)] == [10, 10]
    work.cache_clear()
    opero.clear_cache(namespace)
    opero.clear_cache()
    assert victim.read_bytes() == b"precious data, not a token"
    gen = root / f".opero-gen-{namespace}"
    assert not gen.is_symlink() and gen.is_file()
    # The memory tier still works and still sees clears.
    assert [work(1), work(1)] == [10, 10]
    assert calls == [1, 1]


# -- no credential in a warning, a log line or an error (issue 11.15) ---------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_password_never_printed(caplog: pytest.LogCaptureFixture) -> None:
    """A redis URL with a password (server down): every warning and log line shows it masked."""
    secret = f"hunter2-{uuid.uuid4().hex[:6]}"
    port = _closed_port()
    url = f"redis://:{secret}@127.0.0.1:{port}/3"
    user_url = f"redis://alice:{secret}@127.0.0.1:{port}/3"
    cfg = {"url": url}
    with caplog.at_level("DEBUG", logger="opero"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        @opero.opero(cache=True, cache_backend="redis", cache_backend_config=cfg)
        def cached(x: int) -> int:
            return x

        @opero.opero(rate_limit=50, rate_limit_backend="redis", cache_backend_config={"url": user_url})
        def limited() -> int:
            return 1

        @opero.opero(
            rate_limit=50,
            rate_limit_scope=f"s-{uuid.uuid4().hex}",
            rate_limit_backend="redis",
            cache_backend_config={"host": "127.0.0.1", "port": port, "password": secret},
        )
        def scoped() -> int:
            return 2

        assert [cached(1), cached(1), limited(), scoped()] == [1, 1, 1, 2]
        cached.cache_clear()
        opero.clear_cache()
        shown = [
            repr(opero.parts(cached).cache),
            repr(opero.parts(limited).limiter.store),
        ]
    texts = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught] + shown
    assert any("redis" in t for t in texts)  # the outage was reported...
    assert not [t for t in texts if secret in t]  # ...without the password
    assert any(f"redis://:***@127.0.0.1:{port}/3" in t for t in texts)
    assert any(f"redis://alice:***@127.0.0.1:{port}/3" in t for t in texts)
    from opero.stores.redis import redact

    assert (
        redact(f"redis://u:{secret}@h:1/0 and rediss://:{secret}@h2")
        == "redis://u:***@h:1/0 and rediss://:***@h2"
    )
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
