"""When the API pushes back: the adaptive rate's convergence and the breaker in an outage.

Two measurements against the loopback demo server (nothing leaves 127.0.0.1):

1. **Adaptive rate.** The server accepts ``R`` requests/s on every endpoint and answers 429 +
   ``Retry-After`` above it. A 3,000-item thread map (16 workers) starts at ``4R`` with
   ``rate_limit="auto", rate_start=4R``. Printed: the successful requests and 429s per second
   and the shared rate opero used, then the time until every later second reaches 0.9 R,
   and the share of requests rejected after that.
2. **Circuit breaker.** 16 workers call an API that is down (503) for 5 s in the middle of
   a map, with ``circuit_breaker={"failures": 5, "open": 1.0}``. Printed: requests made
   during the outage (the target is the threshold plus one probe per open period, not
   thousands), breaker state changes, and whether every item succeeded.

Run: ``python benchmarks/adaptive.py [R]`` (~40 s at R=100).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from opero import opmap, parts
from opero.demo import DemoServer
from opero.demo.pushback import outage_run

R = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
N = 3000


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def adaptive() -> dict[str, float]:
    """Measure AIMD convergence against a server limiting at R/s."""
    ok_at: list[float] = []
    rejected_at: list[float] = []
    lock = threading.Lock()
    with DemoServer(fail_rate=0.0, rate_limit=R, limit_all=True) as server:
        base = server.url

        @opmap(
            mode="thread",
            workers=16,
            rate_limit="auto",
            rate_start=4 * R,
            retries=20,
            min_delay=0.01,
            max_delay=1.0,
            progress=False,
        )
        def fetch(item: int) -> int:
            try:
                value = _get(f"{base}/item/{item}")["value"]
            except urllib.error.HTTPError as exc:
                if exc.code == 429:
                    with lock:
                        rejected_at.append(time.monotonic())
                raise
            with lock:
                ok_at.append(time.monotonic())
            return int(value)

        limiter = parts(fetch).limiter
        rates: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                rates.append((time.monotonic(), limiter.current_rate()))

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.monotonic()
        sampler.start()
        results = fetch(list(range(N)))
        done.set()
        sampler.join()
        elapsed = time.monotonic() - t0
    failed = sum(isinstance(r, BaseException) for r in results)
    ok = Counter(int(t - t0) for t in ok_at)

    def rate_at(s: int) -> float:
        return next((r for t, r in reversed(rates) if t - t0 <= s + 1), 4 * R)

    bad = Counter(int(t - t0) for t in rejected_at)
    seconds = int(elapsed)  # full seconds only (the last one is partial)
    print(f"\n== adaptive rate: server limit R={R:g}/s, start 4R={4 * R:g}/s, {N} items, 16 threads ==")
    print(" second   ok/s   429/s   opero rate (end of second)")
    for s in range(seconds + 1):
        rate = rate_at(s)
        print(f"{s:7d} {ok[s]:6d} {bad[s]:7d}   {rate:8.1f}")
    full = list(range(seconds))

    # Converged: opero's rate has come down from 4R (<= 1.5 R) and, from then on, every
    # 3-second window delivers at least 0.9 R per second (single seconds jitter by a few
    # requests as completions fall on either side of a second's edge).
    def window(x: int) -> float:
        return sum(ok[y] for y in range(x, x + 3)) / 3

    last = seconds - 3
    converged = next(
        (s for s in full if rate_at(s) <= 1.5 * R and all(window(x) >= 0.9 * R for x in range(s, last + 1))),
        None,
    )
    # Rejections "after convergence": from the second after the one in which it converged
    # (that second still holds the end of the descent from 4R).
    start = (converged if converged is not None else seconds) + 1
    after_ok = sum(ok[s] for s in range(start, seconds + 1))
    after_bad = sum(bad[s] for s in range(start, seconds + 1))
    share = after_bad / max(1, after_ok + after_bad)
    tail = full[converged or 0 :]
    mean = sum(ok[s] for s in tail) / max(1, len(tail))
    print(f"items failed: {failed}; elapsed {elapsed:.1f} s; 429s in all: {len(rejected_at)}")
    print(
        f"converged (rate <= 1.5 R, then every 3-s window >= 0.9 R/s) within: "
        f"{None if converged is None else converged + 1} s; mean rate after: {mean:.1f}/s = "
        f"{mean / R:.2f} R; rejected after convergence: {after_bad}/{after_ok + after_bad} = "
        f"{100 * share:.2f} %"
    )
    return {"converged_s": float(converged if converged is not None else -1), "rate": mean, "rejected": share}


def outage() -> dict[str, float]:
    """Measure the requests 16 workers make against an API that is down for 5 s."""
    run = outage_run(n_items=2000, down=5.0, workers=16, retries=3, open_for=1.0, down_at=1.0)
    events, during, failed, elapsed = run["events"], run["outage_requests"], run["failed"], run["elapsed"]
    opened = sum(1 for _, s in events if s == "open")
    print("\n== circuit breaker: 16 workers, API down for 5 s (503), failures=5, open=1 s ==")
    print("breaker events: " + ", ".join(f"{t:.2f}s {s}" for t, s in events))
    print(f"requests during the outage: {during} (threshold 5 + {opened - 1} failed probes + in-flight)")
    print(f"items: {run['ok'] + failed}, failed: {failed}; elapsed {elapsed:.1f} s")
    return {"outage_requests": float(during), "failed": float(failed)}


if __name__ == "__main__":
    adaptive()
    outage()
