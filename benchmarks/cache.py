"""Cache hits: opero's memory, disk and redis backends vs the tools a user would pick instead.

- memory hit: opero ``cache=True`` vs ``functools.lru_cache`` and ``cachetools`` TTLCache;
- disk hit, same process: opero ``cache_backend="disk"`` vs ``joblib.Memory`` and ``diskcache``;
- disk hit, fresh process: each key read once by a new interpreter (what a kernel restart sees);
- redis hit: opero ``cache_backend="redis"`` vs a raw redis-py ``GET`` of a pickled value.

Times are full decorated calls (µs per hit, median of 5 runs). Run: ``python benchmarks/cache.py``.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def per_call(fn: Callable[[], Any], n: int = 20_000) -> float:
    """Median µs per call over 5 runs of ``n`` calls."""
    fn()
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - began) / n * 1e6)
    return statistics.median(runs)


def memory_rows() -> list[tuple[str, float]]:
    import cachetools

    import opero

    @opero.opero(cache=True)
    def o(x: int) -> int:
        return x

    @functools.lru_cache(maxsize=10_000)
    def lru(x: int) -> int:
        return x

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=3600))
    def ttl(x: int) -> int:
        return x

    return [
        ("opero memory", per_call(lambda: o(1))),
        ("functools.lru_cache", per_call(lambda: lru(1))),
        ("cachetools TTLCache", per_call(lambda: ttl(1))),
    ]


FRESH = """
import sys, time
kind, location, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "opero":
    import opero
    @opero.opero(cache=True, cache_backend="disk", cache_backend_config={"location": location})
    def f(x):
        return [x] * 10
elif kind == "joblib.Memory":
    import joblib
    mem = joblib.Memory(location, verbose=0)
    def g(x):
        return [x] * 10
    f = mem.cache(g)
else:
    import diskcache
    cache = diskcache.Cache(location)
    @cache.memoize()
    def f(x):
        return [x] * 10
if sys.argv[4] == "fill":
    for i in range(n):
        f(i)
else:
    f(-1)  # first-call set-up (imports, folders) is not a hit
    began = time.perf_counter()
    for i in range(n):
        f(i)
    print((time.perf_counter() - began) / n * 1e6)
"""


def _fresh(kind: str, location: str, n: int = 300) -> float:
    def run(mode: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", FRESH, kind, location, str(n), mode],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout

    run("fill")
    return statistics.median(float(run("hit")) for _ in range(3))


def disk_rows() -> list[tuple[str, float, float]]:
    from benchmarks._peers import disk_cached

    rows = []
    with tempfile.TemporaryDirectory() as d:
        fns, dc = disk_cached(d)
        for name, kind in (
            ("opero disk", "opero"),
            ("joblib.Memory", "joblib.Memory"),
            ("diskcache", "diskcache"),
        ):
            fn = fns[kind]
            same = per_call(lambda fn=fn: fn(1), n=2000 if kind == "joblib.Memory" else 20_000)
            rows.append((name, same, _fresh(kind, f"{d}/fresh-{kind}")))
        dc.close()
    return rows


def redis_rows() -> list[tuple[str, float]] | str:
    import pickle

    from tests._redis import RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        return "redis-server not installed"
    server = RedisServer(binary).start()
    try:
        import redis

        import opero

        @opero.opero(cache=True, cache_backend="redis", cache_backend_config={"url": server.url})
        def o(x: int) -> list[int]:
            return [x] * 10

        client = redis.Redis.from_url(server.url)
        client.set("raw", pickle.dumps([1] * 10))
        return [
            ("opero redis", per_call(lambda: o(1), n=3000)),
            ("redis-py GET + unpickle", per_call(lambda: pickle.loads(client.get("raw")), n=3000)),
        ]
    finally:
        server.close()


def main() -> None:
    print("## memory hit (µs per call)\n")
    mem = memory_rows()
    base = mem[0][1]
    print("| cache | µs/hit | vs opero |\n|---|---:|---:|")
    for name, us in mem:
        print(f"| {name} | {us:.2f} | {us / base:.2f}× |")
    print("\n## disk hit (µs per call)\n")
    disk = disk_rows()
    o_same, o_fresh = disk[0][1], disk[0][2]
    print("| cache | same process | vs opero | fresh process | vs opero |\n|---|---:|---:|---:|---:|")
    for name, same, fresh in disk:
        print(f"| {name} | {same:.2f} | {same / o_same:.2f}× | {fresh:.1f} | {fresh / o_fresh:.2f}× |")
    print("\n## redis hit (µs per call)\n")
    red = redis_rows()
    if isinstance(red, str):
        print(red)
        return
    print("| cache | µs/hit | vs opero |\n|---|---:|---:|")
    for name, us in red:
        print(f"| {name} | {us:.1f} | {us / red[0][1]:.2f}× |")


if __name__ == "__main__":
    main()
