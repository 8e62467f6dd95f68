"""The scheduler shared by process and dask maps, and how a worker rebuilds its plan."""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest

from opero._options import Options
from opero._policy import Plan


def _double(x: int) -> int:
    return 2 * x


def test_worker_plan_keeps_the_parents_limiter_and_opens_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's rebuilt plan uses the parent's host limiter file and opens no limiter store of its own."""
    import opero.stores.host as host
    from opero.executors._worker import ChunkRunner, Spec

    parent = Plan(_double, Options(rate_limit=50), "double")
    opened: list[Any] = []
    real = host.limiter_store

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(host, "limiter_store", counting)
    spec = Spec(_double, parent.options, "double", parent.limiter, None, (), (), {})
    runner = ChunkRunner(cloudpickle.loads(cloudpickle.dumps(spec)))
    plan = runner.plan()
    assert opened == []
    assert plan.limiter is not None and plan.limiter is not parent.limiter
    assert plan.limiter.store.path == parent.limiter.store.path
    assert (plan.limiter.rate, plan.limiter.burst) == (50.0, 1)
    assert plan.in_map is True
    assert plan.keys is None  # the parent caches: the worker runs uncached
