"""Seams, round 3 (issue 22 points 2-5, issue 21's error presentation): real clients, real
servers. ``AllFailedError`` keeps its cause across processes and caches, a demoted fallback
candidate is tried last (never skipped), a wrong redis password says so, a ``None`` default
of an ``arg_fallback`` parameter is noted once, and a failure leads with type and status."""

from __future__ import annotations

import logging

import pytest

from opero import AllFailedError
from opero import opero as opero_decorator


def test_healthy_first_costs_nothing_and_rounds_reach_the_demoted() -> None:
    """With a healthy candidate working, the demoted one is not tried; when all fail, every
    round tries every candidate, healthy first (tuples stay tuples)."""
    seen: list[tuple[str, ...]] = []
    bad = {"a"}

    @opero_decorator(retries=1, min_delay=0.001, arg_fallback="key", fallback_on=PermissionError)
    def call(key: tuple[str, ...] = ("a", "b", "c")) -> str:
        seen.append(key)
        if key[0] in bad:
            raise PermissionError(f"401 for {key[0]}")
        return key[0]

    assert call() == "b"
    assert call() == "b"  # a is demoted: not tried while b works
    assert seen == [("a", "b", "c"), ("b", "c"), ("b", "c", "a")]
    seen.clear()
    bad.update({"b", "c"})
    with pytest.raises(AllFailedError) as info:
        call()
    assert [k[0] for k in seen] == ["b", "c", "a", "b", "c", "a"]
    assert all(isinstance(k, tuple) for k in seen)
    assert len(info.value.errors) == 6


# -- 4. a None default of an arg_fallback parameter is noted once ----------------------------


def test_none_default_without_candidates_is_noted_once_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Two calls that give no candidates (default None): one DEBUG record, no value in it
    (a call made while DEBUG was off does not use it up)."""
    agents = ["Mozilla/5.0 (compatible; SecretBot/1.0)"]

    @opero_decorator(retries=1, min_delay=0.001, arg_fallback="user_agent")
    def scrape(url: str, user_agent: list[str] | None = None) -> str:
        if user_agent is None:
            user_agent = agents  # built inside: opero cannot rotate it
        raise ConnectionError(f"blocked: {user_agent[0]}")

    with pytest.raises(AllFailedError):
        scrape("before")  # DEBUG off: nothing said, and the note is kept for later
    with caplog.at_level(logging.DEBUG, logger="opero"):
        for url in ("a", "b"):
            with pytest.raises(AllFailedError):
                scrape(url)
    notes = [r for r in caplog.records if "no candidates" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelno == logging.DEBUG and notes[0].name == "opero"
    text = notes[0].getMessage()
    assert "scrape" in text and "'user_agent'" in text and "default" in text
    assert "SecretBot" not in text


def test_no_note_when_candidates_are_given_or_the_default_holds_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Candidates at the call or in the default: nothing to say (and rotation happens)."""
    used: list[str] = []

    @opero_decorator(retries=0, arg_fallback="user_agent")
    def given(user_agent: list[str] | None = None) -> str:
        assert user_agent is not None
        used.append(user_agent[0])
        if user_agent[0] == "bot":
            raise ConnectionError("403")
        return user_agent[0]

    @opero_decorator(retries=0, arg_fallback="user_agent")
    def defaulted(user_agent: tuple[str, ...] = ("bot", "browser")) -> str:
        used.append(user_agent[0])
        if user_agent[0] == "bot":
            raise ConnectionError("403")
        return user_agent[0]

    with caplog.at_level(logging.DEBUG, logger="opero"):
        assert given(["bot", "browser"]) == "browser"
        assert defaulted() == "browser"
    assert not [r for r in caplog.records if "no candidates" in r.getMessage()]
    assert used == ["bot", "browser", "bot", "browser"]


def test_summary_without_status_and_mixed_errors() -> None:
    """No status: the type leads and status is None; only the trailing alike errors count."""
    mixed = AllFailedError("f", [TimeoutError("slow"), ConnectionError("a"), ConnectionError("b")])
    assert str(mixed) == "ConnectionError ×2: f: all 3 attempts failed; last error: b"
    assert mixed.status is None
    assert str(AllFailedError("g", [])) == "g: no attempt ran"
    assert AllFailedError("g", []).status is None
