"""opmap against the parallel maps a user would otherwise pick, in one run (< 3 min).

Shapes (each tool warmed once, then the median of a few runs):

- tiny: 20,000 items of ``x + 1`` (opmap thread mode with retries=3);
- cpu: 200 items of 5 ms CPU on 2 processes (ideal 0.50 s);
- io-thread: 500 items of 20 ms sleep, 32 wide (ideal 0.3125 s);
- io-async: 500 items of 20 ms ``asyncio.sleep``, 32 wide (ideal 0.3125 s).

Run: ``python benchmarks/map.py``; prints a markdown table of seconds and ratio to ideal.
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import Pool
from multiprocessing.pool import ThreadPool
from pathlib import Path

import aiometer
import joblib
from mpire import WorkerPool

from opero import opmap

# The work items live in ``benchmarks._work`` (shared with run.py), which this process and every
# pool's workers must import; appended, so opero itself still comes from PYTHONPATH.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)

from benchmarks._work import CPU_S, IO_S, anap, burn, inc, nap  # noqa: E402

TINY, CPU, IO = 20_000, 200, 500
WIDE, PROCS = 32, 2


op_tiny = opmap(mode="thread", retries=3, progress=False)(inc)
op_tiny_bar = opmap(mode="thread", retries=3, progress=True)(inc)
op_cpu = opmap(mode="process", workers=PROCS, progress=False)(burn)
op_io = opmap(mode="thread", workers=WIDE, progress=False)(nap)
op_aio = opmap(mode="async", workers=WIDE, progress=False)(anap)


def timeit(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm: pools started, imports done
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def sem_gather(n: int) -> list[int]:
    sem = asyncio.Semaphore(WIDE)

    async def one(x: int) -> int:
        async with sem:
            return await anap(x)

    return await asyncio.gather(*(one(x) for x in range(n)))


async def aiometer_run(n: int) -> list[int]:
    return list(await aiometer.run_all([functools.partial(anap, x) for x in range(n)], max_at_once=WIDE))


def main() -> None:
    rows: list[tuple[str, str, float, float | None]] = []

    def add(shape: str, tool: str, fn: Callable[[], object], ideal: float | None, runs: int = 3) -> None:
        secs = timeit(fn, runs)
        rows.append((shape, tool, secs, ideal))
        print(f"  {shape:10} {tool:34} {secs:8.4f}s", flush=True)

    tiny = list(range(TINY))
    add("tiny", "opmap thread (retries=3)", lambda: op_tiny(tiny), None, 7)
    add("tiny", "opmap thread, progress bar", lambda: op_tiny_bar(tiny), None, 5)
    with ThreadPoolExecutor(WIDE) as ex:
        add("tiny", "ThreadPoolExecutor.map", lambda: list(ex.map(inc, tiny)), None)
    with ThreadPool(6) as tp:
        add("tiny", "multiprocessing ThreadPool.map", lambda: tp.map(inc, tiny), None)
    add(
        "tiny",
        "joblib threading",
        lambda: joblib.Parallel(n_jobs=6, prefer="threads")(joblib.delayed(inc)(x) for x in tiny),
        None,
    )
    add(
        "tiny",
        "joblib loky",
        lambda: joblib.Parallel(n_jobs=PROCS)(joblib.delayed(inc)(x) for x in tiny),
        None,
    )
    with WorkerPool(n_jobs=PROCS, keep_alive=True) as wp:
        add("tiny", "mpire (processes)", lambda: wp.map(inc, tiny, progress_bar=False), None)

    cpu_ideal = CPU * CPU_S / PROCS
    cpu = list(range(CPU))
    add("cpu", "opmap process", lambda: op_cpu(cpu), cpu_ideal)
    with ProcessPoolExecutor(PROCS) as ex:
        add(
            "cpu",
            "ProcessPoolExecutor (chunksize=10)",
            lambda: list(ex.map(burn, cpu, chunksize=10)),
            cpu_ideal,
        )
    with Pool(PROCS) as pool:
        add("cpu", "multiprocessing.Pool.map", lambda: pool.map(burn, cpu), cpu_ideal)
    add(
        "cpu",
        "joblib loky",
        lambda: joblib.Parallel(n_jobs=PROCS)(joblib.delayed(burn)(x) for x in cpu),
        cpu_ideal,
    )
    with WorkerPool(n_jobs=PROCS, keep_alive=True) as wp:
        add("cpu", "mpire", lambda: wp.map(burn, cpu, progress_bar=False), cpu_ideal)

    io_ideal = IO * IO_S / WIDE
    io = list(range(IO))
    add("io-thread", "opmap thread", lambda: op_io(io), io_ideal)
    with ThreadPoolExecutor(WIDE) as ex:
        add("io-thread", "ThreadPoolExecutor.map", lambda: list(ex.map(nap, io)), io_ideal)
    with ThreadPool(WIDE) as tp:
        add("io-thread", "multiprocessing ThreadPool.map", lambda: tp.map(nap, io, chunksize=1), io_ideal)
    add(
        "io-thread",
        "joblib threading",
        lambda: joblib.Parallel(n_jobs=WIDE, prefer="threads")(joblib.delayed(nap)(x) for x in io),
        io_ideal,
    )
    with WorkerPool(n_jobs=WIDE, start_method="threading", keep_alive=True) as wp:
        add(
            "io-thread",
            "mpire threading",
            lambda: wp.map(nap, io, progress_bar=False, chunk_size=1),
            io_ideal,
        )

    add("io-async", "opmap async", lambda: asyncio.run(op_aio(io)), io_ideal)
    add("io-async", "asyncio + Semaphore", lambda: asyncio.run(sem_gather(IO)), io_ideal)
    add("io-async", "aiometer.run_all", lambda: asyncio.run(aiometer_run(IO)), io_ideal)

    print("\n| shape | tool | seconds | ideal | ratio |")
    print("|---|---|---:|---:|---:|")
    for shape, tool, secs, ideal in rows:
        ratio = f"{secs / ideal:.3f}×" if ideal else "–"
        print(f"| {shape} | {tool} | {secs:.4f} | {ideal if ideal else '–'} | {ratio} |")


if __name__ == "__main__":
    main()
