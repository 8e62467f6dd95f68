"""Soak: a long process-mode map with injected failures and killed workers; nothing is lost.

``python benchmarks/soak.py`` streams 1,000,000 items through ``opmap(mode="process").imap``
in the parent while:

- 1 % of the items fail (``x % 100 == 7`` raises ``ValueError`` on every attempt), so they
  end as ``AllFailedError`` after their retry;
- every ``--kill-every`` items (100,000 by default) the parent SIGKILLs one pool worker,
  whose items lose one attempt with ``WorkerLostError`` and are retried on a fresh worker.

At the end every item must be accounted for, exactly: each ``x`` not failing yields
``2 * x`` in input order, each failing ``x`` an ``AllFailedError`` of ``ValueError``s, and
``fn.stats`` agrees (calls, successes, failures). The parent's resident memory must grow
by less than ``--max-rss-growth`` MB (100). Prints one JSON line of figures; exit status 1
when a check fails.

Flags: ``--items N`` (1,000,000), ``--workers`` (2), ``--kill-every`` (100,000),
``--max-rss-growth`` MB (100).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator

from opero import AllFailedError, WorkerLostError, opmap
from opero.executors import processes


def rss_mb() -> float:
    """Resident memory of this process, in MB (Linux ``/proc``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fails(x: int) -> bool:
    """The injected failures: 1 % of the items, always the same ones."""
    return x % 100 == 7


def double(x: int) -> int:
    """The soaked function: ``2 * x``, or a ``ValueError`` for the injected failures."""
    if x % 100 == 7:
        raise ValueError(f"injected failure for item {x}")
    return 2 * x


def items(n: int) -> Iterator[int]:
    """The input as a generator: it never sits in memory at once."""
    yield from range(n)


def kill_a_worker() -> int | None:
    """SIGKILL one live worker of the warm pool; its pid, or None when there is none."""
    pool = processes._shared
    if pool is None:
        return None
    for worker in pool.workers:
        if worker.chunk_id is not None and worker.proc.poll() is None:
            os.kill(worker.proc.pid, signal.SIGKILL)
            return worker.proc.pid
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print its figures as one JSON line; 0 when every check holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=int, default=100_000)
    parser.add_argument("--max-rss-growth", type=float, default=100.0)
    args = parser.parse_args(argv)
    n, every = args.items, args.kill_every

    fn = opmap(mode="process", workers=args.workers, retries=1, min_delay=0.001, jitter=0, progress=False)(
        double
    )
    warm = opmap(mode="process", workers=args.workers, progress=False)(_warm)
    warm(range(args.workers * 2))  # start the pool before measuring memory
    rss_start = rss_peak = rss_mb()
    t0 = time.perf_counter()
    ok = failed = wrong = lost_final = owed = 0
    kills: list[int] = []
    for x, value in enumerate(fn.imap(items(n))):
        if isinstance(value, BaseException):
            if (
                fails(x)
                and isinstance(value, AllFailedError)
                and all(isinstance(e, ValueError | WorkerLostError) for e in value.errors)
            ):
                failed += 1
                if not any(isinstance(e, ValueError) for e in value.errors):
                    lost_final += 1
            else:
                wrong += 1
        elif value == 2 * x and not fails(x):
            ok += 1
        else:
            wrong += 1
        done = x + 1
        if every and done % every == 0 and done < n:
            owed += 1
        if owed:
            # only a worker that holds items is killed (an idle one would cost nothing);
            # when none does right now, the kill waits for the next item
            pid = kill_a_worker()
            if pid is not None:
                kills.append(pid)
                owed -= 1
        if done % 10_000 == 0:
            rss_peak = max(rss_peak, rss_mb())
    seconds = time.perf_counter() - t0
    rss_peak = max(rss_peak, rss_mb())
    st = fn.stats
    expected_failed = sum(1 for x in range(n) if fails(x))
    figures = {
        "items": n,
        "seconds": round(seconds, 1),
        "items_per_second": round(n / seconds),
        "ok": ok,
        "failed": failed,
        "wrong": wrong,
        "expected_failed": expected_failed,
        "kills": len(kills),
        "failed_by_lost_workers_only": lost_final,
        "stats": {k: st[k] for k in ("calls", "successes", "failures", "attempts", "retries")},
        "rss_start_mb": round(rss_start, 1),
        "rss_peak_mb": round(rss_peak, 1),
        "rss_growth_mb": round(rss_peak - rss_start, 1),
    }
    checks = {
        "every item accounted for": ok + failed == n and wrong == 0,
        "failures exact": failed == expected_failed,
        "stats exact": (st.calls, st.successes, st.failures) == (n, n - expected_failed, expected_failed),
        "workers were killed": len(kills) == (max(0, (n - 1) // every) if every else 0),
        "memory bounded": rss_peak - rss_start < args.max_rss_growth,
    }
    figures["checks"] = checks
    print(json.dumps(figures))
    return 0 if all(checks.values()) else 1


def _warm(x: int) -> int:
    return x


if __name__ == "__main__":
    sys.exit(main())
