"""``cache_backend="redis"``: entries shared by every process that reaches one redis server.

Keys are ``opero:<namespace>:<function>:<key>`` (``%`` and ``:`` percent-encoded inside the
parts, so namespace ``a`` never matches ``a:b``); values use :mod:`opero._entry`'s format
(optionally HMAC-signed) and expire through redis itself (``SET ... PX``). Clearing walks the
keys with ``SCAN`` and deletes them with ``UNLINK``, never ``KEYS`` or ``FLUSHDB``.

A server that is down or slow makes calls run uncached, with one ``RuntimeWarning`` per
function per outage, never an error (see :mod:`opero._redisconn` for timeouts and back-off).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

from ._cache import MISS
from ._entry import decode, encode
from ._redisconn import RedisLink, get_link, known_links
from ._telemetry import logger

__all__ = ["RedisCache", "clear_namespace", "key_prefix"]

_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def _part(text: str) -> str:
    return text.replace("%", "%25").replace(":", "%3A")


def key_prefix(namespace: str | None, func_name: str | None = None) -> str:
    """``opero:<namespace>:`` or ``opero:<namespace>:<function>:`` (escaped parts)."""
    prefix = "opero:" if namespace is None else f"opero:{_part(namespace)}:"
    return prefix if func_name is None else f"{prefix}{_part(func_name)}:"


def _delete_matching(link: RedisLink, prefix: str) -> int:
    client = link.client()
    if client is None:
        logger.warning("opero cache: redis at %s is down; %s* not cleared", link.url, prefix)
        return 0
    deleted = 0
    batch: list[bytes] = []
    try:
        for key in client.scan_iter(match=prefix.translate(_GLOB) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
    except Exception as exc:  # redis errors, timeouts: clearing must not raise either
        link.failed(exc)
        logger.warning("opero cache: clearing %s* on %s failed: %s", prefix, link.url, exc)
    return deleted


class RedisCache:
    """The redis cache of one function.

    Args:
        config: ``cache_backend_config`` (``url`` or host/port/db, timeouts).
        namespace: the function's ``cache_namespace``.
        func_name: the function's qualified name.
    """

    __slots__ = ("__weakref__", "_link", "_warned", "config", "func_name", "namespace", "prefix")

    def __init__(self, config: Mapping[str, Any], namespace: str, func_name: str) -> None:
        self.namespace = namespace
        self.func_name = func_name
        self.config = dict(config)
        self.prefix = key_prefix(namespace, func_name)
        self._link = get_link(config)
        self._warned = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisCache, (self.config, self.namespace, self.func_name))

    def _down(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._link.failed(exc)
        if not self._warned:
            self._warned = True
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "server down"
            message = (
                f"opero: redis cache at {self._link.url} unavailable ({reason}); "
                f"{self.func_name} runs uncached"
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=5)

    def _up(self) -> None:
        self._link.succeeded()
        self._warned = False

    def get(self, key: Hashable) -> Any:
        """The stored value, or ``MISS`` (absent, corrupt, tampered, or server unavailable)."""
        client = self._link.client()
        if client is None:
            self._down(None)
            return MISS
        name = f"{self.prefix}{key}"
        try:
            raw = client.get(name)
        except Exception as exc:
            self._down(exc)
            return MISS
        self._up()
        if raw is None:
            return MISS
        value, _ = decode(raw, time.time(), f"redis {name}")
        return value

    def set(self, key: Hashable, value: Any, ttl: float | None) -> None:
        """Store ``value``, expiring after ``ttl`` seconds through redis (``PX``)."""
        client = self._link.client()
        if client is None:
            self._down(None)
            return
        try:
            data = encode(value, time.time() + ttl if ttl is not None else None)
        except Exception as exc:
            logger.warning("opero cache: cannot pickle a result of %s (%s); not stored", self.func_name, exc)
            return
        try:
            client.set(f"{self.prefix}{key}", data, px=max(1, int(ttl * 1000)) if ttl is not None else None)
        except Exception as exc:
            self._down(exc)
            return
        self._up()

    def clear(self) -> None:
        """Delete this function's entries (every version of its source) from the server."""
        _delete_matching(self._link, self.prefix)

    def __repr__(self) -> str:
        return f"<RedisCache {self.prefix}* on {self._link!r}>"


def clear_namespace(namespace: str | None) -> None:
    """Delete ``namespace``'s entries (None: all opero entries) on every known server."""
    for link in known_links():
        _delete_matching(link, key_prefix(namespace))
