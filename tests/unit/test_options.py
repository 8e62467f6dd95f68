"""Options: validation at decoration time, configure(), environment (SPEC §2)."""

from __future__ import annotations

import pytest

import opero as opero_pkg
from opero import ConfigurationError, opero


def f(x: int, key: list[str] | None = None) -> int:
    return x


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries=-1 is not valid: retries must be an integer >= 0"),
        ({"retries": 1.5}, "retries=1.5"),
        ({"rate_limit": 0}, "rate_limit=0 is not valid"),
        ({"rate_limit": -3}, "calls per second > 0"),
        ({"min_delay": -0.1}, "min_delay=-0.1"),
        ({"max_delay": -1}, "max_delay=-1"),
        ({"min_delay": 2, "max_delay": 1}, "min_delay must be <= max_delay"),
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": -1}, "timeout=-1"),
        ({"cache_backend": "mongo"}, "'memory', 'disk', 'redis'"),
        ({"rate_limit_backend": "zk"}, "'local', 'redis'"),
        ({"mode": "fork"}, "'thread', 'process', 'async', 'async_process', 'dask'"),
        ({"workers": 0}, "workers=0"),
        ({"rate_burst": 0}, "rate_burst=0"),
        ({"backoff_factor": 0.5}, "backoff_factor=0.5"),
        ({"retry_on": "ValueError"}, "retry_on='ValueError'"),
        ({"retry_on": (ValueError, 3)}, "tuple of exception classes"),
        ({"cache_ttl": -5}, "cache_ttl=-5"),
        ({"chunksize": 0}, "chunksize=0"),
        ({"on_retry": 3}, "on_retry=3"),
        ({"cache": "yes"}, "cache='yes'"),
    ],
)
def test_invalid_values_name_value_and_allowed(options: dict[str, object], fragment: str) -> None:
    """Each invalid value raises ConfigurationError saying what was given and what is allowed."""
    with pytest.raises(ConfigurationError) as info:
        opero(**options)(f)
    assert fragment in str(info.value)


def test_configuration_error_is_a_value_error() -> None:
    """ConfigurationError is an OperoError and a ValueError."""
    assert issubclass(ConfigurationError, opero_pkg.OperoError)
    assert issubclass(ConfigurationError, ValueError)


def test_unknown_name_hint() -> None:
    """A misspelt option names the closest valid one."""
    with pytest.raises(ConfigurationError, match="did you mean 'cache_ttl'"):
        opero(cache_tl=3)


def test_arg_fallback_must_name_a_parameter() -> None:
    """arg_fallback naming no parameter is refused at decoration time, listing the parameters."""
    with pytest.raises(ConfigurationError, match="arg_fallback='keys' is not a parameter") as info:
        opero(arg_fallback="keys")(f)
    assert "x, key" in str(info.value)


def test_arg_fallback_through_kwargs_allowed() -> None:
    """With **kwargs the fallback parameter may arrive by keyword."""

    @opero(arg_fallback="token", retries=0)
    def g(**kwargs: list[str]) -> str:
        if kwargs["token"][0] == "bad":
            raise ConnectionError
        return kwargs["token"][0]

    assert g(token=["bad", "ok"]) == "ok"


def test_configure_changes_defaults_for_later_decorations() -> None:
    """configure() sets defaults; explicit decorator arguments still win."""
    opero_pkg.configure(retries=0)
    calls: list[int] = []

    @opero
    def once() -> None:
        calls.append(1)
        raise ConnectionError

    @opero(retries=1, min_delay=0.001)
    def twice() -> None:
        calls.append(2)
        raise ConnectionError

    with pytest.raises(opero_pkg.AllFailedError):
        once()
    with pytest.raises(opero_pkg.AllFailedError):
        twice()
    assert calls == [1, 2, 2]


def test_configure_validates() -> None:
    """configure() rejects unknown names and bad values and keeps the previous state."""
    with pytest.raises(ConfigurationError):
        opero_pkg.configure(retries=-2)
    with pytest.raises(ConfigurationError):
        opero_pkg.configure(bogus=1)
    from opero._options import current_overrides

    assert current_overrides() == {}


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPERO_DEFAULT_TIMEOUT / OPERO_MAX_WORKERS / OPERO_CACHE_BACKEND feed the defaults."""
    from opero._options import resolve_options

    monkeypatch.setenv("OPERO_DEFAULT_TIMEOUT", "2.5")
    monkeypatch.setenv("OPERO_MAX_WORKERS", "7")
    monkeypatch.setenv("OPERO_CACHE_BACKEND", "memory")
    o = resolve_options({})
    assert (o.timeout, o.workers, o.cache_backend) == (2.5, 7, "memory")
    assert resolve_options({"timeout": 1}).timeout == 1
    monkeypatch.setenv("OPERO_MAX_WORKERS", "many")
    with pytest.raises(ConfigurationError, match="OPERO_MAX_WORKERS='many'"):
        resolve_options({})


def test_seed_config_dict_feeds_both_decorators() -> None:
    """The seed's OperoConfig.as_dict() (with mode/workers) decorates with @opero."""
    config = {
        "retries": 1,
        "backoff_factor": 1.0,
        "cache": True,
        "cache_ttl": 60,
        "rate_limit": 5.0,
        "workers": 5,
        "mode": "thread",
        "min_delay": 0.1,
        "max_delay": 30.0,
        "cache_backend": "memory",
    }

    @opero(**config)
    def configured() -> str:
        return "ok"

    assert configured() == "ok"


def test_options_are_frozen() -> None:
    """The resolved option set cannot be mutated."""
    import dataclasses

    from opero._options import resolve_options

    o = resolve_options({"retries": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.retries = 5  # type: ignore[misc]
    assert o.replace(retries=4).retries == 4


# -- issue 11 point 10, issue 12 point 1: values, backend settings, the new options ------------


@pytest.mark.parametrize(
    "name",
    [
        "backoff_factor",
        "min_delay",
        "max_delay",
        "jitter",
        "timeout",
        "rate_limit",
        "deadline",
        "fallback_recheck",
        "cache_ttl",
        "rate_start",
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_rejected_for_every_float_option(name: str, value: float) -> None:
    """NaN/inf is a ConfigurationError naming the option (rate_limit=nan used to mean no limit)."""
    extra = {"rate_limit": 5.0} if name == "rate_start" else {}
    with pytest.raises(ConfigurationError, match=rf"{name}=(nan|inf)"):
        opero(**{name: value, **extra})  # type: ignore[misc]


def test_backend_config_unknown_key_gets_a_hint() -> None:
    """A misspelt disk setting names the key, the closest valid one and the allowed keys."""
    with pytest.raises(
        ConfigurationError, match=r"'locaton'.*did you mean 'location'.*allowed: location, max_size"
    ):
        opero(cache=True, cache_backend="disk", cache_backend_config={"locaton": "/tmp/x"})


def test_backend_config_values_are_checked() -> None:
    """max_size=-1 (which used to lose results) and a non-integer port are errors."""
    with pytest.raises(ConfigurationError, match=r"cache_backend_config\['max_size'\]=-1"):
        opero(cache=True, cache_backend_config={"max_size": -1})
    with pytest.raises(ConfigurationError, match=r"\['port'\]='6379'.*integer"):
        opero(cache=True, cache_backend="redis", cache_backend_config={"port": "6379"})


def test_redis_limiter_settings_are_allowed_with_a_memory_cache() -> None:
    """rate_limit_backend='redis' reads its server from cache_backend_config too."""
    from opero._options import resolve_options

    o = resolve_options(
        {
            "rate_limit": 5,
            "rate_limit_backend": "redis",
            "cache_backend_config": {"url": "redis://127.0.0.1:1/0"},
        }
    )
    assert o.cache_backend_config == {"url": "redis://127.0.0.1:1/0"}


def test_bad_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad OPERO_* value raises an error that names the variable and what is allowed."""
    from opero._options import resolve_options

    monkeypatch.setenv("OPERO_DEFAULT_TIMEOUT", "-3")
    with pytest.raises(ConfigurationError, match=r"OPERO_DEFAULT_TIMEOUT='-3'.*seconds > 0"):
        resolve_options({})
    monkeypatch.setenv("OPERO_DEFAULT_TIMEOUT", "1")
    monkeypatch.setenv("OPERO_CACHE_BACKEND", "sqlite")
    with pytest.raises(ConfigurationError, match=r"OPERO_CACHE_BACKEND='sqlite'.*memory, disk, redis"):
        resolve_options({})


def test_circuit_breaker_settings() -> None:
    """True means the defaults; a dict overrides some; a typo or a bad value is an error."""
    from opero._options import resolve_options

    assert resolve_options({"circuit_breaker": True}).breaker == {
        "failures": 5,
        "window": 10.0,
        "open": 30.0,
        "fail_fast": False,
    }
    assert resolve_options({"circuit_breaker": {"failures": 2}}).breaker["failures"] == 2  # type: ignore[index]
    assert resolve_options({}).breaker is None
    with pytest.raises(ConfigurationError, match=r"'failure'.*did you mean 'failures'"):
        opero(circuit_breaker={"failure": 3})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigurationError, match=r"circuit_breaker\['open'\]=0"):
        opero(circuit_breaker={"open": 0})


def test_adaptive_rate_options() -> None:
    """rate_limit='auto' starts at rate_start; adaptive needs a ceiling; start <= ceiling."""
    from opero._options import resolve_options

    o = resolve_options({"rate_limit": "auto", "rate_start": 40})
    assert (o.is_adaptive, o.start_rate, o.rate_ceiling) == (True, 40.0, None)
    o = resolve_options({"rate_limit": 20, "adaptive": True})
    assert (o.is_adaptive, o.start_rate, o.rate_ceiling) == (True, 20.0, 20.0)
    with pytest.raises(ConfigurationError, match="adaptive=True needs a rate_limit"):
        opero(adaptive=True)
    with pytest.raises(ConfigurationError, match="rate_start=50 is above rate_limit=20"):
        opero(rate_limit=20, adaptive=True, rate_start=50)
    with pytest.raises(ConfigurationError, match="rate_limit='fast'"):
        opero(rate_limit="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("reraise", 1),
        ("fallback_sticky", "yes"),
        ("wait", 3),
        ("fallback_on", 5),
        ("progress", "bar"),
        ("workers", 0),
    ],
)
def test_new_options_are_validated(name: str, value: object) -> None:
    """Each new option rejects a value of the wrong kind, naming it."""
    with pytest.raises(ConfigurationError, match=rf"{name}="):
        opero(**{name: value})  # type: ignore[misc]


def test_progress_and_workers_accept_their_forms() -> None:
    """progress takes True/False/'auto'/a dict/a tqdm class; workers=-1 means every CPU."""
    import os

    import tqdm

    from opero import opmap

    for progress in (True, False, "auto", {"desc": "x"}, tqdm.tqdm):
        opmap(progress=progress)(lambda x: x)  # type: ignore[call-overload]

    @opmap(workers=-1, progress=False)
    def pid(_: int) -> int:
        return os.getpid()

    assert len(pid(range(3))) == 3
