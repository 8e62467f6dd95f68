"""Smarter fallbacks: fallback_on picks which errors move to the next candidate; sticky
candidates are skipped by later calls (threads and process workers) until rechecked."""

from __future__ import annotations

import os

import pytest

from opero import AllFailedError, opero, parts


def test_fallback_on_moves_only_on_its_errors() -> None:
    """fallback_on=PermissionError: a ConnectionError retries the same candidate after the
    backoff, a PermissionError moves to the next one at once."""
    seen: list[str] = []
    errors = iter([ConnectionError("5xx"), PermissionError("401"), None])

    @opero(retries=3, min_delay=0.001, arg_fallback="key", fallback_on=PermissionError)
    def call(key: list[str]) -> str:
        seen.append(key[0])
        err = next(errors)
        if err is not None:
            raise err
        return key[0]

    assert call(["a", "b"]) == "b"
    assert seen == ["a", "a", "b"]
    assert call.stats.retries == 1
    assert call.stats.fallbacks == 1


def test_default_fallback_on_moves_on_every_retryable_error() -> None:
    """fallback_on=None keeps today's behaviour: any retryable error tries the next candidate."""
    seen: list[str] = []

    @opero(retries=1, min_delay=0.001, arg_fallback="key", fallback_sticky=False)
    def call(key: list[str]) -> str:
        seen.append(key[0])
        raise ConnectionError(key[0])

    with pytest.raises(AllFailedError) as info:
        call(["a", "b"])
    assert seen == ["a", "b", "a", "b"]
    assert len(info.value.errors) == 4


def test_every_candidate_demoted_starts_from_the_first() -> None:
    """When every candidate is demoted, calls start from the first again (and go on from there)."""
    seen: list[str] = []
    fail = {"a", "b"}

    @opero(retries=0, arg_fallback="key", fallback_on=PermissionError)
    def call(key: list[str]) -> str:
        seen.append(key[0])
        if key[0] in fail:
            raise PermissionError(key[0])
        return key[0]

    with pytest.raises(AllFailedError):
        call(["a", "b"])
    fail.clear()
    assert call(["a", "b"]) == "a"
    assert seen == ["a", "b", "a"]


def test_shared_table_file_goes_with_its_function() -> None:
    """The file a table moved to (when pickled for workers) is removed with the table."""
    import gc
    import pickle

    @opero(arg_fallback="keys")
    def get(keys: list[str]) -> str:
        return keys[0]

    sticky = parts(get).sticky
    pickle.dumps(sticky)
    path = sticky.path
    assert path is not None and os.path.exists(path)
    del get, sticky
    gc.collect()
    assert not os.path.exists(path)


def test_default_fallback_on_demotes_only_earlier_candidates() -> None:
    """fallback_on=None, both keys fail once (an outage), then the first works again: the
    second is not demoted for it, and the first stays first."""
    seen: list[str] = []
    outage = iter([True, True])

    @opero(retries=2, min_delay=0.001, arg_fallback="key")
    def call(key: list[str]) -> str:
        seen.append(key[0])
        if next(outage, False):
            raise ConnectionError(key[0])
        return key[0]

    assert call(["a", "b"]) == "a"
    assert call(["a", "b"]) == "a"
    assert seen == ["a", "b", "a", "a"]
    assert parts(call).sticky.demoted(["a", "b"]) == [False, False]
