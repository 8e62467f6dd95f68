"""opmap mode='dask': a LocalCluster it starts, or the active Client."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opero import AllFailedError, opmap

pytestmark = pytest.mark.dask


@pytest.mark.timeout(60)
def test_dask_mode_starts_and_closes_a_local_cluster(tmp_path: Path) -> None:
    """Without a Client, mode='dask' runs on a LocalCluster; worker retries reach fn.stats."""

    @opmap(mode="dask", workers=2, retries=1, min_delay=0.01, progress=False)
    def flaky(x: int) -> tuple[int, int]:
        marker = tmp_path / f"m{x}"
        if x % 3 == 0 and not marker.exists():
            marker.touch()
            raise ConnectionError("first attempt")
        if x == 7:
            raise KeyError("always")
        return x, os.getpid()

    out = flaky(range(10))
    assert [v[0] for i, v in enumerate(out) if i != 7] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert isinstance(out[7], AllFailedError)
    assert os.getpid() not in {v[1] for i, v in enumerate(out) if i != 7}
    assert flaky.stats.retries == 5  # items 0, 3, 6, 9 once, item 7 once
    from distributed import Client

    with pytest.raises(ValueError):
        Client.current()  # the cluster it started is closed and not left as default


@pytest.mark.timeout(60)
def test_dask_mode_uses_the_active_client() -> None:
    """With an active Client, mode='dask' submits to it (async functions too)."""
    from distributed import Client, LocalCluster

    @opmap(mode="dask", progress=False)
    async def pid(_: int) -> int:
        return os.getpid()

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
            import opero

            assert set(opero.run(pid(range(5)))) <= worker_pids


def _flaky_tenth(x: int) -> int:
    import time

    time.sleep(0.002)  # long enough that the two threads of a worker interleave
    if x % 10 == 0:
        raise ConnectionError(f"item {x} always fails")
    return x


@pytest.mark.timeout(120)
def test_dask_counters_are_exact_with_several_threads_per_worker() -> None:
    """Two threads per dask worker: fn.stats and opero.stats() count every call exactly."""
    from distributed import Client, LocalCluster

    import opero

    n = 1000
    fn = opmap(mode="dask", retries=1, min_delay=0.001, jitter=0, chunksize=10, progress=False)(_flaky_tenth)
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with Client(cluster):
            out = fn(range(n))
    bad = n // 10
    assert sum(isinstance(v, AllFailedError) for v in out) == bad
    st = fn.stats
    assert (st.calls, st.successes, st.failures) == (n, n - bad, bad)
    assert (st.attempts, st.retries) == (n + bad, bad)
    row = opero.stats().loc[st.name]
    assert (row["calls"], row["successes"], row["attempts"], row["retries"]) == (n, n - bad, n + bad, bad)


class _OnlyHere:
    """Pickles in the parent; unpickling it anywhere else fails (like a module only here)."""

    def __init__(self, parent: int) -> None:
        self.parent = parent

    def __reduce__(self) -> tuple[object, ...]:
        return (_only_here, (self.parent,))


def _only_here(parent: int) -> _OnlyHere:
    if os.getpid() != parent:
        raise ImportError("no module named 'only_in_the_parent'")
    return _OnlyHere(parent)


@pytest.mark.timeout(120)
def test_dask_error_that_is_not_a_lost_worker_keeps_its_type() -> None:
    """A task dask fails for another reason than a dead worker is not a WorkerLostError."""
    from distributed import Client, LocalCluster

    from opero import WorkerLostError

    anchor = _OnlyHere(os.getpid())

    @opmap(mode="dask", retries=0, progress=False)
    def uses_anchor(x: int) -> int:
        return x + (anchor.parent * 0)

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with Client(cluster):
            out = uses_anchor(range(4))
    assert all(isinstance(v, ImportError) for v in out), out
    assert not any(isinstance(v, WorkerLostError) for v in out)
    assert "only_in_the_parent" in str(out[0])
