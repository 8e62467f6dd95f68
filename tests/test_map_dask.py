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
