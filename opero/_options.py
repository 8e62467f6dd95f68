"""One validated, frozen option set shared by ``@opero`` and ``@opmap``.

Precedence, lowest first: built-in defaults, ``OPERO_*`` environment variables,
``opero.configure(...)``, then the decorator's own arguments. Options are resolved once, at
decoration time, so a later ``configure()`` changes functions decorated after it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigurationError

__all__ = ["MAP_ONLY", "MODES", "Options", "configure", "resolve_options"]

CACHE_BACKENDS = ("memory", "disk", "redis")
LIMIT_BACKENDS = ("local", "redis")
MODES = ("thread", "process", "async", "async_process", "dask")
CALLBACKS = ("on_retry", "on_success", "on_failure", "on_cache_hit")
#: Options that only ``@opmap`` uses; ``@opero`` accepts and ignores them (§2).
MAP_ONLY = frozenset({"mode", "workers", "ordered", "progress", "chunksize"})


@dataclass(frozen=True, slots=True)
class Options:
    """The resolved options of one decorated function (see SPEC §2)."""

    retries: int = 3
    backoff_factor: float = 1.5
    min_delay: float = 0.1
    max_delay: float = 30.0
    jitter: float = 0.1
    retry_on: Any = (Exception,)
    arg_fallback: str | None = None
    timeout: float | None = None
    cache: bool = False
    cache_ttl: float | Callable[[], float] | None = None
    cache_key: Callable[..., Any] | None = None
    cache_namespace: str = "opero"
    cache_backend: str = "memory"
    cache_backend_config: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: float | None = None
    rate_limit_scope: str | None = None
    rate_burst: int = 1
    rate_limit_backend: str = "local"
    on_retry: Callable[..., Any] | None = None
    on_success: Callable[..., Any] | None = None
    on_failure: Callable[..., Any] | None = None
    on_cache_hit: Callable[..., Any] | None = None
    mode: str | None = None
    workers: int | None = None
    ordered: bool = True
    progress: bool = True
    chunksize: int | str = "auto"

    def as_dict(self) -> dict[str, Any]:
        """Return the options as a plain dict (one entry per option)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Options:
        """Return a validated copy with ``changes`` applied."""
        _check_names(changes)
        new = dataclasses.replace(self, **changes)
        _validate(new)
        return new


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Options))
_overrides: dict[str, Any] = {}
_overrides_lock = threading.Lock()


def _check_names(options: Mapping[str, Any]) -> None:
    for name in options:
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"unknown option {name!r}{hint} Valid options: {', '.join(OPTION_NAMES)}"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(name: str, value: Any, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{name}={value!r} is not valid: {name} must be {allowed}")


def _is_exception_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _validate(o: Options) -> None:
    if not isinstance(o.retries, int) or isinstance(o.retries, bool) or o.retries < 0:
        raise _bad("retries", o.retries, "an integer >= 0")
    if not _is_number(o.backoff_factor) or o.backoff_factor < 1:
        raise _bad("backoff_factor", o.backoff_factor, "a number >= 1")
    for name in ("min_delay", "max_delay", "jitter"):
        value = getattr(o, name)
        if not _is_number(value) or value < 0:
            raise _bad(name, value, "a number >= 0")
    if o.min_delay > o.max_delay:
        raise ConfigurationError(
            f"min_delay={o.min_delay!r} is greater than max_delay={o.max_delay!r}: "
            "min_delay must be <= max_delay"
        )
    retry_on = o.retry_on
    if not (
        _is_exception_class(retry_on)
        or (isinstance(retry_on, tuple) and retry_on and all(map(_is_exception_class, retry_on)))
        or (callable(retry_on) and not isinstance(retry_on, type))
    ):
        raise _bad(
            "retry_on",
            retry_on,
            "an exception class, a non-empty tuple of exception classes or a predicate exc -> bool",
        )
    if o.arg_fallback is not None and (not isinstance(o.arg_fallback, str) or not o.arg_fallback):
        raise _bad("arg_fallback", o.arg_fallback, "None or a parameter name")
    if o.timeout is not None and (not _is_number(o.timeout) or o.timeout <= 0):
        raise _bad("timeout", o.timeout, "None or a number of seconds > 0")
    if not isinstance(o.cache, bool):
        raise _bad("cache", o.cache, "True or False")
    ttl = o.cache_ttl
    if ttl is not None and not callable(ttl) and (not _is_number(ttl) or ttl <= 0):
        raise _bad("cache_ttl", ttl, "None, a number of seconds > 0 or a callable returning one")
    if o.cache_key is not None and not callable(o.cache_key):
        raise _bad("cache_key", o.cache_key, "None or a callable receiving the arguments by name")
    if not isinstance(o.cache_namespace, str) or not o.cache_namespace:
        raise _bad("cache_namespace", o.cache_namespace, "a non-empty string")
    if o.cache_backend not in CACHE_BACKENDS:
        raise _bad("cache_backend", o.cache_backend, f"one of {', '.join(map(repr, CACHE_BACKENDS))}")
    if not isinstance(o.cache_backend_config, Mapping):
        raise _bad("cache_backend_config", o.cache_backend_config, "a dict of backend settings")
    if o.rate_limit is not None and (not _is_number(o.rate_limit) or o.rate_limit <= 0):
        raise _bad("rate_limit", o.rate_limit, "None or a number of calls per second > 0")
    if o.rate_limit_scope is not None and (not isinstance(o.rate_limit_scope, str) or not o.rate_limit_scope):
        raise _bad("rate_limit_scope", o.rate_limit_scope, "None or a non-empty string")
    if o.rate_limit_scope is not None and o.rate_limit is None:
        raise ConfigurationError(
            f"rate_limit_scope={o.rate_limit_scope!r} needs a rate_limit (calls per second > 0)"
        )
    if not isinstance(o.rate_burst, int) or isinstance(o.rate_burst, bool) or o.rate_burst < 1:
        raise _bad("rate_burst", o.rate_burst, "an integer >= 1")
    if o.rate_limit_backend not in LIMIT_BACKENDS:
        raise _bad(
            "rate_limit_backend", o.rate_limit_backend, f"one of {', '.join(map(repr, LIMIT_BACKENDS))}"
        )
    for name in CALLBACKS:
        value = getattr(o, name)
        if value is not None and not callable(value):
            raise _bad(name, value, "None or a callable receiving an event")
    if o.mode is not None and o.mode not in MODES:
        raise _bad("mode", o.mode, f"None or one of {', '.join(map(repr, MODES))}")
    if o.workers is not None and (
        not isinstance(o.workers, int) or isinstance(o.workers, bool) or o.workers < 1
    ):
        raise _bad("workers", o.workers, "None or an integer >= 1")
    for name in ("ordered", "progress"):
        if not isinstance(getattr(o, name), bool):
            raise _bad(name, getattr(o, name), "True or False")
    cs = o.chunksize
    if cs != "auto" and (not isinstance(cs, int) or isinstance(cs, bool) or cs < 1):
        raise _bad("chunksize", cs, "'auto' or an integer >= 1")


def _env_options() -> dict[str, Any]:
    """Read the ``OPERO_*`` variables that map onto options."""
    out: dict[str, Any] = {}
    if backend := os.environ.get("OPERO_CACHE_BACKEND"):
        out["cache_backend"] = backend.strip().lower()
    for var, name, conv in (
        ("OPERO_MAX_WORKERS", "workers", int),
        ("OPERO_DEFAULT_TIMEOUT", "timeout", float),
    ):
        raw = os.environ.get(var)
        if raw:
            try:
                out[name] = conv(raw)
            except ValueError:
                raise ConfigurationError(f"{var}={raw!r} is not a valid {conv.__name__}") from None
    return out


def configure(**options: Any) -> None:
    """Change opero's defaults for every function decorated after this call.

    Args:
        **options: any option of ``@opero`` / ``@opmap`` (SPEC §2). Values are validated
            here; decorator arguments still win over them. Pass an option as ``None`` where
            ``None`` is a valid value to set it so; call ``configure()`` with no arguments
            to drop every override.

    Raises:
        ConfigurationError: an unknown option name or an invalid value.
    """
    _check_names(options)
    with _overrides_lock:
        if not options:
            _overrides.clear()
            return
        merged = {**_overrides, **options}
        _validate(dataclasses.replace(Options(), **_env_options(), **merged))
        _overrides.clear()
        _overrides.update(merged)


def current_overrides() -> dict[str, Any]:
    """Return a copy of the ``configure()`` overrides (used by the notebook magics)."""
    with _overrides_lock:
        return dict(_overrides)


def resolve_options(explicit: Mapping[str, Any], func: Callable[..., Any] | None = None) -> Options:
    """Merge defaults, environment, ``configure()`` and ``explicit``; validate the result.

    Args:
        explicit: the decorator's keyword arguments.
        func: the decorated function, used to check ``arg_fallback`` against its signature.
    """
    _check_names(explicit)
    with _overrides_lock:
        merged = {**_env_options(), **_overrides, **explicit}
    opts = dataclasses.replace(Options(), **merged)
    _validate(opts)
    if func is not None and opts.arg_fallback is not None:
        _check_fallback_parameter(func, opts.arg_fallback)
    return opts


def _check_fallback_parameter(func: Callable[..., Any], name: str) -> None:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    if name in params:
        kind = params[name].kind
        if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ConfigurationError(
                f"arg_fallback={name!r} names a *args/**kwargs parameter; it must name a plain parameter"
            )
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # may arrive through **kwargs
    raise ConfigurationError(
        f"arg_fallback={name!r} is not a parameter of {getattr(func, '__qualname__', func)!r}; "
        f"its parameters are: {', '.join(params) or '(none)'}"
    )
