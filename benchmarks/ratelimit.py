"""100 grants at 50/s: opero vs aiolimiter and pyrate-limiter, 1 thread, 8 threads, 4 processes.

Prints elapsed time (ideal 1.98 s: the first grant is free), achieved rate, the smallest
spacing between consecutive starts (ideal 20 ms) and the worst burst (most starts inside any
20 ms window; 1 is exact). Run: ``python benchmarks/ratelimit.py`` (~30 s).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import Any

RATE = 50.0
N = 100


def summary(stamps: list[float]) -> tuple[float, float, float, int]:
    stamps = sorted(stamps)
    elapsed = stamps[-1] - stamps[0]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    worst = max(sum(1 for t in stamps if s <= t < s + 1 / RATE) for s in stamps)
    return elapsed, (len(stamps) - 1) / elapsed, min(gaps), worst


def _threads(acquire: Callable[[], Any], n_threads: int) -> list[float]:
    stamps: list[float] = []
    lock = threading.Lock()

    def run(per: int) -> None:
        for _ in range(per):
            acquire()
            with lock:
                stamps.append(time.monotonic())

    shares = [N // n_threads + (i < N % n_threads) for i in range(n_threads)]
    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stamps


# -- the limiters ------------------------------------------------------------------------------


def opero_limiter() -> Any:
    from opero import _limit
    from opero._options import Options
    from opero.stores.host import limiter_store

    opts = Options(rate_limit=RATE)
    return _limit.Limiter("bench", RATE, 1, limiter_store(opts, "bench", scoped=False))


def pyrate_limiter(multiprocess: bool = False) -> Any:
    from pyrate_limiter import Limiter, MultiprocessBucket, Rate

    rate = Rate(1, int(1000 / RATE))  # one per 20 ms: no burst
    if multiprocess:
        return Limiter(MultiprocessBucket.init([rate]))
    return Limiter(rate)


def _worker(args: tuple[Any, str, int]) -> list[float]:
    limiter, kind, count = args
    stamps = []
    for _ in range(count):
        if kind == "opero":
            limiter.acquire()
        else:
            limiter.try_acquire("bench", blocking=True)
        stamps.append(time.monotonic())
    return stamps


_inherited: Any = None


def _inherit(limiter: Any) -> None:
    global _inherited
    _inherited = limiter


def _worker_inherited(args: tuple[str, int]) -> list[float]:
    return _worker((_inherited, *args))


def _processes(limiter: Any, kind: str, n: int = 4) -> list[float]:
    ctx = mp.get_context("fork")
    if kind == "opero":  # opero limiters pickle: send them with the task
        with ctx.Pool(n) as pool:
            parts = pool.map(_worker, [(limiter, kind, N // n)] * n)
    else:  # pyrate's MultiprocessBucket must be inherited through the pool's initializer
        with ctx.Pool(n, initializer=_inherit, initargs=(limiter,)) as pool:
            parts = pool.map(_worker_inherited, [(kind, N // n)] * n)
    return [t for part in parts for t in part]


def _aiolimiter() -> list[float]:
    from aiolimiter import AsyncLimiter

    async def main() -> list[float]:
        limiter = AsyncLimiter(1, 1 / RATE)  # one grant per 20 ms, no burst
        stamps: list[float] = []

        async def one() -> None:
            async with limiter:
                stamps.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(N)))
        return stamps

    return asyncio.run(main())


async def _opero_async() -> list[float]:
    limiter = opero_limiter()
    stamps: list[float] = []

    async def one() -> None:
        await limiter.acquire_async()
        stamps.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(N)))
    return stamps


def measure() -> list[tuple[str, str, list[float] | str]]:
    """Every limiter in every setting: (limiter, setting, start stamps or why not)."""
    rows: list[tuple[str, str, list[float] | str]] = []
    rows.append(("opero", "1 thread", _threads(opero_limiter().acquire, 1)))
    rows.append(("opero", "8 threads", _threads(opero_limiter().acquire, 8)))
    rows.append(("opero", "4 processes", _processes(opero_limiter(), "opero")))
    rows.append(("opero", "asyncio, 100 tasks", asyncio.run(_opero_async())))
    rows.append(("aiolimiter", "asyncio, 100 tasks", _aiolimiter()))
    rows.append(("aiolimiter", "threads / processes", "n/a: one event loop only"))
    try:
        one, shared = pyrate_limiter(), pyrate_limiter()
        rows.append(("pyrate-limiter", "1 thread", _threads(lambda: one.try_acquire("b"), 1)))
        rows.append(("pyrate-limiter", "8 threads", _threads(lambda: shared.try_acquire("b"), 8)))
        rows.append(("pyrate-limiter", "4 processes", _processes(pyrate_limiter(True), "pyrate")))
    except Exception as exc:  # report, do not hide, an API that changed
        rows.append(("pyrate-limiter", "error", f"{type(exc).__name__}: {exc}"))
    return rows


def main() -> None:
    rows = measure()
    ideal = (N - 1) / RATE
    print(f"{N} grants at {RATE:g}/s (ideal {ideal:.2f} s, spacing {1000 / RATE:.0f} ms, burst 1)\n")
    print("| limiter | setting | elapsed s | vs ideal | rate /s | min spacing ms | worst burst |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, setting, stamps in rows:
        if isinstance(stamps, str):
            print(f"| {name} | {setting} | {stamps} | | | | |")
            continue
        elapsed, rate, gap, worst = summary(stamps)
        print(
            f"| {name} | {setting} | {elapsed:.3f} | {elapsed / ideal:.3f}× | {rate:.2f} | "
            f"{gap * 1000:.2f} | {worst} |"
        )


if __name__ == "__main__":
    main()
