"""Redis: the connection, the shared cache and the cluster-wide limiter store, in one place.

**Connection.** A server that is down or slow must never fail or hang a call: every socket has
a connect and read timeout (0.5 s by default), redis-py's own retries are off (they would
multiply the timeout), and after a failure the link stays *down* for ``BACKOFF`` seconds, so
calls in that window skip redis at once instead of each paying a timeout. The first call
after the window tries again, which is how caching resumes when the server is back.

**Cache** (``cache_backend="redis"``). Keys are ``opero:<namespace>:<function>:<key>`` (``%``
and ``:`` percent-encoded inside the parts, so namespace ``a`` never matches ``a:b``); values
use :mod:`opero.stores._signed`'s format (optionally HMAC-signed) and expire through redis
itself (``SET ... PX``). Clearing walks the keys with ``SCAN`` and deletes them with
``UNLINK``, never ``KEYS`` or ``FLUSHDB``. A server that is down makes calls run uncached,
with one ``RuntimeWarning`` per function per outage, never an error.

**Limiter store** (``rate_limit_backend="redis"``). The GCRA steps of :mod:`opero._limit` as
one atomic Lua script on the server's clock (``TIME``), so machines with unsynchronised clocks
share one budget. Numbers cross the Lua boundary as strings: redis truncates Lua numbers to
integers. When the server is unreachable the limiter falls back to the host store (one
warning), so calls are still limited on this host and never fail.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._keys import KeyBuilder
from .._options import Options
from .._telemetry import logger
from ._base import MISS, redact
from ._redis_limit import RedisRecord, RedisStore
from ._redis_scripts import SLOTS_LUA
from ._signed import decode, encode
from .host import HostSlots, record_path, slot_base

__all__ = [
    "BACKOFF",
    "DEFAULT_URL",
    "RedisCache",
    "RedisLink",
    "RedisRecord",
    "RedisSlots",
    "RedisStore",
    "clear_namespace",
    "get_link",
    "key_prefix",
    "limiter_store",
    "record_store",
    "slots_store",
    "make_cache",
    "redact",
    "redis_url",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Seconds a link stays down after a failure before the next call tries the server again.
BACKOFF = 1.5
_TIMEOUT = 0.5
_SETTINGS = ("socket_timeout", "socket_connect_timeout", "password", "username")

if TYPE_CHECKING:
    import asyncio

#: What a Lua script takes: the redis keys, and its arguments (numbers go as strings).
ScriptArgs = Sequence[str | float]


class Script(Protocol):
    """A registered Lua script (redis-py's ``Script``), run by EVALSHA."""

    def __call__(self, keys: Sequence[str] | None = None, args: ScriptArgs | None = None) -> object:
        """Run the script; its reply as redis sent it."""
        ...


class AsyncScript(Protocol):
    """A Lua script registered on a ``redis.asyncio`` client."""

    def __call__(
        self, keys: Sequence[str] | None = None, args: ScriptArgs | None = None
    ) -> Awaitable[object]:
        """Run the script; await its reply."""
        ...


class Client(Protocol):
    """The commands opero sends through a ``redis.Redis`` client.

    redis-py types every reply as "a value or an awaitable", so replies are ``object`` here
    and narrowed where they are read.
    """

    def get(self, name: str) -> object:
        """``GET name``: the stored bytes, or None."""
        ...

    def set(self, name: str, value: bytes, *, px: int | None = None) -> object:
        """``SET name value [PX px]``."""
        ...

    def hmget(self, name: str, keys: list[str]) -> object:
        """``HMGET name keys...``: a list of values (None where absent)."""
        ...

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[bytes]:
        """The keys matching ``match``, by ``SCAN`` (never ``KEYS``)."""
        ...

    def unlink(self, *names: bytes) -> object:
        """``UNLINK names...``: how many keys went."""
        ...

    def register_script(self, script: str) -> Script:
        """A script run by EVALSHA, loaded on first use."""
        ...


class AsyncClient(Protocol):
    """What opero asks of a ``redis.asyncio.Redis`` client: its scripts."""

    def register_script(self, script: str) -> AsyncScript:
        """A script run by EVALSHA, loaded on first use."""
        ...


def redis_url(config: Mapping[str, object]) -> str:
    """``config["url"]``, else host/port/db from ``config``, else ``OPERO_REDIS_URL``, else local."""
    if config.get("url"):
        return str(config["url"])
    if any(k in config for k in ("host", "port", "db")):
        host = config.get("host", "127.0.0.1")
        return f"redis://{host}:{_whole(config.get('port', 6379))}/{_whole(config.get('db', 0))}"
    return os.environ.get("OPERO_REDIS_URL") or DEFAULT_URL


def _whole(value: object) -> int:
    """A port or database number given as an int, a float or a string."""
    if isinstance(value, (int, float, str)):
        return int(value)
    raise TypeError(f"a redis port or db must be a number, got {value!r}")


def _count(reply: object) -> int:
    """An integer reply (``UNLINK``'s count); 0 for anything else."""
    return reply if isinstance(reply, int) else 0


class RedisLink:
    """One redis client (lazily built) and whether the server is believed reachable.

    Args:
        url: the server's URL.
        settings: extra client settings (timeouts, credentials).
    """

    __slots__ = ("_async", "_client", "_down_until", "_lock", "_scripts", "_why", "settings", "shown", "url")

    def __init__(self, url: str, settings: Mapping[str, object]) -> None:
        self.url = url
        #: the URL as printed in warnings, logs and reprs: credentials masked
        self.shown = redact(url)
        self.settings = dict(settings)
        self._client: Client | None = None
        self._down_until = 0.0
        #: why the last failure happened (credentials masked), told while the link backs off
        self._why: str | None = None
        self._lock = threading.Lock()
        self._scripts: dict[str, Script] = {}
        # event loop -> (its redis.asyncio client, its registered scripts); weak, so a
        # finished loop (asyncio.run) drops its client.
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncClient, dict[str, AsyncScript]]
        ] = weakref.WeakKeyDictionary()

    def _keywords(self, retry: object) -> dict[str, Any]:
        """A client's settings: short timeouts, no retries or health checks of its own.

        The values are the user's settings, handed to redis-py's many typed keywords as given.
        """
        return {
            "socket_timeout": self.settings.get("socket_timeout", _TIMEOUT),
            "socket_connect_timeout": self.settings.get("socket_connect_timeout", _TIMEOUT),
            "retry": retry,
            "retry_on_timeout": False,
            "health_check_interval": 0,
            **{k: v for k, v in self.settings.items() if k in ("password", "username")},
        }

    def client(self) -> Client | None:
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

                    self._client = redis.Redis.from_url(self.url, **self._keywords(Retry(NoBackoff(), 0)))
                client = self._client
        return client

    def async_client(self) -> AsyncClient | None:
        """A ``redis.asyncio`` client for the running event loop (one per loop: a client is
        bound to the loop it was made in, and a notebook may run several in turn), or None
        while the server is in its back-off window."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        import asyncio

        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = redis.asyncio.Redis.from_url(self.url, **self._keywords(Retry(NoBackoff(), 0)))
            entry = self._async[loop] = (client, {})
        return entry[0]

    def async_script(self, source: str) -> AsyncScript:
        """A Lua script registered on the running loop's async client."""
        import asyncio

        client, scripts = self._async[asyncio.get_running_loop()]
        script = scripts.get(source)
        if script is None:
            script = scripts[source] = client.register_script(source)
        return script

    def script(self, source: str) -> Script:
        """A registered Lua script (redis-py runs it by EVALSHA, loading it when needed)."""
        script = self._scripts.get(source)
        if script is None:
            client = self.client()
            if client is None:  # the callers check first; the window may have begun since
                raise ConnectionError(f"redis at {self.shown} is down")
            script = self._scripts[source] = client.register_script(source)
        return script

    def failed(self, exc: BaseException) -> bool:
        """Mark the server down for ``BACKOFF`` seconds; True when it was believed up."""
        was_up = self._down_until == 0.0
        self._down_until = time.monotonic() + BACKOFF
        self._why = self.reason(exc)
        if was_up:
            shape = "opero: redis at %s: %s; retrying in %.1fs"
            if not _is_auth_error(exc):
                shape = "opero: redis at %s unreachable (%s); retrying in %.1fs"
            logger.warning(shape, self.shown, self._why, BACKOFF)
        return was_up

    def succeeded(self) -> None:
        """The server answered: leave the down state (logged once)."""
        if self._down_until:
            self._down_until = 0.0
            self._why = None
            logger.warning("opero: redis at %s is reachable again", self.shown)

    def __repr__(self) -> str:
        state = "down" if self._down_until else "up"
        return f"<RedisLink {self.shown} {state}>"

    def reason(self, exc: BaseException | None) -> str:
        """``Type: message`` of a failure, credentials masked; ``authentication failed: ...``
        for a wrong password or user. Without ``exc`` (the link is backing off): the last
        failure's reason, so a wrong password is never reported as a server down."""
        if exc is None:
            return self._why or "server down"
        text = redact(f"{type(exc).__name__}: {exc}")
        for secret in (self.settings.get("password"), _url_password(self.url)):
            if secret:
                text = text.replace(str(secret), "***")
        return f"authentication failed: {text}" if _is_auth_error(exc) else text


def _is_auth_error(exc: BaseException) -> bool:
    """Whether redis refused the credentials (a wrong password or user, or none given).

    By name, so redis-py is not imported here: ``AuthenticationError`` and its kin, or a
    server reply starting ``NOAUTH`` / ``WRONGPASS`` seen as another error class.
    """
    if any(c.__name__.startswith("Authentication") for c in type(exc).__mro__):
        return True
    try:
        text = str(exc).lstrip()
    except Exception:
        return False
    return text.startswith(("NOAUTH", "WRONGPASS", "invalid username-password"))


def _url_password(url: str) -> str | None:
    """The password in a redis URL, to mask wherever an error message repeats it."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


_links: dict[tuple[str, tuple[tuple[str, object], ...]], RedisLink] = {}
_links_lock = threading.Lock()


def get_link(config: Mapping[str, object]) -> RedisLink:
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
        logger.warning("opero cache: redis at %s is down; %s* not cleared", link.shown, prefix)
        return 0
    deleted = 0
    batch: list[bytes] = []
    try:
        for key in client.scan_iter(match=prefix.translate(_GLOB) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += _count(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += _count(client.unlink(*batch))
    except Exception as exc:  # redis errors, timeouts: clearing must not raise either
        link.failed(exc)
        logger.warning("opero cache: clearing %s* on %s failed: %s", prefix, link.shown, link.reason(exc))
    return deleted


class RedisCache:
    """The redis cache of one function.

    Args:
        config: ``cache_backend_config`` (``url`` or host/port/db, timeouts).
        namespace: the function's ``cache_namespace``.
        func_name: the function's qualified name.
    """

    __slots__ = ("__weakref__", "_link", "_warned", "config", "func_name", "namespace", "prefix")

    def __init__(self, config: Mapping[str, object], namespace: str, func_name: str) -> None:
        self.namespace = namespace
        self.func_name = func_name
        self.config = dict(config)
        self.prefix = key_prefix(namespace, func_name)
        self._link = get_link(config)
        self._warned = False

    def __reduce__(self) -> tuple[object, ...]:
        return (RedisCache, (self.config, self.namespace, self.func_name))

    def _down(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._link.failed(exc)
        if not self._warned:
            self._warned = True
            reason = self._link.reason(exc)
            message = (
                f"opero: redis cache at {self._link.shown} unavailable ({reason}); "
                f"{self.func_name} runs uncached"
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=5)

    def _up(self) -> None:
        self._link.succeeded()
        self._warned = False

    def get(self, key: Hashable) -> object:
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
        if not isinstance(raw, bytes):  # None: absent
            return MISS
        value, _ = decode(raw, time.time(), f"redis {name}")
        return value

    def set(self, key: Hashable, value: object, ttl: float | None) -> None:
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


def make_cache(options: Options, builder: KeyBuilder) -> RedisCache:
    """The redis cache of one function (its key prefix is its qualified name)."""
    return RedisCache(options.cache_backend_config, options.cache_namespace, builder.name)


def limiter_store(options: Options, name: str, scoped: bool) -> RedisStore:
    """A budget held on the redis server of ``cache_backend_config`` / ``OPERO_REDIS_URL``."""
    rate = options.start_rate
    assert rate is not None
    return RedisStore.for_limit(dict(options.cache_backend_config), name, rate, options.rate_burst, scoped)


def record_store(options: Options, kind: str, name: str, scoped: bool, initial: list[float]) -> RedisRecord:
    """A record on the redis server: a scope's (key from its name) or one function's."""
    local = record_path(kind, name, scoped)
    if scoped:
        key = f"opero:{kind}:scope:{name}"
    else:
        tail = local.rsplit("-fn-", 1)[1].removesuffix(".rec")
        key = f"opero:{kind}:fn:{socket.gethostname()}:{tail}"
    return RedisRecord(dict(options.cache_backend_config), key, initial, local)


#: Longest a slot is held without its holder: a worker that died frees it within this.
LEASE = 30.0


class RedisSlots:
    """``max_concurrency`` across machines: leases in a redis sorted set.

    A holder that dies frees its slot when its lease (:data:`LEASE` seconds) runs out; an
    attempt that runs longer than the lease no longer counts against the limit. While the
    server is unreachable the slots fall back to this host's (:class:`~.host.HostSlots`).

    Args:
        config: ``cache_backend_config`` (``url`` or host/port/db).
        key: the redis key.
        limit: how many slots.
        local_base: the host slots used while the server is unreachable.
    """

    __slots__ = ("_fallback", "_link", "_members", "config", "key", "limit", "local_base")

    def __init__(self, config: dict[str, object], key: str, limit: int, local_base: str) -> None:
        self.config = config
        self.key = key
        self.limit = int(limit)
        self.local_base = local_base
        self._link = get_link(config)
        self._fallback: HostSlots | None = None
        self._members = itertools.count()

    def __reduce__(self) -> tuple[object, ...]:
        return (RedisSlots, (self.config, self.key, self.limit, self.local_base))

    def _run(self, op: str, member: str) -> int | None:
        if self._link.client() is None:
            return None
        try:
            reply = self._link.script(SLOTS_LUA)(keys=[self.key], args=[op, member, self.limit, LEASE])
        except Exception as exc:
            self._link.failed(exc)
            return None
        self._link.succeeded()
        return int(reply) if isinstance(reply, (int, bytes, str)) else None

    def _local(self) -> HostSlots:
        if self._fallback is None:
            self._fallback = HostSlots(self.local_base, self.limit)
        return self._fallback

    def try_acquire(self) -> str | int | None:
        """Take a lease without waiting: its member name (or a host slot), or None."""
        member = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{next(self._members)}"
        got = self._run("acquire", member)
        if got is None:
            return self._local().try_acquire()
        return member if got else None

    def release(self, held: str | int) -> None:
        """Give a lease (or a host slot) back."""
        if isinstance(held, int):
            self._local().release(held)
        else:
            self._run("release", held)

    def in_use(self) -> int:
        """Leases held now (a snapshot, for stats)."""
        got = self._run("count", "")
        return self._local().in_use() if got is None else got

    def __repr__(self) -> str:
        return f"<RedisSlots {self.key} x{self.limit} on {self._link.url}>"


def slots_store(options: Options, name: str, scoped: bool) -> RedisSlots:
    """``max_concurrency`` leases on the redis server: a scope's (by name) or one function's."""
    limit = options.max_concurrency
    assert limit is not None
    local = slot_base(name, scoped)
    if scoped:
        key = f"opero:slots:scope:{name}"
    else:
        key = f"opero:slots:fn:{socket.gethostname()}:{os.path.basename(local).removeprefix('slots-fn-')}"
    return RedisSlots(dict(options.cache_backend_config), key, limit, local)
