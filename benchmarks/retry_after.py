"""Server hints: how many requests 30 calls need against a 5/s endpoint that answers
429 + Retry-After above its limit, one at a time and from 4 threads, with opero and with
stamina (its ``on=`` returns the wait).

Run: ``python benchmarks/retry_after.py``. Prints one line per library: requests made, 429s,
calls that succeeded and the wall time. Loopback demo server only.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from opero import opero
from opero._hints import server_wait
from opero.demo import DemoServer

CALLS = 30
RATE = 5.0
THREADS = (1, 4)


def get(base: str, i: int) -> int:
    try:
        with urllib.request.urlopen(f"{base}/limited/{i}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise


def run(label: str, fn: object, server: DemoServer, threads: int) -> None:
    server.reset()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(lambda i: _safe(fn, server.url, i), range(CALLS)))
    took = time.perf_counter() - t0
    st = server.stats
    print(
        f"{label:8s} threads={threads} requests={st['requests']:3d} rejected={st['rate_limited']:3d} "
        f"ok={sum(o == 200 for o in out)}/{CALLS} elapsed={took:.2f}s"
    )


def _safe(fn: object, base: str, i: int) -> object:
    try:
        return fn(base, i)  # type: ignore[operator]
    except Exception as exc:
        return exc


def main() -> None:
    with DemoServer(fail_rate=0.0, rate_limit=RATE) as server:
        fn = opero(retries=20, min_delay=0.05, max_delay=2.0)(get)
        for threads in THREADS:
            run("opero", fn, server, threads)
        try:
            import stamina
        except ImportError:
            return

        def on(exc: Exception) -> bool | float:
            wait = server_wait(exc)
            return wait if wait is not None else isinstance(exc, urllib.error.HTTPError)

        stamina.instrumentation.set_on_retry_hooks([])  # no log line per retry
        st_fn = stamina.retry(on=on, attempts=21, wait_initial=0.05, wait_max=2.0)(get)
        for threads in THREADS:
            run("stamina", st_fn, server, threads)


if __name__ == "__main__":
    main()
