"""opmap: modes, results, ordering, options, methods, cache and telemetry (sync functions)."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from pathlib import Path

import joblib
import pytest

import opero
from opero import AllFailedError, ConfigurationError, opmap
from opero._progress import subscribe_progress
from opero._telemetry import subscribe

MODES = ["thread", "process", "async", "async_process"]


def _square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_returns_results_in_input_order_with_failures_in_place(mode: str) -> None:
    """Every mode returns one slot per input in order; the bad item holds its AllFailedError."""
    fn = opmap(mode=mode, workers=2, retries=1, min_delay=0.01, progress=False)(_square_or_fail)
    out = fn(range(8))
    assert out[:3] == [0, 1, 4]
    assert out[4:] == [16, 25, 36, 49]
    assert isinstance(out[3], AllFailedError)
    assert len(out[3].errors) == 2
    assert fn.stats.failures == 1
    assert fn.stats.successes == 7
    assert fn.stats.retries == 1


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


def test_extra_args_and_kwargs_reach_every_call() -> None:
    """fn(items, *args, **kwargs) calls func(item, *args, **kwargs)."""

    @opmap(mode="process", workers=2, progress=False)
    def fn(x: int, y: int, *, z: int = 0) -> int:
        return x + y + z

    assert fn([1, 2, 3], 10, z=100) == [111, 112, 113]


def test_process_mode_uses_worker_processes() -> None:
    """mode='process' runs items outside the parent process, in up to `workers` processes."""

    @opmap(mode="process", workers=2, progress=False)
    def pid(_: int) -> int:
        time.sleep(0.02)
        return os.getpid()

    pids = set(pid(range(20)))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


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


def test_parent_cache_hits_are_not_dispatched_to_workers(tmp_path: Path) -> None:
    """In process mode cache lookups happen in the parent and results land in its cache."""
    log = tmp_path / "calls"

    @opmap(mode="process", workers=2, cache=True, progress=False)
    def record(x: int) -> int:
        with open(log, "a") as f:
            f.write(f"{x}\n")
        return x + 1

    assert record(range(6)) == list(range(1, 7))
    assert record(range(8)) == list(range(1, 9))
    assert sorted(int(v) for v in log.read_text().split()) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert record.stats.cache_hits == 6


def test_worker_retries_and_events_reach_the_parent(tmp_path: Path) -> None:
    """Retries in process workers appear in the parent's fn.stats, opero.stats() and events."""
    seen: list[str] = []
    unsubscribe = subscribe(lambda e: seen.append(e.kind), kinds={"retry", "item_failed"})

    @opmap(mode="process", workers=2, retries=2, min_delay=0.01, progress=False)
    def flaky(x: int) -> int:
        marker = tmp_path / f"m{x}"
        if x % 2 and not marker.exists():
            marker.touch()
            raise ConnectionError("first attempt fails")
        if x == 4:
            raise KeyError("always")
        return x

    try:
        out = flaky(range(8))
    finally:
        unsubscribe()
    assert [v for i, v in enumerate(out) if i != 4] == [0, 1, 2, 3, 5, 6, 7]
    assert isinstance(out[4], AllFailedError)
    # 4 odd items retried once; item 4 retried twice
    assert flaky.stats.retries == 6
    assert flaky.stats.calls == 8
    assert seen.count("retry") == 6
    assert seen.count("item_failed") == 1
    frame = opero.stats()
    assert frame.loc[flaky.stats.name, "retries"] == 6


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


class Scaler:
    """Holds a factor; its opmap'd methods map over items after self."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @opmap(mode="process", workers=2, progress=False)
    def scale(self, x: int) -> int:
        return x * self.factor

    @opmap(progress=False)
    @classmethod
    def name_of(cls, x: int) -> str:
        return f"{cls.__name__}{x}"

    @opmap(progress=False)
    @staticmethod
    def neg(x: int) -> int:
        return -x


def test_methods_take_items_after_self() -> None:
    """Instance, class and static methods: items are the first argument after self/cls."""
    s = Scaler(3)
    assert s.scale([1, 2]) == [3, 6]
    assert list(s.scale.imap([4])) == [12]
    assert Scaler.name_of([1]) == ["Scaler1"]
    assert s.neg([1, 2]) == [-1, -2]


def test_enclosing_joblib_parallel_config_is_honoured() -> None:
    """Inside joblib.parallel_config(backend='threading'), process mode runs on that backend."""

    @opmap(mode="process", progress=False)
    def pid(_: int) -> int:
        return os.getpid()

    with joblib.parallel_config(backend="threading", n_jobs=2):
        assert set(pid(range(10))) == {os.getpid()}
