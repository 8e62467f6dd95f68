"""One validated, frozen option set shared by ``@opero`` and ``@opmap``.

Precedence, lowest first: built-in defaults, ``OPERO_*`` environment variables,
``opero.configure(...)``, then the decorator's own arguments. Options are resolved once, at
decoration time, so a later ``configure()`` changes functions decorated after it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypedDict, TypeGuard, Unpack

from ._errors import ConfigurationError

__all__ = [
    "BREAKER_DEFAULTS",
    "MAP_ONLY",
    "MODES",
    "BreakerOptions",
    "BreakerSettings",
    "OperoOptions",
    "Options",
    "configure",
    "resolve_options",
]

# The one table of each plug-in kind: a name users give -> the module (in ``stores/`` or
# ``executors/``) that provides it, imported on first use. Adding a backend or a mode is one
# file and one line here (plus the option's ``Literal`` in OperoOptions).
#: ``cache_backend`` -> ``opero.stores.<module>`` providing ``make_cache(options, builder)``.
CACHE_BACKENDS: Mapping[str, str] = MappingProxyType({"memory": "memory", "disk": "disk", "redis": "redis"})
#: ``rate_limit_backend`` -> ``opero.stores.<module>`` providing ``limiter_store(...)``.
LIMIT_BACKENDS: Mapping[str, str] = MappingProxyType({"local": "host", "redis": "redis"})
#: ``mode`` -> ``opero.executors.<module>`` providing ``outcomes(call, source, window)``.
MODES: Mapping[str, str] = MappingProxyType(
    {
        "thread": "local",
        "process": "processes",
        "async": "local",
        "async_process": "processes",
        "dask": "dask",
    }
)
CALLBACKS = ("on_retry", "on_success", "on_failure", "on_cache_hit")
#: Options that only ``@opmap`` uses; ``@opero`` accepts and ignores them.
MAP_ONLY = frozenset({"mode", "workers", "ordered", "progress", "chunksize", "batch_size"})
#: The settings each backend reads from ``cache_backend_config``.
BACKEND_SETTINGS: Mapping[str, frozenset[str]] = {
    "memory": frozenset({"max_size"}),
    "disk": frozenset({"location", "max_size"}),
    "redis": frozenset(
        {"url", "host", "port", "db", "password", "username", "socket_timeout", "socket_connect_timeout"}
    ),
}

#: What ``retry_on`` and ``fallback_on`` accept: an exception class, a tuple of them, or a
#: predicate returning True/False or a number of seconds to wait (stamina's convention).
ErrorFilter = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool | float]


class BreakerOptions(TypedDict, total=False):
    """``circuit_breaker={...}``: every key is optional; the defaults are in ``BREAKER_DEFAULTS``."""

    failures: int
    """failed calls within ``window`` seconds that open the breaker (default 5)"""
    window: float
    """seconds over which failures are counted (default 10.0)"""
    open: float
    """seconds the breaker stays open before one half-open probe (default 30.0)"""
    fail_fast: bool
    """map items fail at once with ``CircuitOpenError`` instead of waiting for the probe"""


class BackendConfig(TypedDict, total=False):
    """``Options.cache_backend_config`` once validated: the settings a cache backend reads."""

    max_size: int
    location: str | os.PathLike[str]
    url: str
    host: str
    port: int
    db: int
    password: str
    username: str
    socket_timeout: float
    socket_connect_timeout: float


class BreakerSettings(TypedDict):
    """A breaker's settings, every key present (:attr:`Options.breaker`; see BreakerOptions)."""

    failures: int
    window: float
    open: float
    fail_fast: bool


#: ``circuit_breaker=True`` means these; a dict overrides some of them.
BREAKER_DEFAULTS: BreakerSettings = {"failures": 5, "window": 10.0, "open": 30.0, "fail_fast": False}


class OperoOptions(TypedDict, total=False):
    """Every keyword option of ``@opero``, ``@opmap`` and ``opero.configure`` (all optional).

    A type checker (mypy, pyright) rejects an unknown name or a value of the wrong type; at
    run time the same mistakes raise ``ConfigurationError`` at decoration time.
    """

    retries: int
    """extra rounds after the first: ``retries=0`` means one round (default 3)"""
    backoff_factor: float
    """delay before round k+1: ``min(max_delay, min_delay * backoff_factor ** (k - 1))`` (default 1.5)"""
    min_delay: float
    """seconds, the first backoff delay (default 0.1)"""
    max_delay: float
    """seconds, the longest backoff delay (default 30.0)"""
    jitter: float
    """extra random fraction of each delay, 0 turns it off (default 0.1)"""
    retry_on: ErrorFilter
    """errors that are retried (default: every Exception except programming errors)"""
    reraise: bool
    """after the last attempt raise the last error itself, not AllFailedError (default False)"""
    wait: Callable[[Any], float] | None
    """a tenacity wait strategy replacing the built-in exponential backoff (default None)"""
    deadline: float | None
    """seconds for a whole call across rounds; no attempt starts after it (default None)"""
    arg_fallback: str | None
    """name of the parameter holding a list of fallback candidates (default None)"""
    fallback_on: ErrorFilter | None
    """errors that move to the next candidate; others retry the same one (default: retry_on)"""
    fallback_sticky: bool
    """later calls start from the first healthy candidate (default True)"""
    fallback_recheck: float
    """seconds after which a demoted candidate is tried again (default 60.0)"""
    timeout: float | None
    """seconds per attempt; an attempt over it fails with TimeoutError (default None)"""
    cache: bool
    """cache successful results (default False)"""
    cache_ttl: float | Callable[[], float] | None
    """seconds an entry lives, or a callable returning them; None = forever (default None)"""
    cache_key: Callable[..., Hashable] | None
    """callable receiving the call's arguments by name; its value keys the entry (default None)"""
    cache_namespace: str
    """groups entries for ``clear_cache(namespace=...)`` (default "opero")"""
    cache_backend: Literal["memory", "disk", "redis"]
    """where entries live (default "memory")"""
    cache_backend_config: Mapping[str, object]
    """backend settings: memory/disk ``max_size``, disk ``location``, redis ``url`` or host/port/db"""
    rate_limit: float | str | None
    """attempts per second: a number, "500/min", "10/s", "3600/h", or "auto" (adaptive from rate_start)"""
    adaptive: bool
    """AIMD: the budget drops on 429/503 and climbs back while calls succeed (default False)"""
    rate_start: float | None
    """starting rate of an adaptive budget (default: rate_limit, or 10/s with "auto")"""
    rate_limit_scope: str | None
    """name of a budget shared by every function (and process on this host) naming it"""
    rate_burst: int
    """attempts allowed back to back, within the rate: a 1-s window sees max(burst, rate) (default 1)"""
    rate_limit_backend: Literal["local", "redis"]
    """"local" (this host) or "redis" (every machine reaching the server) (default "local")"""
    # -- pace: tokens, concurrency (opero._pace) --
    token_limit: float | str | None
    """units (tokens) per second the API allows: a number or "90000/min"; needs ``tokens`` (default None)"""
    tokens: Callable[..., float] | None
    """callable receiving the call's arguments by name, returning one attempt's estimated units"""
    token_budget: float | None
    """total units the function (or its scope) may spend; then attempts raise BudgetExhausted"""
    max_concurrency: int | None
    """at most that many attempts in flight (threads, tasks, workers, redis machines) (default None)"""
    # -- end pace --
    circuit_breaker: bool | BreakerOptions | None
    """True (defaults) or a dict of failures/window/open/fail_fast (default None: off)"""
    on_retry: Callable[[Any], object] | None
    """called with the Event of each scheduled retry"""
    on_success: Callable[[Any], object] | None
    """called with the Event of each successful call"""
    on_failure: Callable[[Any], object] | None
    """called with the Event of each failed call"""
    on_cache_hit: Callable[[Any], object] | None
    """called with the Event of each cache hit"""
    mode: Literal["thread", "process", "async", "async_process", "dask"] | None
    """opmap: where items run (default: "async" for async def, else "thread")"""
    workers: int | None
    """opmap: parallelism; -1 means every CPU, -2 all but one (default: the mode's)"""
    ordered: bool
    """opmap: results in input order; False yields in completion order (default True)"""
    progress: bool | Literal["auto"] | Mapping[str, object] | type
    """opmap: a tqdm bar: True/False, "auto", a dict of tqdm options or a tqdm class"""
    chunksize: int | Literal["auto"]
    """opmap: items per task sent to a process or dask worker (default "auto")"""
    batch_size: int | None
    """opmap: the function takes a list of up to N items and returns as many results (default None)"""


@dataclass(frozen=True, slots=True)
class Options:
    """The resolved options of one decorated function (see :class:`OperoOptions`)."""

    retries: int = 3
    backoff_factor: float = 1.5
    min_delay: float = 0.1
    max_delay: float = 30.0
    jitter: float = 0.1
    #: the default ``(Exception,)`` excludes programming errors (see ``_policy``); an explicit
    #: value is used as given.
    retry_on: ErrorFilter = (Exception,)
    reraise: bool = False
    wait: Callable[..., float] | None = None
    deadline: float | None = None
    arg_fallback: str | None = None
    fallback_on: ErrorFilter | None = None
    fallback_sticky: bool = True
    fallback_recheck: float = 60.0
    timeout: float | None = None
    cache: bool = False
    cache_ttl: float | Callable[[], float] | None = None
    cache_key: Callable[..., Hashable] | None = None
    cache_namespace: str = "opero"
    cache_backend: str = "memory"
    # repr=False: it may hold a redis password, and options end up in reprs and logs
    cache_backend_config: BackendConfig = field(default_factory=lambda: BackendConfig(), repr=False)
    rate_limit: float | str | None = None
    adaptive: bool = False
    rate_start: float | None = None
    rate_limit_scope: str | None = None
    rate_burst: int = 1
    rate_limit_backend: str = "local"
    # -- pace: tokens, concurrency (opero._pace) --
    token_limit: float | str | None = None
    tokens: Callable[..., float] | None = None
    token_budget: float | None = None
    max_concurrency: int | None = None
    # -- end pace --
    circuit_breaker: bool | BreakerOptions | None = None
    on_retry: Callable[..., object] | None = None
    on_success: Callable[..., object] | None = None
    on_failure: Callable[..., object] | None = None
    on_cache_hit: Callable[..., object] | None = None
    mode: str | None = None
    workers: int | None = None
    ordered: bool = True
    progress: bool | str | Mapping[str, object] | type = True
    chunksize: int | str = "auto"
    #: opmap: items per call of a batch function (None: one item per call)
    batch_size: int | None = None

    @property
    def breaker(self) -> BreakerSettings | None:
        """The circuit breaker's settings with defaults filled in, or None when it is off."""
        cb = self.circuit_breaker
        if cb is None or cb is False:
            return None
        given: BreakerOptions = {} if cb is True else cb
        return {**BREAKER_DEFAULTS, **given}

    @property
    def start_rate(self) -> float | None:
        """The rate a limiter starts from: ``rate_start``, else ``rate_limit``; "auto" alone: 10/s."""
        if self.rate_limit is None:
            return None
        if self.rate_start is not None:
            return float(self.rate_start)
        return 10.0 if self.rate_limit == "auto" else float(self.rate_limit)

    @property
    def rate_ceiling(self) -> float | None:
        """The highest rate a budget may reach: ``rate_limit``, or None for "auto" (no ceiling)."""
        rate = self.rate_limit
        return None if rate is None or rate == "auto" else float(rate)

    @property
    def is_adaptive(self) -> bool:
        """True when the rate budget follows the server (``rate_limit="auto"`` or ``adaptive``)."""
        return self.rate_limit == "auto" or (self.adaptive and self.rate_limit is not None)

    def as_dict(self) -> dict[str, object]:
        """Return the options as a plain dict (one entry per option)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: object) -> Options:
        """Return a validated copy with ``changes`` applied."""
        _check_names(changes)
        new = _unchecked(self, changes)
        _validate(new)
        return new


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Options))


def _unchecked(base: Options, changes: Mapping[str, Any]) -> Options:
    """``base`` with ``changes``: the one place untyped values (decorator keywords,
    ``configure()``, ``OPERO_*`` variables) become typed fields; callers validate the result."""
    return dataclasses.replace(base, **changes)


_overrides: dict[str, object] = {}
_overrides_lock = threading.Lock()


def _check_names(options: Mapping[str, object]) -> None:
    for name in options:
        if name not in OPTION_NAMES:
            close = _close_matches(name, OPTION_NAMES, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"unknown option {name!r}{hint} Valid options: {', '.join(OPTION_NAMES)}"
            )


def _is_number(value: object) -> TypeGuard[float]:
    # NaN and infinity are never valid: rate_limit=nan would silently mean "no limit".
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(name: str, value: object, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{name}={value!r} is not valid: {name} must be {allowed}")


def _is_exception_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _error_filter(value: object) -> bool:
    return (
        _is_exception_class(value)
        or (isinstance(value, tuple) and bool(value) and all(map(_is_exception_class, value)))
        or (callable(value) and not isinstance(value, type))
    )


#: Is an option's value valid?
Check = Callable[[object], bool]
#: One check of one or more options: (names, is the value valid?, what is allowed).
Rule = tuple[tuple[str, ...], Check, str]


def _int_from(low: int) -> Check:
    return lambda v: _is_int(v) and v >= low


def _number_from(low: float) -> Check:
    return lambda v: _is_number(v) and v >= low


def _positive(v: object) -> bool:
    return _is_number(v) and v > 0


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _flag(v: object) -> bool:
    return isinstance(v, bool)


def _name(v: object) -> bool:
    return isinstance(v, str) and bool(v)


def _apply(o: object, rules: tuple[Rule, ...]) -> None:
    """Raise for the first value, in table order, that its rule rejects."""
    for names, ok, allowed in rules:
        for name in names:
            value = getattr(o, name)
            if not ok(value):
                raise _bad(name, value, allowed)


def _choices(table: Mapping[str, str] | tuple[str, ...]) -> str:
    return f"one of {', '.join(map(repr, table))}"


_FILTER = "an exception class, a non-empty tuple of exception classes or a predicate exc -> bool"
_BACKOFF_RULES: tuple[Rule, ...] = (
    (("retries",), _int_from(0), "an integer >= 0"),
    (("backoff_factor",), _number_from(1), "a finite number >= 1"),
    (("min_delay", "max_delay", "jitter"), _number_from(0), "a finite number >= 0"),
)
_CALL_RULES: tuple[Rule, ...] = (
    (("retry_on",), _error_filter, f"{_FILTER} | seconds"),
    (("fallback_on",), _optional(_error_filter), f"None, {_FILTER}"),
    (("reraise", "cache", "adaptive", "fallback_sticky", "ordered"), _flag, "True or False"),
    (("wait",), _optional(callable), "None or a tenacity wait strategy (e.g. wait_random_exponential())"),
    (("deadline", "timeout", "rate_start"), _optional(_positive), "None or a finite number of seconds > 0"),
    (("fallback_recheck",), _number_from(0), "a finite number of seconds >= 0"),
    (("arg_fallback",), _optional(_name), "None or a parameter name"),
)
_CACHE_RULES: tuple[Rule, ...] = (
    (
        ("cache_ttl",),
        lambda v: v is None or callable(v) or _positive(v),
        "None, a finite number of seconds > 0 or a callable returning one",
    ),
    (("cache_key",), _optional(callable), "None or a callable receiving the arguments by name"),
    (("cache_namespace",), _name, "a non-empty string"),
    (("cache_backend",), lambda v: v in CACHE_BACKENDS, _choices(CACHE_BACKENDS)),
    (("rate_limit_backend",), lambda v: v in LIMIT_BACKENDS, _choices(LIMIT_BACKENDS)),
)
_MAP_RULES: tuple[Rule, ...] = (
    (CALLBACKS, _optional(callable), "None or a callable receiving an event"),
    (("mode",), lambda v: v is None or v in MODES, _choices(MODES)),
    (
        ("workers",),
        lambda v: v is None or (_is_int(v) and v != 0),
        "None, an integer >= 1, or -1 for every CPU (-2: all but one)",
    ),
    (
        ("progress",),
        # a tqdm class: tqdm.tqdm, tqdm.notebook.tqdm, a subclass
        lambda v: isinstance(v, bool | type | Mapping) or v == "auto",
        "True, False, 'auto', a dict of tqdm options or a tqdm class",
    ),
    (("chunksize",), lambda v: v == "auto" or _int_from(1)(v), "'auto' or an integer >= 1"),
    # -- batch_size (opero._batch) --
    (("batch_size",), _optional(_int_from(1)), "None or an integer >= 1 (items per call)"),
)


def _validate(o: Options) -> None:
    _validate_pace(o)  # pace: first, it turns rate strings ("500/min") into numbers
    _apply(o, _BACKOFF_RULES)
    if o.min_delay > o.max_delay:
        raise ConfigurationError(
            f"min_delay={o.min_delay!r} is greater than max_delay={o.max_delay!r}: "
            "min_delay must be <= max_delay"
        )
    _apply(o, _CALL_RULES)
    _apply(o, _CACHE_RULES)
    _validate_backend_config(o)
    _validate_rate(o)
    _validate_breaker(o.circuit_breaker)
    _apply(o, _MAP_RULES)


def _validate_rate(o: Options) -> None:
    rate = o.rate_limit
    if rate is not None and rate != "auto" and not _positive(rate):
        raise _bad("rate_limit", rate, "None, 'auto' or a finite number of calls per second > 0")
    if o.adaptive and rate is None:
        raise ConfigurationError(
            "adaptive=True needs a rate_limit (a ceiling in calls per second, or 'auto')"
        )
    if o.rate_start is not None and not o.is_adaptive:
        # a fixed rate never moves: starting elsewhere than rate_limit would run at one rate
        # while stats.budget shows the other
        raise ConfigurationError(
            f"rate_start={o.rate_start!r} needs an adaptive rate: rate_limit='auto', or adaptive=True "
            f"with a rate_limit (got rate_limit={rate!r}, adaptive={o.adaptive!r})"
        )
    if o.rate_start is not None and _is_number(rate) and o.rate_start > rate:
        raise ConfigurationError(
            f"rate_start={o.rate_start!r} is above rate_limit={rate!r}: an adaptive rate never exceeds it"
        )
    _apply(o, ((("rate_limit_scope",), _optional(_name), "None or a non-empty string"),))
    if o.rate_limit_scope is not None and rate is None and not _paced(o):
        raise ConfigurationError(
            f"rate_limit_scope={o.rate_limit_scope!r} needs a rate_limit (calls per second > 0), "
            "a token_limit, a token_budget or a max_concurrency"
        )
    _apply(o, ((("rate_burst",), _int_from(1), "an integer >= 1"),))


# -- pace: rate strings, tokens, concurrency -------------------------------------------------


def _paced(o: Options) -> bool:
    return o.token_limit is not None or o.token_budget is not None or o.max_concurrency is not None


def _rate_value(o: Options, name: str, auto: bool) -> None:
    """Turn a rate string into units per second in place (the options are frozen)."""
    value: object = getattr(o, name)
    if not isinstance(value, str) or (auto and value == "auto"):
        return
    from ._rates import RATE_FORMS, parse_rate

    rate = parse_rate(value)
    if rate is None:
        forms = "None, 'auto', " if auto else "None, "
        raise _bad(name, value, f"{forms}a finite number per second > 0, or a string {RATE_FORMS}")
    object.__setattr__(o, name, rate)


def _validate_pace(o: Options) -> None:
    _rate_value(o, "rate_limit", auto=True)
    _rate_value(o, "token_limit", auto=False)
    _apply(o, _TOKEN_RULES)
    limit = o.token_limit
    if limit is not None and o.tokens is None:
        raise ConfigurationError(
            f"token_limit={limit!r} needs tokens= (a callable receiving the call's arguments by name "
            "and returning the units one attempt is estimated to take)"
        )
    if o.tokens is not None and limit is None and o.token_budget is None:
        raise ConfigurationError("tokens= needs a token_limit (e.g. '90000/min') or a token_budget")
    _apply(o, _BUDGET_RULES)


_TOKEN_RULES: tuple[Rule, ...] = (
    (
        ("token_limit",),
        _optional(_positive),
        "None, a finite number of units per second > 0, or e.g. '90000/min'",
    ),
    (("tokens",), _optional(callable), "None or a callable receiving the arguments by name"),
)
_BUDGET_RULES: tuple[Rule, ...] = (
    (("token_budget",), _optional(_positive), "None or a finite number of units > 0"),
    (("max_concurrency",), _optional(_int_from(1)), "None or an integer >= 1"),
)


# -- end pace ----------------------------------------------------------------------------------


def _did_you_mean(key: object, allowed: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a mistyped dict key close to an allowed one, else ``""``."""
    close = _close_matches(str(key), allowed, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


_SECONDS: tuple[Check, str] = (_positive, "a finite number of seconds > 0")
#: ``cache_backend_config`` key -> (is the value valid?, what is allowed).
_BACKEND_VALUES: Mapping[str, tuple[Check, str]] = {
    "max_size": (_int_from(1), "an integer >= 1"),
    "location": (lambda v: isinstance(v, str | os.PathLike), "a folder path (str or pathlib.Path)"),
    **dict.fromkeys(("url", "host", "password", "username"), (lambda v: isinstance(v, str), "a string")),
    **dict.fromkeys(("port", "db"), (_int_from(0), "an integer >= 0")),
    **dict.fromkeys(("socket_timeout", "socket_connect_timeout"), _SECONDS),
}
#: ``circuit_breaker`` key -> (is the value valid?, what is allowed).
_BREAKER_VALUES: Mapping[str, tuple[Check, str]] = {
    "failures": (_int_from(1), "an integer >= 1"),
    "window": _SECONDS,
    "open": _SECONDS,
    "fail_fast": (_flag, "True or False"),
}


def _check_keys(option: str, config: Mapping[str, object], rules: Mapping[str, tuple[Check, str]]) -> None:
    """Check each ``config`` value of a known key (unknown keys are rejected before)."""
    for key, value in config.items():
        ok, allowed = rules[key]
        if not ok(value):
            raise _bad(f"{option}[{key!r}]", value, allowed)


def _validate_backend_config(o: Options) -> None:
    config = o.cache_backend_config
    if not isinstance(config, Mapping):
        raise _bad("cache_backend_config", config, "a dict of backend settings")
    # The redis limiter reads its server from the same dict, so its keys are allowed too.
    allowed = set(BACKEND_SETTINGS[o.cache_backend])
    if o.rate_limit_backend == "redis":
        allowed |= BACKEND_SETTINGS["redis"]
    for key in config:
        if key not in allowed:
            hint = _did_you_mean(key, sorted(allowed))
            raise ConfigurationError(
                f"cache_backend_config key {key!r} is not a setting of cache_backend="
                f"{o.cache_backend!r}{hint}; allowed: {', '.join(sorted(allowed))}"
            )
    _check_keys("cache_backend_config", config, _BACKEND_VALUES)


def _validate_breaker(cb: object) -> None:
    if cb is None or isinstance(cb, bool):
        return
    if not isinstance(cb, Mapping):
        raise _bad("circuit_breaker", cb, "None, True/False or a dict of failures, window, open, fail_fast")
    for key in cb:
        if key not in BREAKER_DEFAULTS:
            hint = _did_you_mean(key, list(BREAKER_DEFAULTS))
            raise ConfigurationError(
                f"circuit_breaker key {key!r} is unknown{hint}; allowed: {', '.join(BREAKER_DEFAULTS)}"
            )
    _check_keys("circuit_breaker", cb, _BREAKER_VALUES)


#: ``OPERO_*`` variable -> (option, converter, what is allowed), for error messages too.
_ENV: tuple[tuple[str, str, Callable[[str], object], str], ...] = (
    ("OPERO_CACHE_BACKEND", "cache_backend", lambda s: s.strip().lower(), "one of memory, disk, redis"),
    ("OPERO_MAX_WORKERS", "workers", int, "an integer >= 1, or -1 for every CPU"),
    ("OPERO_DEFAULT_TIMEOUT", "timeout", float, "a finite number of seconds > 0"),
)


def _env_options() -> dict[str, object]:
    """Read the ``OPERO_*`` variables that map onto options; a bad one is named in the error."""
    out: dict[str, object] = {}
    for var, name, conv, allowed in _ENV:
        raw = os.environ.get(var)
        if not raw:
            continue
        try:
            value = conv(raw)
            _validate(_unchecked(Options(), {name: value}))
        except (ValueError, ConfigurationError):
            raise ConfigurationError(f"environment variable {var}={raw!r} is not valid: {allowed}") from None
        out[name] = value
    return out


def configure(**options: Unpack[OperoOptions]) -> None:
    """Change opero's defaults for every function decorated after this call.

    Args:
        **options: any option of ``@opero`` / ``@opmap`` (see :class:`OperoOptions`). Values are validated
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
        _validate(_unchecked(Options(), {**_env_options(), **merged}))
        _overrides.clear()
        _overrides.update(merged)


def current_overrides() -> dict[str, object]:
    """Return a copy of the ``configure()`` overrides (used by the notebook magics)."""
    with _overrides_lock:
        return dict(_overrides)


def resolve_options(explicit: Mapping[str, object], func: Callable[..., object] | None = None) -> Options:
    """Merge defaults, environment, ``configure()`` and ``explicit``; validate the result.

    Args:
        explicit: the decorator's keyword arguments.
        func: the decorated function, used to check ``arg_fallback`` against its signature.
    """
    _check_names(explicit)
    with _overrides_lock:
        merged = {**_env_options(), **_overrides, **explicit}
    opts = _unchecked(Options(), merged)
    _validate(opts)
    if func is not None and opts.arg_fallback is not None:
        _check_fallback_parameter(func, opts.arg_fallback)
    return opts


def _check_fallback_parameter(func: Callable[..., object], name: str) -> None:
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


def _close_matches(word: str, possibilities: Sequence[str], n: int, cutoff: float) -> list[str]:
    # difflib is imported only for a misspelled name: it costs ~2 ms at `import opero`.
    import difflib

    return difflib.get_close_matches(word, possibilities, n=n, cutoff=cutoff)
