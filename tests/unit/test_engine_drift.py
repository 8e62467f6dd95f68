"""Regression tests for the engine's drift bugs: copies of one rule that used to disagree."""

from __future__ import annotations

import time

import pytest

import opero
from opero import AllFailedError, ConfigurationError, opmap
from opero._errors import RemoteError


class _Response:
    """A requests/httpx-like response: a status code and headers."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


class HTTPFailure(Exception):
    """An HTTP error the way requests raises it: the status on ``response.status_code``."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.response = _Response(status_code)


class ApiError(Exception):
    """An application error raised ``from`` the HTTP error."""


def _slow_failure(calls: list[float]) -> None:
    calls.append(time.perf_counter())
    time.sleep(0.3)
    raise ValueError("slow and failed")


# -- drift 1: the deadline counts from the call, in @opero and in a map's fast path -------------


def test_deadline_counts_from_the_call_under_opero() -> None:
    """retries=3, deadline=0.2, a 0.3 s failing attempt: one attempt under @opero."""
    calls: list[float] = []

    @opero.opero(retries=3, deadline=0.2, min_delay=0.01)
    def work(x: int) -> None:
        _slow_failure(calls)

    with pytest.raises(AllFailedError):
        work(1)
    assert len(calls) == 1


def test_deadline_counts_from_the_call_in_a_thread_map() -> None:
    """The same function mapped in threads: one attempt per item (it used to make two)."""
    calls: list[float] = []

    @opmap(mode="thread", workers=2, retries=3, deadline=0.2, min_delay=0.01, progress=False)
    def work(x: int) -> None:
        _slow_failure(calls)

    results = work([1, 2])
    assert [type(r) for r in results] == [AllFailedError, AllFailedError]
    assert len(calls) == 2
    assert work.stats.attempts == 2


@pytest.mark.asyncio
async def test_deadline_counts_from_the_call_in_an_async_map() -> None:
    """An async map of an async function: one attempt per item under the deadline."""
    import asyncio

    calls: list[float] = []

    @opmap(mode="async", workers=2, retries=3, deadline=0.2, min_delay=0.01, progress=False)
    async def work(x: int) -> None:
        calls.append(time.perf_counter())
        await asyncio.sleep(0.3)
        raise ValueError("slow and failed")

    results = await work([1, 2])
    assert [type(r) for r in results] == [AllFailedError, AllFailedError]
    assert len(calls) == 2


# -- drift 2: one HTTP-status reader ---------------------------------------------------------


@pytest.mark.parametrize("chained", [False, True])
def test_failures_status_column_reads_response_status_code(chained: bool) -> None:
    """fn.failures() shows 503 for response.status_code=503, also when raised ``from`` it."""

    @opmap(mode="thread", workers=2, retries=0, progress=False)
    def work(x: int) -> int:
        if chained:
            try:
                raise HTTPFailure(503)
            except HTTPFailure as exc:
                raise ApiError("upstream down") from exc
        raise HTTPFailure(503)

    results = work([1, 2])
    assert all(isinstance(r, AllFailedError) for r in results)
    frame = work.failures()
    assert list(frame["status"]) == [503, 503]


@pytest.mark.parametrize("chained", [False, True])
def test_error_details_read_the_same_status(chained: bool) -> None:
    """The stand-in of an error crossing a process boundary keeps its 503."""
    try:
        try:
            raise HTTPFailure(503)
        except HTTPFailure as exc:
            if not chained:
                raise
            raise ApiError("upstream down") from exc
    except Exception as exc:
        error = exc
    assert RemoteError.from_exception(error).status == 503


def test_status_reader_ignores_a_code_that_is_no_http_status() -> None:
    """An unrelated ``code`` attribute (an exit code) is no HTTP status in fn.failures()."""

    class ExitCode(Exception):
        code = 2

    @opmap(mode="thread", workers=1, retries=0, progress=False)
    def work(x: int) -> int:
        raise ExitCode("exit 2")

    work([1])
    assert list(work.failures()["status"].isna()) == [True]


@pytest.mark.parametrize("chained", [False, True])
def test_retry_policy_sees_the_same_503(chained: bool) -> None:
    """A 503 (direct or chained) is retried: a server error, not a client error."""
    calls = []

    @opero.opero(retries=2, min_delay=0.001, jitter=0)
    def work() -> None:
        calls.append(1)
        if chained:
            try:
                raise HTTPFailure(503)
            except HTTPFailure as exc:
                raise ApiError("upstream down") from exc
        raise HTTPFailure(503)

    with pytest.raises(AllFailedError) as info:
        work()
    assert len(calls) == 3
    assert len(info.value.errors) == 3


# -- drift 4: rate_start without an adaptive rate ------------------------------------------


def test_rate_start_without_adaptive_rate_is_refused() -> None:
    """rate_limit=10, rate_start=2 without an adaptive rate is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=r"rate_start=2 needs an adaptive rate"):
        opero.opero(rate_limit=10, rate_start=2)
    with pytest.raises(ConfigurationError, match=r"rate_start=2 needs an adaptive rate"):
        opmap(rate_limit=10, rate_start=2)


def test_rate_start_with_adaptive_rate_is_accepted() -> None:
    """With adaptive=True (or rate_limit='auto') the budget starts at rate_start."""

    @opero.opero(rate_limit=10, adaptive=True, rate_start=2)
    def a() -> int:
        return 1

    @opero.opero(rate_limit="auto", rate_start=2)
    def b() -> int:
        return 2

    assert (a(), b()) == (1, 2)


# -- one fast path: in_flight counts the items running now -----------------------------------


def test_in_flight_counts_running_map_items() -> None:
    """A busy 8-worker thread map of 400 items of 10 ms shows 8 in flight, never more."""
    import threading
    from collections import Counter

    @opmap(mode="thread", workers=8, progress=False)
    def work(x: int) -> int:
        time.sleep(0.01)
        return x

    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(work.stats.in_flight)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert work(list(range(400))) == list(range(400))
    finally:
        done.set()
        watcher.join()
    assert max(seen) == 8
    assert Counter(seen).most_common(1)[0][0] == 8
    assert (work.stats.calls, work.stats.successes, work.stats.in_flight) == (400, 400, 0)


def test_chunk_fast_path_emits_failure_events() -> None:
    """A map item that fails for good emits its "failure" event on the fast chunk loop too."""
    import logging

    @opmap(mode="thread", workers=2, retries=0, progress=False)
    def work(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    events: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: events.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("opero")
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    try:
        results = work(range(6))
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    assert isinstance(results[3], AllFailedError)
    assert sum("three" in e for e in events) >= 1


def test_dropped_function_frees_its_plan_without_the_collector() -> None:
    """A plan holds no reference cycle (its limiter file closes at once): refcounting frees it."""
    import gc
    import weakref

    @opmap(mode="thread", workers=2, rate_limit=10_000, progress=False)
    def work(x: int) -> int:
        return x

    assert work([1, 2]) == [1, 2]
    store = weakref.ref(opero.parts(work).limiter.store)  # its file: held by the plan alone
    gc.disable()
    try:
        del work
        assert store() is None
    finally:
        gc.enable()
