"""Token budgets, charge(), token_budget and max_concurrency, shared at every level."""

from __future__ import annotations

import time
from typing import Any

import pytest

import opero
from tests._helpers import remove_scope_files, run_threads, wiped_redis_server  # noqa: F401


def test_token_gcra_spaces_attempts_by_cost() -> None:
    """Each start advances the budget by cost/rate: 100 units at 1000/s reserve 0.1 s each."""
    starts: list[float] = []

    @opero.opero(token_limit="1000/s", tokens=lambda text: len(text))
    def call(text: str) -> None:
        starts.append(time.monotonic())

    for _ in range(6):
        call("x" * 100)
    # the k-th start is never before its reserved slot, k x 0.1 s after the first
    assert all(t - starts[0] >= k * 0.1 - 0.002 for k, t in enumerate(starts))
    assert starts[-1] - starts[0] < 0.5 * 3


def test_charge_corrects_the_budget_by_the_difference() -> None:
    """charge(n) below the estimate gives the unused units back: 4x the throughput."""
    starts: list[float] = []

    @opero.opero(token_limit="1000/s", tokens=lambda text: 200)
    def call(text: str) -> None:
        starts.append(time.monotonic())
        opero.charge(50)

    for _ in range(9):
        call("q")
    # 8 gaps of 50 units (0.05 s) each, not 8 x 0.2 s
    assert 0.35 <= starts[-1] - starts[0] < 1.2


def test_async_tasks_share_the_token_budget() -> None:
    """20 concurrent tasks at 100 units each, 2000/s: at least 19 x 0.05 s."""
    import asyncio

    @opero.opero(token_limit=2000, tokens=lambda i: 100)
    async def call(i: int) -> int:
        return i

    async def main() -> list[int]:
        return list(await asyncio.gather(*(call(i) for i in range(20))))

    began = time.monotonic()
    assert asyncio.run(main()) == list(range(20))
    assert time.monotonic() - began >= 19 * 0.05 - 0.01


def test_async_charge_settles_the_budget() -> None:
    """In async def functions charge() corrects the budget: 50-unit charges fit 6 in 300."""
    import asyncio

    @opero.opero(token_budget=300, tokens=lambda i: 100, retries=0)
    async def call(i: int) -> int:
        await asyncio.sleep(0)
        opero.charge(50)
        return i

    async def main() -> list[Any]:
        out: list[Any] = []
        for i in range(7):
            try:
                out.append(await call(i))
            except opero.BudgetExhausted as exc:
                out.append(exc)
        return out

    results = asyncio.run(main())
    assert results[:5] == [0, 1, 2, 3, 4]  # 250 spent; a sixth estimate (100) would overrun 300
    assert all(isinstance(r, opero.BudgetExhausted) for r in results[5:])
    assert call.stats["tokens_used"] == 250


def test_budget_exhausted_fails_without_calling_and_is_not_retried() -> None:
    """Once spent, an attempt raises BudgetExhausted without calling; charge() counts the real cost."""
    calls: list[int] = []

    @opero.opero(token_budget=300, tokens=lambda n: 100, retries=3, min_delay=0)
    def call(n: int) -> int:
        calls.append(n)
        opero.charge(50)
        return n

    for n in range(5):  # 5 x 50 charged: 250; a sixth estimate (100) would overrun 300
        assert call(n) == n
    with pytest.raises(opero.BudgetExhausted) as info:
        call(99)
    assert calls == list(range(5))
    assert (info.value.spent, info.value.budget) == (250, 300)
    assert call.stats["tokens_used"] == 250


def test_max_concurrency_caps_async_tasks() -> None:
    """20 tasks with max_concurrency=4 never run more than 4 at once."""
    import asyncio

    state = {"now": 0, "peak": 0}

    @opero.opero(max_concurrency=4)
    async def work(i: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return i

    async def main() -> list[int]:
        return list(await asyncio.gather(*(work(i) for i in range(20))))

    assert asyncio.run(main()) == list(range(20))
    assert state["peak"] == 4
