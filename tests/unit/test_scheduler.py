"""The scheduler shared by process and dask maps, and how a worker rebuilds its plan."""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest

from opero._options import Options
from opero._policy import Plan
from opero.executors._scheduler import Transport, TransportEvent


def _double(x: int) -> int:
    return 2 * x


@pytest.mark.parametrize("adaptive", [False, True])
def test_worker_plan_keeps_the_parents_limiter_and_opens_none(
    monkeypatch: pytest.MonkeyPatch, adaptive: bool
) -> None:
    """A worker's rebuilt plan uses the parent's host limiter file and opens no limiter store of its own."""
    import opero.stores.host as host
    from opero.executors._worker import ChunkRunner, Spec

    options = Options(rate_limit=50, adaptive=True, rate_start=20) if adaptive else Options(rate_limit=50)
    parent = Plan(_double, options, "double")
    opened: list[Any] = []
    real = host.limiter_store

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(host, "limiter_store", counting)
    spec = Spec(parent.parts(), None, (), (), {})
    runner = ChunkRunner(cloudpickle.loads(cloudpickle.dumps(spec)))
    plan = runner.plan()
    assert opened == []
    assert plan.limiter is not None and plan.limiter is not parent.limiter
    assert plan.limiter.store.path == parent.limiter.store.path
    assert (plan.limiter.rate, plan.limiter.burst) == (parent.limiter.rate, 1)
    assert (plan.limiter.adaptive is None) is not adaptive
    assert plan.in_map is True
    assert plan.keys is None  # the parent caches: the worker runs uncached


class _FakeTransport(Transport):
    """Runs chunks in this process; a chunk holding item 3 dies with ``running`` (of its items)."""

    def __init__(self, suspects: set[int]) -> None:
        self.suspects = suspects
        self.sent: list[list[int]] = []
        self.inflight: list[tuple[int, list[Any]]] = []
        self.closed: bool | None = None

    def room(self) -> int:
        return 2 - len(self.inflight)

    def send(self, chunk_id: int, indices: list[int], blob: bytes) -> None:
        self.sent.append(indices)
        self.inflight.append((chunk_id, cloudpickle.loads(blob)))

    def poll(self, timeout: float) -> list[TransportEvent]:
        from opero import WorkerLostError
        from opero.executors._scheduler import Arrived, Lost
        from opero.executors._worker import Batch

        chunk_id, items = self.inflight.pop(0)
        indices = [i for i, _, _ in items]
        if 3 in indices:
            running = {i for i in indices if i in self.suspects}
            return [Lost(chunk_id, WorkerLostError("worker process 1 died (signal SIGSEGV)", -11), running)]
        outs = [(i, True, 2 * (p[0][0] if single else p), None) for i, p, single in items]
        return [Arrived(chunk_id, Batch(chunk_id, outs, {}, [], True), True)]

    def close(self, clean: bool) -> None:
        self.closed = clean


def _run_fake(suspects: set[int]) -> tuple[list[Any], _FakeTransport]:
    from opero.executors._chunks import ChunkSizer, Feed, MapCall, Window
    from opero.executors._dispatch import Remote
    from opero.executors._scheduler import Scheduler

    plan = Plan(_double, Options(retries=0), "double")
    call = MapCall(plan, "process", 2, 5, (), (), {}, 10)
    window = Window(100)
    feed = Feed(iter(enumerate(range(10))), window, ChunkSizer(0.05, 1000, 10, 2, 5))
    fake = _FakeTransport(suspects)
    out: list[Any] = [None] * 10
    for batch in Scheduler(call, feed, window, Remote(call), fake).run():
        for i, _ok, value, _item in batch:
            out[i] = value
    return out, fake


def test_scheduler_charges_only_the_running_item_and_resends_its_chunk_mates() -> None:
    """A lost chunk charges the item its worker ran; chunk-mates go out again together, free."""
    from opero import AllFailedError, WorkerLostError

    out, fake = _run_fake({3})
    assert [out[i] for i in range(10) if i != 3] == [2 * i for i in range(10) if i != 3]
    assert isinstance(out[3], AllFailedError) and isinstance(out[3].errors[0], WorkerLostError)
    assert fake.sent == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 1, 2, 4]]
    assert fake.closed is True


def test_scheduler_runs_several_in_flight_items_apart_to_find_the_crash() -> None:
    """Two attempts in flight at a death: each runs again alone, only the one that dies is charged."""
    from opero import AllFailedError, WorkerLostError

    out, fake = _run_fake({2, 3})
    assert [out[i] for i in range(10) if i != 3] == [2 * i for i in range(10) if i != 3]
    assert isinstance(out[3], AllFailedError) and isinstance(out[3].errors[0], WorkerLostError)
    assert [2] in fake.sent and [3] in fake.sent  # the suspects, alone
    assert [0, 1, 4] in fake.sent  # the others, together and without penalty
    assert sorted(i for chunk in fake.sent for i in chunk).count(3) == 2  # once with mates, once alone
