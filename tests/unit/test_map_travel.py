"""An opmap'd method that travels by value is rebuilt by the plan's one route."""

from __future__ import annotations

import pickle

import cloudpickle

import opero
from opero import opmap


def test_a_class_by_value_keeps_its_maps_limiter() -> None:
    """A notebook class pickled by value: its opmap'd method shares the parent's limiter
    (same budget file), keeps its mode and still maps."""

    class Client:
        @opmap(mode="thread", workers=2, rate_limit=50, progress=False)
        def fetch(self, x: int) -> int:
            return x * 2

    here = Client.__dict__["fetch"]
    There = pickle.loads(cloudpickle.dumps(Client))
    there = There.__dict__["fetch"]
    assert there is not here
    mine, theirs = opero.parts(here).limiter, opero.parts(there).limiter
    assert mine is not None and theirs is not None
    assert theirs.store.path == mine.store.path  # type: ignore[attr-defined]  # one budget, not two
    assert There().fetch([1, 2, 3]) == [2, 4, 6]


def test_an_opmap_function_by_value_keeps_its_options() -> None:
    """A pickled opmap'd function maps as before: its retries still apply there."""
    calls: list[int] = []

    @opmap(mode="thread", workers=1, retries=2, progress=False)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first")
        return x + 1

    again = pickle.loads(cloudpickle.dumps(flaky))
    assert again([1]) == [2]
    assert opero.parts(again).limiter is None
