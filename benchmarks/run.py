"""Every benchmark shape in one run, opero beside every peer, written as JSON (``make bench``).

Shapes (each tool warmed once; tools take turns within each round so they share the noise
of a busy machine; the figure is the median over rounds):

- ``cache_hit_memory``: a memory-cache hit, hashable argument (cachetools, functools);
- ``cache_hit_disk``: a disk-cache hit in the same process (diskcache, joblib.Memory);
- ``retry_sync`` / ``retry_async``: ``@opero(retries=3)`` on a function that succeeds
  (tenacity, stamina, pyresilience, a plain try/except);
- ``one_failure``: first attempt fails, second succeeds, zero backoff;
- ``tiny_thread``: 20,000 items of ``x + 1``, thread mode, 2 workers
  (multiprocessing.pool.ThreadPool, ThreadPoolExecutor, joblib threading);
- ``cpu_process`` / ``cpu_process_loaded``: 200 items of 5 ms CPU on 2 processes, alone and
  with a busy loop running beside it (joblib loky, ProcessPoolExecutor, multiprocessing.Pool,
  mpire); the parent's own CPU seconds per map are recorded too;
- ``io_thread`` / ``io_async``: 500 items of 20 ms I/O, 32 wide (ThreadPoolExecutor,
  ThreadPool, joblib threading, mpire threading; asyncio + Semaphore, aiometer);
- ``import``: ``import opero`` vs ``import asyncio`` in fresh interpreters;
- ``rate_limit``: 100 grants at 50/s (aiolimiter, pyrate-limiter), see ``ratelimit.py``;
- ``pandas``: enriching a 100,000-row column (``Series.map``, ``DataFrame.apply``);
- ``scale``: 10^3 -> 10^6 tiny items (thread) and 10^2 -> 10^4 items of 1 ms (process)
  streamed through ``imap`` from a generator, each size in a fresh interpreter: seconds per
  item and peak memory.

Usage: ``python benchmarks/run.py [--quick] [--out FILE] [--charts DIR]``. ``--quick`` is the
smoke subset ``make bench-quick`` runs in CI (< 60 s): smaller sizes, fewer rounds, and it
fails only when something crashes, never on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ``benchmarks._work`` must import here and in every pool's workers; opero itself comes from
# PYTHONPATH when it is set (so the same harness can time another checkout, e.g. "before").
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)

from benchmarks._work import CPU_S, IO_S, anap, burn, inc, nap  # noqa: E402

TINY, CPU, IO, WIDE, PROCS, THREADS = 20_000, 200, 500, 32, 2, 2
# Fresh interpreters start in a neutral folder: `python -c` puts its working directory first
# on sys.path, and this checkout's opero must not shadow the one PYTHONPATH names.
NEUTRAL = tempfile.gettempdir()
IO_IDEAL = -(-IO // WIDE) * IO_S  # 500 items, 32 at a time: 16 rounds of 20 ms = 0.32 s
CPU_IDEAL = CPU * CPU_S / PROCS


def _shape(title: str, unit: str, results: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"title": title, "unit": unit, "results": results, **extra}


# -- timing helpers ----------------------------------------------------------------------------


def rounds(
    tools: dict[str, Callable[[], Any]],
    n_rounds: int,
    clock: Callable[[], float] = time.perf_counter,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each tool's run by ``clock``, the tools taking turns in every round.

    With ``cpu``, the process's CPU seconds of each run (all its threads) are added there.
    """
    for fn in tools.values():
        fn()  # warm: pools started, imports done, first-call caches filled
    out: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(n_rounds):
        for name, fn in tools.items():
            c0, t0 = time.process_time(), clock()
            fn()
            out[name].append(clock() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - c0)
    return out


def _loop(call: Callable[[], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in itertools.repeat(None, n):
            call()

    return run


# Per-call shapes are timed in CPU seconds of this process (time.process_time): they run in
# one thread without waiting, and on a shared machine wall time would also count the slices
# other processes took. Map shapes wait and run in parallel: they are timed by the wall clock.
CPU_CLOCK = time.process_time


def per_call_us(tools: dict[str, Callable[[], Any]], n: int, n_rounds: int) -> dict[str, float]:
    """Median µs (CPU) per call of each zero-argument callable."""
    timed = rounds({k: _loop(f, n) for k, f in tools.items()}, n_rounds, CPU_CLOCK)
    return {k: statistics.median(v) / n * 1e6 for k, v in timed.items()}


def per_hit_us(tools: dict[str, Callable[[int], Any]], n: int, n_rounds: int) -> dict[str, float]:
    """Median µs (CPU) per ``fn(1)`` (no lambda in between: the call itself is timed)."""

    def loop(fn: Callable[[int], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in itertools.repeat(None, n):
                fn(1)

        return run

    timed = rounds({k: loop(f) for k, f in tools.items()}, n_rounds, CPU_CLOCK)
    return {k: statistics.median(v) / n * 1e6 for k, v in timed.items()}


def per_await_us(tools: dict[str, Callable[[], Awaitable[Any]]], n: int, n_rounds: int) -> dict[str, float]:
    """Median µs (CPU) per awaited call, each round one ``asyncio.run`` per tool."""

    async def loop(make: Callable[[], Awaitable[Any]]) -> None:
        for _ in itertools.repeat(None, n):
            await make()

    timed: dict[str, list[float]] = {k: [] for k in tools}
    for _ in range(n_rounds + 1):  # the first round warms up and is dropped
        for k, f in tools.items():
            t0 = CPU_CLOCK()
            asyncio.run(loop(f))
            timed[k].append(CPU_CLOCK() - t0)
    return {k: statistics.median(v[1:]) / n * 1e6 for k, v in timed.items()}


def seconds(timed: dict[str, list[float]]) -> dict[str, float]:
    """Median seconds of each tool."""
    return {k: statistics.median(v) for k, v in timed.items()}


# -- shapes --------------------------------------------------------------------------------------


def cache_memory(q: bool) -> dict[str, Any]:
    import cachetools

    import opero

    @opero.opero(cache=True)
    def o(x: int) -> int:
        return x

    @functools.lru_cache(maxsize=10_000, typed=True)
    def lru(x: int) -> int:
        return x

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=3600))
    def ttl(x: int) -> int:
        return x

    @cachetools.cached(cachetools.LRUCache(maxsize=10_000))
    def lruc(x: int) -> int:
        return x

    res = per_hit_us(
        {"opero": o, "cachetools TTLCache": ttl, "cachetools LRUCache": lruc, "functools.lru_cache": lru},
        20_000 if q else 100_000,
        3 if q else 7,
    )
    hits = o.stats.cache_hits
    return _shape(
        "memory cache hit, hashable argument",
        "µs/call",
        res,
        target={"peer": "cachetools TTLCache", "max_ratio": 1.0},
        note=f"opero counted {hits} hits in fn.stats",
    )


def cache_disk(q: bool) -> dict[str, Any]:
    from benchmarks._peers import disk_cached

    with tempfile.TemporaryDirectory() as d:
        fns, dc = disk_cached(d)
        res = per_hit_us(fns, 300 if q else 2000, 3 if q else 5)
        dc.close()
    return _shape("disk cache hit, same process", "µs/call", res)


def retry_happy(q: bool) -> dict[str, dict[str, Any]]:
    from benchmarks._peers import retry_tools

    sync, asyn = retry_tools()
    n, r = (5_000, 3) if q else (20_000, 5)
    target = {"peer": "pyresilience", "max_ratio": 0.5}
    return {
        "retry_sync": _shape(
            "@opero(retries=3) happy path, sync", "µs/call", per_call_us(sync, n, r), target=target
        ),
        "retry_async": _shape(
            "@opero(retries=3) happy path, async", "µs/call", per_await_us(asyn, n, r), target=target
        ),
    }


def one_failure(q: bool) -> dict[str, Any]:
    from benchmarks._peers import one_failure_tools

    tools = one_failure_tools()
    return _shape(
        "one failure then success, zero backoff",
        "µs/call",
        per_call_us(tools, 500 if q else 5000, 3 if q else 5),
    )


def tiny_thread(q: bool) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing.pool import ThreadPool

    import joblib

    from opero import opmap

    items = list(range(TINY))
    op = opmap(mode="thread", workers=THREADS, retries=3, progress=False)(inc)
    with ThreadPool(THREADS) as tp, ThreadPoolExecutor(THREADS) as ex:
        tools: dict[str, Callable[[], Any]] = {
            "opero": lambda: op(items),
            "multiprocessing ThreadPool.map": lambda: tp.map(inc, items),
            "ThreadPoolExecutor.map": lambda: list(ex.map(inc, items)),
            "joblib threading": lambda: joblib.Parallel(n_jobs=THREADS, prefer="threads")(
                joblib.delayed(inc)(x) for x in items
            ),
        }
        cpu: dict[str, list[float]] = {}
        res = seconds(rounds(tools, 3 if q else 9, cpu=cpu))
    assert op.stats.calls >= TINY
    return _shape(
        f"{TINY:,} tiny items, thread mode, {THREADS} workers",
        "s",
        res,
        process_cpu_s=seconds(cpu),
        target={"peer": "multiprocessing ThreadPool.map", "max_ratio": 1.5},
        note="opero with retries=3 and per-item stats; ThreadPool does neither",
    )


def _cpu_tools(stack: Any) -> dict[str, Callable[[], Any]]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import joblib
    from mpire import WorkerPool

    from opero import opmap

    items = list(range(CPU))
    op = opmap(mode="process", workers=PROCS, progress=False)(burn)
    ex = stack.enter_context(ProcessPoolExecutor(PROCS))
    pool = stack.enter_context(get_context("fork").Pool(PROCS))
    wp = stack.enter_context(WorkerPool(n_jobs=PROCS, keep_alive=True))
    return {
        "opero": lambda: op(items),
        "joblib loky": lambda: joblib.Parallel(n_jobs=PROCS)(joblib.delayed(burn)(x) for x in items),
        "ProcessPoolExecutor (chunksize=10)": lambda: list(ex.map(burn, items, chunksize=10)),
        "multiprocessing.Pool.map": lambda: pool.map(burn, items),
        "mpire": lambda: wp.map(burn, items, progress_bar=False),
    }


def cpu_process(q: bool, loaded: bool) -> dict[str, Any]:
    import contextlib

    n_rounds = 2 if q else 5
    with contextlib.ExitStack() as stack:
        tools = _cpu_tools(stack)
        for fn in tools.values():
            fn()
        hog = None
        if loaded:  # one busy process beside the map: the machine is no longer idle
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.2)
        wall: dict[str, list[float]] = {k: [] for k in tools}
        cpu: dict[str, list[float]] = {k: [] for k in tools}
        try:
            for _ in range(n_rounds):
                for name, fn in tools.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn()
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    title = f"{CPU} × {CPU_S * 1000:g} ms CPU, {PROCS} processes" + (", busy loop beside" if loaded else "")
    return _shape(
        title,
        "s",
        seconds(wall),
        ideal=CPU_IDEAL,
        parent_cpu_s=seconds(cpu),
        target={"peer": "joblib loky", "max_ratio": 1.0},
    )


def io_thread(q: bool) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing.pool import ThreadPool

    import joblib
    from mpire import WorkerPool

    from opero import opmap

    items = list(range(IO))
    op = opmap(mode="thread", workers=WIDE, progress=False)(nap)
    with (
        ThreadPoolExecutor(WIDE) as ex,
        ThreadPool(WIDE) as tp,
        WorkerPool(n_jobs=WIDE, start_method="threading", keep_alive=True) as wp,
    ):
        tools: dict[str, Callable[[], Any]] = {
            "opero": lambda: op(items),
            "ThreadPoolExecutor.map": lambda: list(ex.map(nap, items)),
            "multiprocessing ThreadPool.map": lambda: tp.map(nap, items, chunksize=1),
            "joblib threading": lambda: joblib.Parallel(n_jobs=WIDE, prefer="threads")(
                joblib.delayed(nap)(x) for x in items
            ),
            "mpire threading": lambda: wp.map(nap, items, progress_bar=False, chunk_size=1),
        }
        timed = rounds(tools, 2 if q else 5)
    return _shape(
        f"{IO} × {IO_S * 1000:g} ms I/O, {WIDE} wide, threads",
        "s",
        seconds(timed),
        ideal=IO_IDEAL,
        worst=({k: max(v) for k, v in timed.items()}),
        target={"peer": "ThreadPoolExecutor.map", "max_ratio": 1.0},
    )


def io_async(q: bool) -> dict[str, Any]:
    import aiometer

    from opero import opmap

    op = opmap(mode="async", workers=WIDE, progress=False)(anap)

    async def sem_gather() -> list[int]:
        sem = asyncio.Semaphore(WIDE)

        async def one(x: int) -> int:
            async with sem:
                return await anap(x)

        return await asyncio.gather(*(one(x) for x in range(IO)))

    async def aiometer_run() -> list[int]:
        return list(await aiometer.run_all([functools.partial(anap, x) for x in range(IO)], max_at_once=WIDE))

    items = list(range(IO))
    tools: dict[str, Callable[[], Any]] = {
        "opero": lambda: asyncio.run(op(items)),
        "asyncio + Semaphore": lambda: asyncio.run(sem_gather()),
        "aiometer.run_all": lambda: asyncio.run(aiometer_run()),
    }
    return _shape(
        f"{IO} × {IO_S * 1000:g} ms I/O, {WIDE} wide, asyncio",
        "s",
        seconds(rounds(tools, 2 if q else 5)),
        ideal=IO_IDEAL,
        target={"peer": "asyncio + Semaphore", "max_ratio": 1.0},
    )


def import_time(q: bool) -> dict[str, Any]:
    """Wall-clock of fresh interpreters (minus a bare one) and ``-X importtime`` totals.

    opero's bytecode is compiled first, as ``pip install`` does: a checkout run with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every import.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("opero")
    assert spec is not None and spec.submodule_search_locations
    compileall.compile_dir(spec.submodule_search_locations[0], quiet=1)
    env = dict(os.environ)
    snippets = {"bare interpreter": "pass", "asyncio": "import asyncio", "opero": "import opero"}
    walls: dict[str, list[float]] = {k: [] for k in snippets}
    for _ in range(3 if q else 21):
        for name, code in snippets.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=NEUTRAL)
            walls[name].append(time.perf_counter() - t0)
    bare = statistics.median(walls["bare interpreter"])
    wall_ms = {k: (statistics.median(v) - bare) * 1000 for k, v in walls.items() if k != "bare interpreter"}

    def cumulative(module: str) -> float:
        runs = []
        for _ in range(2 if q else 7):
            out = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {module}"],
                env=env,
                cwd=NEUTRAL,
                capture_output=True,
                text=True,
                check=True,
            ).stderr
            for line in out.splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[2].strip() == module:
                    runs.append(int(parts[1]) / 1000)
        return statistics.median(runs)

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, opero; print(','.join(m for m in ('tenacity', 'pandas', 'tornado', 'IPython', "
            "'ipywidgets', 'redis', 'dask') if m in sys.modules))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=NEUTRAL,
    ).stdout.strip()
    try:
        import tornado

        tornado_version = tornado.version
    except ImportError:
        tornado_version = None
    importtime = {"asyncio": cumulative("asyncio"), "opero": cumulative("opero")}
    return _shape(
        "import cost in a fresh interpreter",
        "ms",
        wall_ms,
        importtime_cumulative_ms=importtime,
        heavy_modules_loaded=loaded.split(",") if loaded else [],
        tornado=tornado_version,
        target={"peer": "asyncio", "max_extra_ms": 30},
    )


def rate_limit(q: bool) -> dict[str, Any]:
    from benchmarks import ratelimit

    rows = ratelimit.measure()
    res: dict[str, Any] = {}
    for name, setting, stamps in rows:
        if isinstance(stamps, str):
            res[f"{name}, {setting}"] = stamps
            continue
        elapsed, rate, gap, worst = ratelimit.summary(stamps)
        res[f"{name}, {setting}"] = {
            "elapsed_s": elapsed,
            "rate": rate,
            "min_spacing_ms": gap * 1000,
            "worst_burst": worst,
        }
    return _shape(
        f"{ratelimit.N} grants at {ratelimit.RATE:g}/s", "s", res, ideal=(ratelimit.N - 1) / ratelimit.RATE
    )


def pandas_enrich(q: bool) -> dict[str, Any]:
    import pandas as pd

    from opero import opmap

    rows = 20_000 if q else 100_000
    enrich = opmap(len, progress=False, mode="thread")
    df = pd.DataFrame({"address": [f"{i} Main Street" for i in range(rows)]})
    items = df["address"].tolist()
    tools: dict[str, Callable[[], Any]] = {
        "opero (list)": lambda: enrich(items),
        "opero df.pipe(enrich, col)": lambda: df.pipe(enrich, "address"),
        "pandas Series.map": lambda: df["address"].map(len),
        "pandas DataFrame.apply(axis=1)": lambda: df.apply(lambda row: len(row["address"]), axis=1),
    }
    return _shape(f"enrich a {rows:,}-row column", "s", seconds(rounds(tools, 2 if q else 5)))


SCALE = """
import json, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
from benchmarks._work import inc, burn_1ms
from opero import opmap
f = opmap(mode=mode, workers=2, progress=False)(inc if mode == "thread" else burn_1ms)
list(f.imap(iter(range(8))))  # warm: the pool started, imports done
def status(field):  # kB; VmHWM is this process's peak RSS (ru_maxrss can hold the parent's)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))
base = status("VmRSS:")
t0 = time.perf_counter()
count = 0
for _ in f.imap(i for i in range(n)):
    count += 1
secs = time.perf_counter() - t0
assert count == n, count
peak = status("VmHWM:")
print(json.dumps({"n": n, "seconds": secs, "us_per_item": secs / n * 1e6,
                  "rss_before_mb": base / 2**20, "peak_rss_mb": peak / 2**20,
                  "growth_mb": max(0, peak - base) / 2**20}))
"""


def scale(q: bool) -> dict[str, Any]:
    """Each size in a fresh interpreter, so a peak RSS belongs to that size alone."""
    sizes = {
        "thread": [10**3, 10**4, 10**5] if q else [10**3, 10**4, 10**5, 10**6],
        "process": [10**2, 300] if q else [10**2, 10**3, 10**4],
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for mode, ns in sizes.items():
        out[mode] = []
        for n in ns:
            got = subprocess.run(
                [sys.executable, "-c", SCALE, mode, str(n)],
                env=os.environ,
                capture_output=True,
                text=True,
                cwd=NEUTRAL,
            )
            if got.returncode:
                raise RuntimeError(f"scale {mode} {n}: {got.stderr}")
            out[mode].append(json.loads(got.stdout.strip().splitlines()[-1]))
    return _shape(
        "cost at scale: imap over a generator, 2 workers (tiny items: threads; 1 ms CPU items: processes)",
        "µs/item",
        out,
    )


# -- the run -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
        with open("/proc/meminfo") as fh:
            info["memory_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
        info["load_average_at_start"] = list(os.getloadavg())
    except (OSError, StopIteration):
        pass
    return info


def _opero_version() -> dict[str, Any]:
    import opero

    where = Path(opero.__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(where), "status", "--porcelain", "--", "opero"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "version": opero.__version__,
        "path": str(where),
        "commit": commit + ("+changes" if dirty else ""),
    }


SHAPES: list[tuple[str, Callable[[bool], Any], bool]] = [
    # (name, function, in the quick subset)
    ("import", import_time, True),
    ("cache_hit_memory", cache_memory, True),
    ("retry", retry_happy, True),
    ("one_failure", one_failure, True),
    ("cache_hit_disk", cache_disk, True),
    ("tiny_thread", tiny_thread, True),
    ("io_async", io_async, True),
    ("io_thread", io_thread, True),
    ("cpu_process", functools.partial(cpu_process, loaded=False), True),
    ("cpu_process_loaded", functools.partial(cpu_process, loaded=True), False),
    ("pandas", pandas_enrich, False),
    ("rate_limit", rate_limit, False),
    ("scale", scale, True),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the shapes, write the JSON (and charts), print a summary; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI smoke subset (< 60 s)")
    parser.add_argument("--only", nargs="*", help="run only these shapes")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/<stamp>.json)")
    parser.add_argument("--charts", type=Path, help="folder for the PNG charts (default: none)")
    parser.add_argument("--label", default="", help="a name for this run, stored in the JSON")
    a = parser.parse_args(argv)
    began = time.perf_counter()
    stamp = dt.datetime.now(dt.UTC)
    doc: dict[str, Any] = {
        "meta": {
            "date": stamp.isoformat(timespec="seconds"),
            "label": a.label,
            "quick": a.quick,
            "machine": machine(),
            "opero": _opero_version(),
        },
        "shapes": {},
    }
    suffix = "-quick" if a.quick else ""
    out = a.out or ROOT / "benchmarks" / "results" / f"{stamp:%Y-%m-%dT%H%M}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, fn, in_quick in SHAPES:
        if (a.quick and not in_quick) or (a.only and name not in a.only):
            continue
        t0 = time.perf_counter()
        got = fn(a.quick)
        parts = got if name == "retry" else {name: got}
        doc["shapes"].update(parts)
        for part, shape in parts.items():
            print(f"== {part} ({time.perf_counter() - t0:.1f} s)\n{report(shape)}\n", flush=True)
        doc["meta"]["seconds"] = round(time.perf_counter() - began, 1)
        out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")  # after every shape
    print(f"wrote {out} ({doc['meta']['seconds']} s)")
    if a.charts is not None:
        from benchmarks import chart

        for path in chart.draw(doc, a.charts):
            print(f"drew {path}")
    return doc


def report(shape: dict[str, Any]) -> str:
    """Lines of one shape: each tool's figure and its ratio to opero (or ideal)."""
    res = shape["results"]
    if not isinstance(res, dict) or not all(isinstance(v, int | float) for v in res.values()):
        return json.dumps(res, indent=1, ensure_ascii=False)
    base = res.get("opero") or next(iter(res.values()))
    ideal = shape.get("ideal")
    lines = []
    for name, v in sorted(res.items(), key=lambda kv: kv[1]):
        line = f"  {name:36} {v:10.4f} {shape['unit']:8} {v / base if base else 0:6.2f}× opero"
        if ideal:
            line += f"  {v / ideal:6.3f}× ideal"
        lines.append(line)
    t = shape.get("target")
    if t and "max_ratio" in t and t["peer"] in res:
        ratio = res["opero"] / res[t["peer"]]
        lines.append(f"  target: opero ≤ {t['max_ratio']}× {t['peer']}: {ratio:.2f}×")
    elif t and "max_extra_ms" in t:
        extra = res["opero"] - res["asyncio"]
        lines.append(f"  target: opero ≤ asyncio + {t['max_extra_ms']} ms: +{extra:.1f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
