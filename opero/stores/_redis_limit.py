"""The cluster-wide limiter state on redis: the GCRA budget (:class:`RedisStore`) and the
shared records of the adaptive rate and the breaker (:class:`RedisRecord`).

Each step is one Lua script (:mod:`._redis_scripts`) on the server's clock. While the server is
unreachable each falls back to this host's store (:mod:`.host`), with one warning.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._limit import RecordOp, window_cap
from .._telemetry import logger
from ._redis_scripts import GCRA_LUA, RECORD_LUA
from .host import HostRecord, HostStore, function_path, scope_path

if TYPE_CHECKING:
    from .redis import RedisLink

__all__ = ["RedisRecord", "RedisStore"]


def _get_link(config: dict[str, object]) -> RedisLink:
    # The link lives with the connection in .redis, which imports this module: import it late.
    from .redis import get_link

    return get_link(config)


def _numbers(reply: object) -> list[float]:
    """The numbers of a script's reply (a string of them: Lua numbers would lose fractions)."""
    return [float(x) for x in (reply.decode() if isinstance(reply, bytes) else str(reply)).split()]


class RedisRecord:
    """A shared record (adaptive rate, breaker) in one redis key, changed by Lua.

    Args:
        config: ``cache_backend_config`` (``url`` or host/port/db).
        key: the redis key.
        initial: the values of a fresh record.
        local_path: the host-wide file used while the server is unreachable.
    """

    __slots__ = ("_fallback", "_fallback_lock", "_link", "_warned", "config", "initial", "key", "local_path")

    def __init__(self, config: dict[str, object], key: str, initial: list[float], local_path: str) -> None:
        self.config = config
        self.key = key
        self.initial = [max(x, -1e300) for x in initial]
        self.local_path = local_path
        self._link = _get_link(config)
        self._fallback: HostRecord | None = None
        self._fallback_lock = threading.Lock()
        self._warned = False

    def __reduce__(self) -> tuple[object, ...]:
        return (RedisRecord, (self.config, self.key, self.initial, self.local_path))

    def _args(self, name: str, args: tuple[float, ...]) -> list[str]:
        return [name, " ".join(repr(float(x)) for x in self.initial), *(repr(float(x)) for x in args)]

    def _local(self, exc: BaseException | None) -> HostRecord:
        if not self._warned:
            self._warned = True
            logger.warning(
                "opero: redis state %r at %s unavailable (%s); shared on this machine only until it is back",
                self.key,
                self._link.shown,  # never the URL itself: it may hold the password
                self._link.reason(exc),
            )
        with self._fallback_lock:
            if self._fallback is None:
                owner = f"-fn-{os.getpid()}-" in os.path.basename(self.local_path)
                self._fallback = HostRecord(self.local_path, self.initial, owner=owner)
            return self._fallback

    def _answered(self, reply: object) -> float | tuple[float, ...]:
        # a reply: the server is reachable (again)
        self._link.succeeded()
        self._warned = False
        values = _numbers(reply)
        return values[0] if len(values) == 1 else tuple(values)

    def apply(self, name: str, op: RecordOp, *args: float) -> object:
        """Run the Lua twin of ``op`` on the server (the Python ``op`` while it is down)."""
        if self._link.client() is None:
            return self._local(None).apply(name, op, *args)
        try:
            reply = self._link.script(RECORD_LUA)(keys=[self.key], args=self._args(name, args))
        except Exception as exc:
            return self._down(exc).apply(name, op, *args)
        return self._answered(reply)

    async def apply_async(self, name: str, op: RecordOp, *args: float) -> object:
        """:meth:`apply` through ``redis.asyncio``: the event loop keeps running meanwhile."""
        if self._link.async_client() is None:
            return self._local(None).apply(name, op, *args)
        try:
            reply = await self._link.async_script(RECORD_LUA)(keys=[self.key], args=self._args(name, args))
        except Exception as exc:
            return self._down(exc).apply(name, op, *args)
        return self._answered(reply)

    def _down(self, exc: Exception) -> HostRecord:
        """The server failed just now: mark the link down, use this host's record."""
        self._link.failed(exc)
        return self._local(exc)

    def __repr__(self) -> str:
        return f"<RedisRecord {self.key} on {self._link.url}>"


class RedisStore:
    """GCRA state in one redis hash, shared by every process and machine using ``key``.

    Args:
        config: ``cache_backend_config`` (``url`` or host/port/db).
        key: the hash's key (see :meth:`for_limit`).
        rate: starts per second (stored with the state, checked for scopes).
        burst: burst size.
        local_path: the machine-wide file used while the server is unreachable.
    """

    __slots__ = (
        "_fallback",
        "_fallback_lock",
        "_link",
        "_warned",
        "burst",
        "config",
        "grant_log",
        "key",
        "local_path",
        "rate",
    )

    def __init__(self, config: dict[str, object], key: str, rate: float, burst: int, local_path: str) -> None:
        self.config = config
        self.key = key
        self.rate = float(rate)
        self.burst = int(burst)
        self.local_path = local_path
        self._link = _get_link(config)
        self._fallback: HostStore | None = None
        # Threads that find the server down together must share one fallback store.
        self._fallback_lock = threading.Lock()
        self._warned = False
        #: see ``opero._limit.Store.grant_log``; times are the server's clock (``TIME``), or
        #: this host's monotonic clock for grants made while the server was unreachable.
        self.grant_log: list[float] | None = None

    @classmethod
    def for_limit(
        cls, config: dict[str, object], name: str, rate: float, burst: int, scoped: bool
    ) -> RedisStore:
        """The store of a scope (key from its name) or of one function (host, pid, name, id).

        Raises:
            ConfigurationError: the scope is live on the server with another rate or burst.
        """
        if scoped:
            store = cls(config, f"opero:limit:scope:{name}", rate, burst, scope_path(name))
            store._check_scope()
            return store
        local = function_path(name)
        tail = os.path.basename(local).removeprefix("fn-").removesuffix(".gcra")
        return cls(config, f"opero:limit:fn:{socket.gethostname()}:{tail}", rate, burst, local)

    def __reduce__(self) -> tuple[object, ...]:
        return (RedisStore, (self.config, self.key, self.rate, self.burst, self.local_path))

    def _check_scope(self) -> None:
        client = self._link.client()
        if client is None:
            return
        try:
            reply = client.hmget(self.key, ["rate", "burst"])
        except Exception as exc:  # checked again on use; a down server must not fail decoration
            self._link.failed(exc)
            return
        values = reply if isinstance(reply, list) else []
        if len(values) != 2 or values[0] is None:  # a scope nobody uses yet
            return
        rate, burst = float(values[0]), int(values[1])
        if (rate, burst) != (self.rate, self.burst):
            raise ConfigurationError(
                f"rate_limit_scope key {self.key!r} on {self._link.shown} is in use with "
                f"rate_limit={rate:g}, rate_burst={burst}; got rate_limit={self.rate:g}, "
                f"rate_burst={self.burst}. Functions sharing a scope must give the same rate."
            )

    def _call(
        self, mode: str, interval: float, burst: int, wait: float
    ) -> tuple[list[str], list[str | float]]:
        """The GCRA script's keys (the state and its ring of recent starts) and arguments."""
        args: list[str | float] = [
            mode,
            repr(interval),
            burst,
            repr(self.rate),
            window_cap(interval, burst),
            repr(wait),
        ]
        return [self.key, self.key + ":ring"], args

    def _local(self) -> HostStore:
        with self._fallback_lock:
            if self._fallback is None:
                # The decorating process owns (and at exit removes) a function budget's file.
                owner = os.path.basename(self.local_path).startswith(f"fn-{os.getpid()}-")
                self._fallback = HostStore(self.local_path, self.rate, self.burst, scoped=False, owner=owner)
            self._fallback.grant_log = self.grant_log
            return self._fallback

    def _step(self, mode: str, interval: float, burst: int, wait: float = 0.0) -> float:
        if self._link.client() is None:
            return self._fall_back(None, mode, interval, burst, wait)
        try:
            keys, args = self._call(mode, interval, burst, wait)
            reply = self._link.script(GCRA_LUA)(keys=keys, args=args)
        except Exception as exc:
            return self._fall_back(exc, mode, interval, burst, wait)
        return self._granted(mode, reply)

    def _granted(self, mode: str, reply: object) -> float:
        # a reply: the server is reachable (again)
        self._link.succeeded()
        self._warned = False
        delay, now = _numbers(reply)
        if self.grant_log is not None and mode == "confirm" and delay <= 0:
            self.grant_log.append(now)
        return float(delay)

    def _fall_back(self, exc: Exception | None, mode: str, interval: float, burst: int, wait: float) -> float:
        """The step on this host's store: the server is down (``exc``: it failed just now)."""
        if exc is not None:
            self._link.failed(exc)
        self._warn(exc)
        local = self._local()
        if mode == "reserve":
            return local.reserve(interval, burst)
        if mode == "hold":
            local.hold(interval, burst, wait)
            return 0.0
        return local.confirm(interval, burst)

    async def _step_async(self, mode: str, interval: float, burst: int, wait: float = 0.0) -> float:
        if self._link.async_client() is None:
            return self._fall_back(None, mode, interval, burst, wait)
        try:
            keys, args = self._call(mode, interval, burst, wait)
            reply = await self._link.async_script(GCRA_LUA)(keys=keys, args=args)
        except Exception as exc:
            return self._fall_back(exc, mode, interval, burst, wait)
        return self._granted(mode, reply)

    def _warn(self, exc: BaseException | None) -> None:
        if self._warned:
            return
        self._warned = True
        reason = self._link.reason(exc)
        message = (
            f"opero: redis rate limit {self.key!r} at {self._link.shown} unavailable ({reason}); "
            "limiting on this machine only until it is back"
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=6)

    def reserve(self, interval: float, burst: int) -> float:
        """One atomic GCRA reserve step on the server."""
        return self._step("reserve", interval, burst)

    def confirm(self, interval: float, burst: int) -> float:
        """One atomic GCRA confirm step on the server."""
        return self._step("confirm", interval, burst)

    def hold(self, interval: float, burst: int, wait: float) -> None:
        """Push the budget's next start ``wait`` seconds away, on the server."""
        self._step("hold", interval, burst, wait)

    async def reserve_async(self, interval: float, burst: int) -> float:
        """The reserve step through ``redis.asyncio`` (never blocks the event loop)."""
        return await self._step_async("reserve", interval, burst)

    async def confirm_async(self, interval: float, burst: int) -> float:
        """The confirm step through ``redis.asyncio`` (never blocks the event loop)."""
        return await self._step_async("confirm", interval, burst)

    async def hold_async(self, interval: float, burst: int, wait: float) -> None:
        """:meth:`hold` through ``redis.asyncio``."""
        await self._step_async("hold", interval, burst, wait)

    def __repr__(self) -> str:
        return f"<RedisStore {self.key} on {self._link.shown}>"
