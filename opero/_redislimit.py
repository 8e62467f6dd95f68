"""Cluster-wide limiter state: the GCRA steps as one atomic Lua script on the redis server.

The script is :func:`opero._limit.gcra_reserve` / :func:`~opero._limit.gcra_confirm` written
in Lua, run on the server's clock (``TIME``), so machines with unsynchronised clocks share one
budget. Numbers cross the Lua boundary as strings: redis truncates Lua numbers to integers.
When the server is unreachable the limiter falls back to the machine-wide store (one warning),
so calls are still limited on this host and never fail.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from typing import Any

from ._errors import ConfigurationError
from ._redisconn import get_link
from ._shmstore import ShmStore, function_path, scope_path
from ._telemetry import logger

__all__ = ["RedisStore"]

GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tat', 'last')
local tat = tonumber(state[1]) or 0
local last = tonumber(state[2]) or (now - 1e6)
local delay = 0
if ARGV[1] == 'reserve' then
  if tat < now then tat = now end
  local start = math.max(now, tat - (burst - 1) * interval)
  delay = start - now
  tat = tat + interval
elseif burst == 1 and now < last + interval then
  delay = last + interval - now
elseif now > last then
  last = now
end
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat), 'last', string.format('%.6f', last),
           'rate', ARGV[4], 'burst', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now + 60) * 1000))
return string.format('%.9f', delay)
"""


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
        "key",
        "local_path",
        "rate",
    )

    def __init__(self, config: dict[str, Any], key: str, rate: float, burst: int, local_path: str) -> None:
        self.config = config
        self.key = key
        self.rate = float(rate)
        self.burst = int(burst)
        self.local_path = local_path
        self._link = get_link(config)
        self._fallback: ShmStore | None = None
        # Threads that find the server down together must share one fallback store.
        self._fallback_lock = threading.Lock()
        self._warned = False

    @classmethod
    def for_limit(
        cls, config: dict[str, Any], name: str, rate: float, burst: int, scoped: bool
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
        tail = local.rsplit("-fn-", 1)[1].removesuffix(".gcra")
        return cls(config, f"opero:limit:fn:{socket.gethostname()}:{tail}", rate, burst, local)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisStore, (self.config, self.key, self.rate, self.burst, self.local_path))

    def _check_scope(self) -> None:
        client = self._link.client()
        if client is None:
            return
        try:
            rate, burst = client.hmget(self.key, "rate", "burst")
        except Exception as exc:  # checked again on use; a down server must not fail decoration
            self._link.failed(exc)
            return
        if rate is not None and (float(rate), int(burst)) != (self.rate, self.burst):
            raise ConfigurationError(
                f"rate_limit_scope key {self.key!r} on {self._link.url} is in use with "
                f"rate_limit={float(rate):g}, rate_burst={int(burst)}; got rate_limit={self.rate:g}, "
                f"rate_burst={self.burst}. Functions sharing a scope must give the same rate."
            )

    def _step(self, mode: str, interval: float, burst: int) -> float:
        client = self._link.client()
        if client is not None:
            try:
                delay = self._link.script(GCRA_LUA)(
                    keys=[self.key], args=[mode, repr(interval), burst, repr(self.rate)]
                )
            except Exception as exc:
                self._link.failed(exc)
                self._warn(exc)
            else:
                self._link.succeeded()
                self._warned = False
                return float(delay)
        else:
            self._warn(None)
        with self._fallback_lock:
            if self._fallback is None:
                # The decorating process owns (and at exit removes) a function budget's file.
                owner = f"-fn-{os.getpid()}-" in self.local_path
                self._fallback = ShmStore(self.local_path, self.rate, self.burst, scoped=False, owner=owner)
        return (
            self._fallback.reserve(interval, burst)
            if mode == "reserve"
            else self._fallback.confirm(interval, burst)
        )

    def _warn(self, exc: BaseException | None) -> None:
        if self._warned:
            return
        self._warned = True
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "server down"
        message = (
            f"opero: redis rate limit {self.key!r} at {self._link.url} unavailable ({reason}); "
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

    def __repr__(self) -> str:
        return f"<RedisStore {self.key} on {self._link.url}>"
