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
