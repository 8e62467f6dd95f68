"""opmap: modes, results, ordering, options, methods, cache and telemetry (sync functions)."""

from __future__ import annotations

import asyncio
import inspect
import os
import time

import joblib
import pytest

import opero
from opero import AllFailedError, ConfigurationError, opmap
from opero._progress import subscribe_progress
from opero._telemetry import subscribe
from tests.shared.map_modes import _square_or_fail


def test_non_retryable_error_is_the_items_own_exception() -> None:
    """An error retry_on refuses is stored as itself, after one attempt."""

    @opmap(retry_on=KeyError, progress=False)
    def fn(x: int) -> int:
        if x == 1:
            raise ValueError("not retryable")
        return x

    out = fn([0, 1, 2])
    assert out[0] == 0 and out[2] == 2
    assert type(out[1]) is ValueError
    assert fn.stats.attempts == 3


def test_unordered_returns_completion_order() -> None:
    """ordered=False: faster items come first."""

    @opmap(mode="thread", workers=4, ordered=False, progress=False)
    def nap(x: float) -> float:
        time.sleep(x)
        return x

    assert nap([0.3, 0.2, 0.1, 0.0]) == [0.0, 0.1, 0.2, 0.3]


def test_str_and_bytes_are_refused() -> None:
    """A str or bytes as items is a ConfigurationError, not a map over characters."""
    fn = opmap(progress=False)(_square_or_fail)
    with pytest.raises(ConfigurationError, match="str"):
        fn("abc")
    with pytest.raises(ConfigurationError, match="bytes"):
        fn(b"abc")


def test_wrapper_keeps_name_doc_signature_and_exposes_stats() -> None:
    """The opmap'd function keeps name/doc/signature, exposes __wrapped__, stats, cache_clear."""

    @opmap(cache=True, progress=False)
    def documented(item: int, factor: int = 2) -> int:
        """Multiply."""
        return item * factor

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Multiply."
    assert list(inspect.signature(documented).parameters) == ["item", "factor"]
    assert documented([1, 2]) == [2, 4]
    assert documented([1, 2]) == [2, 4]
    assert documented.stats.cache_hits == 2
    documented.cache_clear()
    documented([1])
    assert documented.stats.cache_misses == 3


def test_default_mode_and_workers_follow_configure() -> None:
    """mode=None picks thread for sync functions; configure(workers=) bounds the threads."""
    opero.configure(workers=3)

    @opmap(progress=False)
    def who(_: int) -> str:
        time.sleep(0.01)
        import threading

        return threading.current_thread().name

    names = set(who(range(30)))
    assert 1 <= len(names) <= 3
    assert all(n.startswith("opero-map") for n in names)


def test_sync_map_inside_running_event_loop_returns_list() -> None:
    """A sync opmap called from a coroutine (a notebook cell) returns the list itself."""
    fn = opmap(workers=2, progress=False)(_square_or_fail)

    async def main() -> list[object]:
        return fn([1, 2])

    assert asyncio.run(main()) == [1, 4]


def test_item_failed_event_carries_the_item() -> None:
    """An item that ends failed emits an 'item_failed' event with the item."""
    events = []
    unsubscribe = subscribe(events.append, kinds={"item_failed"})
    try:
        opmap(retries=0, progress=False)(_square_or_fail)([1, 3])
    finally:
        unsubscribe()
    assert [e.item for e in events] == [3]
    assert isinstance(events[0].error, AllFailedError)


def test_progress_subscribers_see_counts_and_finish() -> None:
    """subscribe_progress callbacks get done/total/failed and a final finished=True."""
    calls = []
    unsubscribe = subscribe_progress(lambda *a: calls.append(a))
    try:
        opmap(retries=0, progress=True)(_square_or_fail)(range(5))
    finally:
        unsubscribe()
    _, name, done, total, failed, finished = calls[-1]
    assert name.endswith("_square_or_fail")
    assert (done, total, failed, finished) == (5, 5, 1, True)
    assert not calls[0][-1]


def test_timeout_applies_per_attempt() -> None:
    """timeout= fails a slow attempt with TimeoutError; other items are unaffected."""

    @opmap(mode="thread", workers=2, timeout=0.1, retries=1, min_delay=0.01, progress=False)
    def slow(x: float) -> float:
        time.sleep(x)
        return x

    t0 = time.perf_counter()
    out = slow([0.0, 1.0])
    assert time.perf_counter() - t0 < 1.0
    assert out[0] == 0.0
    assert isinstance(out[1], AllFailedError)
    assert all(isinstance(e, TimeoutError) for e in out[1].errors)


def test_enclosing_joblib_parallel_config_is_honoured() -> None:
    """Inside joblib.parallel_config(backend='threading'), process mode runs on that backend."""

    @opmap(mode="process", progress=False)
    def pid(_: int) -> int:
        return os.getpid()

    with joblib.parallel_config(backend="threading", n_jobs=2):
        assert set(pid(range(10))) == {os.getpid()}
