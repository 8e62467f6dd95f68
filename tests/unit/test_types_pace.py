"""The gate binds its attempt once per pace: unpaced plans call the gated attempt directly."""

from __future__ import annotations

import opero
from opero._attempt import Gate
from opero._policy import Plan, PlanParts, rebuild


def _plan(fn: object) -> Plan:
    plan = fn._opero_plan  # type: ignore[attr-defined]
    assert isinstance(plan, Plan)
    return plan


def test_an_unpaced_plan_calls_the_gated_attempt_without_a_wrapper() -> None:
    """Without a pace, plan.attempt_sync/async are Gate's own attempts, not the paced wrappers."""

    @opero.opero(retries=1, timeout=5)
    def f(x: int) -> int:
        return x

    plan = _plan(f)
    assert plan.pace is None
    assert getattr(plan.attempt_sync, "__func__", None) is Gate._attempt_sync
    assert getattr(plan.attempt_async, "__func__", None) is Gate._attempt_async
    assert plan.attempt_sync((3,), {}) == 3


def test_a_paced_plan_wraps_the_attempt_and_spends_its_tokens() -> None:
    """With a token budget, the attempt is paced: each call of 5 units is counted."""

    @opero.opero(token_limit="1000/s", token_budget=100, tokens=lambda x: 5)
    def g(x: int) -> int:
        return x

    plan = _plan(g)
    assert getattr(plan.attempt_sync, "__func__", None) is Gate._paced_sync
    assert [plan.attempt_sync((i,), {}) for i in range(3)] == [0, 1, 2]
    assert g.stats["tokens_used"] == 15.0


def test_setting_a_pace_later_binds_the_paced_attempt() -> None:
    """A worker's rebuilt plan takes the parent's pace after construction: it is then paced."""

    @opero.opero(token_limit="1000/s", token_budget=100, tokens=lambda x: 4)
    def h(x: int) -> int:
        return x

    parent = _plan(h)
    copy = rebuild(PlanParts(parent.func, parent.options, parent.name, None))
    assert getattr(copy.attempt_sync, "__func__", None) is Gate._attempt_sync
    copy.pace = parent.pace
    assert getattr(copy.attempt_sync, "__func__", None) is Gate._paced_sync
    assert getattr(copy.attempt_async, "__func__", None) is Gate._paced_async
    assert copy.attempt_sync((1,), {}) == 1
    assert parent.pace is not None
    assert parent.pace.snapshot()["tokens_used"] == 4.0


def test_pace_snapshot_has_the_typed_keys_in_fn_stats() -> None:
    """The snapshot's slots and tokens keys, and fn.stats shows them."""

    @opero.opero(max_concurrency=2, token_limit="1000/s", tokens=lambda x: 1)
    def k(x: int) -> int:
        return x

    pace = _plan(k).pace
    assert pace is not None
    assert k(1) == 1
    snap = pace.snapshot()
    assert snap == {
        "tokens_used": 1.0,
        "token_limit": 1000.0,
        "token_budget": None,
        "max_concurrency": 2,
        "concurrency_in_flight": 0,
    }
    assert k.stats["max_concurrency"] == 2
    assert k.stats["tokens_used"] == 1.0
