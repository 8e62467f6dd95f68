"""Connections to redis for the cache and the limiter: short timeouts and a back-off.

A server that is down or slow must never fail or hang a call (SPEC §4): every socket has a
connect and read timeout (0.5 s by default), redis-py's own retries are off (they would
multiply the timeout), and after a failure the link stays *down* for ``BACKOFF`` seconds, so
calls in that window skip redis at once instead of each paying a timeout. The first call
after the window tries again, which is how caching resumes when the server is back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from ._telemetry import logger

__all__ = ["BACKOFF", "DEFAULT_URL", "RedisLink", "get_link", "redis_url"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Seconds a link stays down after a failure before the next call tries the server again.
BACKOFF = 1.5
_TIMEOUT = 0.5
_SETTINGS = ("socket_timeout", "socket_connect_timeout", "password", "username")


def redis_url(config: Mapping[str, Any]) -> str:
    """``config["url"]``, else host/port/db from ``config``, else ``OPERO_REDIS_URL``, else local."""
    if config.get("url"):
        return str(config["url"])
    if any(k in config for k in ("host", "port", "db")):
        host = config.get("host", "127.0.0.1")
        return f"redis://{host}:{int(config.get('port', 6379))}/{int(config.get('db', 0))}"
    return os.environ.get("OPERO_REDIS_URL") or DEFAULT_URL


class RedisLink:
    """One redis client (lazily built) and whether the server is believed reachable.

    Args:
        url: the server's URL.
        settings: extra client settings (timeouts, credentials).
    """

    __slots__ = ("_client", "_down_until", "_lock", "_scripts", "settings", "url")

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        self.url = url
        self.settings = dict(settings)
        self._client: Any = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._scripts: dict[str, Any] = {}

    def client(self) -> Any:
        """The redis client, or None while the server is in its back-off window."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    import redis
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry

                    self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.settings.get("socket_timeout", _TIMEOUT),
                        socket_connect_timeout=self.settings.get("socket_connect_timeout", _TIMEOUT),
                        retry=Retry(NoBackoff(), 0),
                        retry_on_timeout=False,
                        health_check_interval=0,
                        **{k: v for k, v in self.settings.items() if k in ("password", "username")},
                    )
                client = self._client
        return client

    def script(self, source: str) -> Any:
        """A registered Lua script (redis-py runs it by EVALSHA, loading it when needed)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client().register_script(source)
        return script

    def failed(self, exc: BaseException) -> bool:
        """Mark the server down for ``BACKOFF`` seconds; True when it was believed up."""
        was_up = self._down_until == 0.0
        self._down_until = time.monotonic() + BACKOFF
        if was_up:
            logger.warning("opero: redis at %s unreachable (%s); retrying in %.1fs", self.url, exc, BACKOFF)
        return was_up

    def succeeded(self) -> None:
        """The server answered: leave the down state (logged once)."""
        if self._down_until:
            self._down_until = 0.0
            logger.warning("opero: redis at %s is reachable again", self.url)

    def __repr__(self) -> str:
        state = "down" if self._down_until else "up"
        return f"<RedisLink {self.url} {state}>"


_links: dict[tuple[str, tuple[tuple[str, Any], ...]], RedisLink] = {}
_links_lock = threading.Lock()


def get_link(config: Mapping[str, Any]) -> RedisLink:
    """The shared link for a ``cache_backend_config`` (one client per URL and settings)."""
    url = redis_url(config)
    settings = {k: config[k] for k in _SETTINGS if k in config}
    key = (url, tuple(sorted(settings.items())))
    with _links_lock:
        link = _links.get(key)
        if link is None:
            link = _links[key] = RedisLink(url, settings)
        return link


def known_links() -> list[RedisLink]:
    """Links this process used, plus ``OPERO_REDIS_URL``'s when it is set (for clear_cache)."""
    with _links_lock:
        links = list(_links.values())
    if os.environ.get("OPERO_REDIS_URL") and all(link.url != os.environ["OPERO_REDIS_URL"] for link in links):
        links.append(get_link({}))
    return links
