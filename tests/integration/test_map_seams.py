"""Seams of process, async_process and dask maps: what crosses the process boundary.

Exceptions that cannot be pickled or rebuilt, items that must travel by value, hard
timeouts, exact counters and a warm pool that does not leak. Real worker processes only.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opero import AllFailedError, WorkerLostError, opmap
from opero._errors import RemoteError, portable
from tests.shared.map_seams import _api_failure, _check_failures


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_dask_map_unpicklable_exceptions_fail_only_their_items() -> None:
    from distributed import Client, LocalCluster

    fn = opmap(mode="dask", retries=0, progress=False)(_api_failure)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster):
            out = fn(range(8))
    _check_failures(out)


# -- items travel by value -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["process", "async_process"])
def test_items_of_main_classes_lambdas_and_local_classes_travel(mode: str) -> None:
    """A script's own classes, lambdas and local classes go to workers by value; a lock fails alone."""
    script = str(ROOT / "tests/_map_scripts/main_items.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, script, mode], env=env, cwd=ROOT, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["points"] == [2, 10]
    assert got["lambda"] == 11
    assert got["local"] == 7
    kind, message, notes = got["lock"]
    assert kind == "TypeError" and "lock" in message
    assert any("cannot be pickled to send it to a worker" in n for n in notes)
    assert got["seconds"] < 5.0  # no WorkerLostError after 6-14 s


# -- one policy: a lost worker is an attempt failure like any other ---------------------------


@pytest.mark.timeout(60)
def test_worker_loss_is_an_attempt_failure_with_backoff_counters_and_events(tmp_path: Path) -> None:
    """A death goes through the item's policy: backoff, stats.attempts/retries, on_retry."""
    marker = tmp_path / "died"
    again = tmp_path / "again"
    retried: list[object] = []

    @opmap(
        mode="process", workers=2, retries=2, min_delay=0.4, jitter=0, on_retry=retried.append, progress=False
    )
    def work(x: int) -> int:
        # items over ~5 ms run one per sub-batch: the worker's board names the one running
        # (a one-off crash among faster items is re-run apart, and then charges nobody)
        time.sleep(0.01)
        if x == 3:
            if not marker.exists():
                marker.write_text(str(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            again.write_text(str(time.time()))
        return x

    out = work(range(6))
    assert out == list(range(6))
    waited = float(again.read_text()) - float(marker.read_text())
    assert waited >= 0.4  # the backoff before the next round, as for any retryable error
    st = work.stats
    # items held with item 3 by the dead worker lost one attempt each, and retried
    lost = st.attempts - 6
    assert lost == 1 and st.retries == 1  # only item 3 was running: its chunk-mates go again free
    assert (st.calls, st.successes, st.failures) == (6, 6, 0)
    assert len(retried) == lost
    assert all(isinstance(e.error, WorkerLostError) for e in retried)  # type: ignore[attr-defined]
    assert all(e.delay >= 0.4 for e in retried)  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_worker_loss_respects_retry_on() -> None:
    """A WorkerLostError the policy does not retry fails the item at once, as itself."""

    @opmap(mode="process", workers=2, retry_on=ConnectionError, progress=False)
    def work(x: int) -> int:
        if x == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    out = work(range(3))
    assert isinstance(out[1], WorkerLostError)
    assert out[0] == 0 and out[2] == 2
    assert work.stats.retries == 0


# -- timeout is a hard limit in process modes ---------------------------------------------------


def _hog(x: int, pidfile: str) -> tuple[int, int]:
    if x == 2:
        Path(pidfile).write_text(str(os.getpid()))
        sum(range(10**11))  # a C loop holding the GIL: no soft limit can interrupt it
    return x, os.getpid()


async def _hog_async(x: int, pidfile: str) -> tuple[int, int]:
    return _hog(x, pidfile)


def _collect(result: object) -> list[object]:
    import asyncio

    if asyncio.iscoroutine(result):
        import opero

        return opero.run(result)  # type: ignore[no-any-return]
    return result  # type: ignore[return-value]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["process", "async_process"])
def test_timeout_is_hard_in_process_modes(mode: str, tmp_path: Path) -> None:
    """An attempt holding the GIL fails with TimeoutError within ~timeout+1 s, its worker is
    killed and replaced, and the other items succeed."""
    pidfile = str(tmp_path / "hog.pid")
    func = _hog_async if mode == "async_process" else _hog
    fn = opmap(mode=mode, workers=2, timeout=1, retries=0, progress=False)(func)
    _collect(fn([0, 1], pidfile))  # start the pool, so the timing below is the timeout's
    t0 = time.monotonic()
    out = _collect(fn(range(6), pidfile))
    took = time.monotonic() - t0
    assert took < 4.5, took  # timeout + 0.5 s grace + a kill, on a loaded machine
    err = out[2]
    assert isinstance(err, AllFailedError)
    assert isinstance(err.errors[0], TimeoutError)
    assert "worker replaced" in str(err.errors[0])
    assert [out[i][0] for i in (0, 1, 3, 4, 5)] == [0, 1, 3, 4, 5]  # type: ignore[index]
    st = fn.stats  # the warm-up map counted 2 calls
    assert (st.timeouts, st.failures, st.successes, st.calls) == (1, 1, 7, 8)
    hung = int(Path(pidfile).read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)  # killed and reaped
    again = _collect(fn([0, 1, 3, 4], pidfile))
    assert [v[0] for v in again] == [0, 1, 3, 4]  # type: ignore[index]
    assert hung not in {v[1] for v in again}  # type: ignore[index]


# -- no leaks on a warm pool -------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_warm_pool_keeps_descriptors_and_limiter_files_flat() -> None:
    """50 rounds of rate-limited maps (one function, a scope, a re-decorated function) on
    one warm pool: parent and worker descriptors and /dev/shm opero files do not grow."""
    script = str(ROOT / "tests/_map_scripts/warm_pool_fds.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, script, "50"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    before, after = got["before"], got["after"]
    assert after["parent"] == before["parent"]
    assert after["workers"] == before["workers"]
    assert after["files"] == before["files"]
    assert before["files"] >= 2  # the script's own budgets were counted


@pytest.mark.timeout(60)
def test_hard_timeout_sends_the_killed_workers_other_items_again_without_penalty(tmp_path: Path) -> None:
    """Items queued behind the hung one in its chunk did nothing wrong: they lose no attempt."""
    pidfile = str(tmp_path / "hog.pid")
    fn = opmap(mode="process", workers=1, chunksize=4, timeout=1, retries=0, progress=False)(_hog)
    out = fn([2, 5, 6, 7], pidfile)
    assert isinstance(out[0], AllFailedError) and isinstance(out[0].errors[0], TimeoutError)
    assert [v[0] for v in out[1:]] == [5, 6, 7]  # type: ignore[index]
    st = fn.stats
    assert (st.calls, st.successes, st.failures, st.attempts, st.timeouts) == (4, 3, 1, 4, 1)


@pytest.mark.timeout(120)
def test_joblib_backend_unpicklable_exceptions_fail_only_their_items() -> None:
    """Under an enclosing joblib.parallel_config (loky), the same seams hold."""
    import joblib

    fn = opmap(mode="process", retries=0, progress=False)(_api_failure)
    with joblib.parallel_config(backend="loky", n_jobs=2):
        out = fn(range(8))
    _check_failures(out)


def test_portable_reads_response_status_and_headers_of_requests_and_httpx_errors() -> None:
    import httpx
    import requests

    resp = requests.Response()
    resp.status_code = 503
    resp.headers["Retry-After"] = "2"
    resp.raw = io.BytesIO(b"")
    r_err = requests.HTTPError("503 Server Error", response=resp)
    r_err.lock = threading.Lock()  # type: ignore[attr-defined]  # now it cannot pickle
    out = portable(r_err)
    assert isinstance(out, RemoteError)
    assert (out.status, out.headers) == (503, {"Retry-After": "2"})

    request = httpx.Request("GET", "http://127.0.0.1/x")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
    h_err = httpx.HTTPStatusError("429", request=request, response=response)
    h_out = portable(h_err)
    h_out = h_out if isinstance(h_out, RemoteError) else RemoteError.from_exception(h_err)
    assert h_out.status == 429
    assert h_out.headers is not None and h_out.headers["retry-after"] == "3"


# -- maps ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_process_map_unpicklable_exceptions_fail_only_their_items() -> None:
    """An exception that cannot be rebuilt (or pickled) in a worker costs only its item."""
    fn = opmap(mode="process", workers=2, retries=0, progress=False)(_api_failure)
    _check_failures(fn(range(8)))
    assert fn.stats.successes == 6 and fn.stats.failures == 2


@pytest.mark.timeout(60)
def test_process_map_non_retryable_unpicklable_exception_is_the_stand_in() -> None:
    fn = opmap(mode="process", workers=2, retry_on=KeyError, progress=False)(_api_failure)
    out = fn(range(8))
    assert isinstance(out[3], RemoteError) and out[3].message == "503: busy backend"
    assert isinstance(out[5], RemoteError) and out[5].type_name.endswith("HoldsSocket")
    assert out[7] == 14


async def _api_failure_async(x: int) -> int:
    return _api_failure(x)


@pytest.mark.timeout(60)
def test_async_process_map_unpicklable_exceptions_fail_only_their_items() -> None:
    import opero

    fn = opmap(mode="async_process", workers=2, retries=0, progress=False)(_api_failure_async)
    out = opero.run(fn(range(8)))
    for bad in (3, 5):
        assert isinstance(out[bad], AllFailedError)
        assert isinstance(out[bad].errors[0], RemoteError)
        assert "_api_failure" in out[bad].errors[0].traceback_text
    assert out[3].errors[0].message == "503: busy backend"
    assert [out[i] for i in (0, 1, 2, 4, 6, 7)] == [0, 2, 4, 8, 12, 14]


def _rebuild_outside(message: str, parent: int) -> Exception:
    import os

    if os.getpid() == parent:
        raise RuntimeError("this exception cannot be rebuilt in the parent")
    return OnlyInWorker(message, parent)


class OnlyInWorker(Exception):
    """Pickles and unpickles in the worker, but its unpickling fails in the parent."""

    def __init__(self, message: str, parent: int) -> None:
        super().__init__(message)
        self.parent = parent

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_outside, (str(self), self.parent))


def _fails_in_parent(x: int) -> int:
    import os

    if x == 2:
        raise OnlyInWorker("made in the worker", os.getppid())
    return x


@pytest.mark.timeout(60)
def test_process_map_payload_that_cannot_unpickle_in_the_parent_fails_alone() -> None:
    """The parent side: only the item whose payload fails to load gets the stand-in."""
    fn = opmap(mode="process", workers=2, retry_on=KeyError, progress=False)(_fails_in_parent)
    out = fn(range(6))
    assert [out[i] for i in (0, 1, 3, 4, 5)] == [0, 1, 3, 4, 5]
    err = out[2]
    assert isinstance(err, RemoteError)
    assert err.type_name == f"{__name__}.OnlyInWorker"
    assert err.message == "made in the worker"
    assert "_fails_in_parent" in err.traceback_text


def test_local_class_items_and_lambdas_in_a_process_map() -> None:
    class Box:
        def __init__(self, v: int) -> None:
            self.v = v

    @opmap(mode="process", workers=2, progress=False)
    def open_box(item: object) -> int:
        return item(3) if callable(item) else item.v  # type: ignore[attr-defined,operator]

    t0 = time.monotonic()
    out = open_box([Box(1), lambda v: v * 5, Box(4), threading.Lock()])
    assert out[:3] == [1, 15, 4]
    assert isinstance(out[3], TypeError)
    assert not isinstance(out[3], WorkerLostError)
    assert time.monotonic() - t0 < 5.0
    assert open_box.stats.failures == 1 and open_box.stats.successes == 3


def _rebuild_only_here(parent: int, value: int) -> Fragile:
    if os.getpid() != parent:
        raise ImportError("this item's module exists only in the parent")
    return Fragile(parent, value)


class Fragile:
    """Pickles in the parent, but cannot be unpickled in a worker."""

    def __init__(self, parent: int, value: int) -> None:
        self.parent = parent
        self.value = value

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_only_here, (self.parent, self.value))


def _value(item: object) -> object:
    return item if isinstance(item, int) else item.value  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_item_that_cannot_be_unpickled_in_the_worker_fails_alone_at_once() -> None:
    fn = opmap(mode="process", workers=2, chunksize=4, progress=False)(_value)
    t0 = time.monotonic()
    out = fn([0, 1, Fragile(os.getpid(), 2), 3, 4, 5, 6, 7])
    assert time.monotonic() - t0 < 5.0
    assert [out[i] for i in (0, 1, 3, 4, 5, 6, 7)] == [0, 1, 3, 4, 5, 6, 7]
    assert isinstance(out[2], ImportError)
    assert "only in the parent" in str(out[2])
    assert any("cannot be unpickled in the worker" in n for n in out[2].__notes__)
    assert fn.stats.failures == 1 and fn.stats.successes == 7
