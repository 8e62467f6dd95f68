"""50 rate-limited maps on one warm process pool: descriptors and limiter files stay flat.

Prints one JSON line: descriptor counts of the parent and of each worker, and the number of
opero files in the host limiter folder, before and after the 50 maps.
"""

import json
import os
import sys

from opero import opmap
from opero.executors import processes
from opero.stores import host


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def counts() -> dict[str, object]:
    pool = processes._shared
    assert pool is not None
    return {
        "parent": fds(os.getpid()),
        "workers": sorted(fds(w.proc.pid) for w in pool.workers),
        # this process's function budgets, and the scope below
        "files": len([f for f in os.listdir(host.folder()) if f"-{os.getpid()}-" in f or SCOPE in f]),
    }


SCOPE = f"warm-pool-{os.getpid()}"


@opmap(mode="process", workers=2, rate_limit=5000, progress=False)
def square(x: int) -> int:
    return x * x


def fresh() -> object:
    """A re-run notebook cell: the same function decorated again, with a scope too."""

    @opmap(mode="process", workers=2, rate_limit=5000, progress=False)
    def cube(x: int) -> int:
        return x * x * x

    return cube


@opmap(mode="process", workers=2, rate_limit=5000, rate_limit_scope=SCOPE, progress=False)
def scoped(x: int) -> int:
    return x + 1


if __name__ == "__main__":
    maps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    assert square(range(20)) == [x * x for x in range(20)]  # warm the pool
    assert scoped(range(5)) == [x + 1 for x in range(5)]
    assert fresh()(range(5)) == [x**3 for x in range(5)]  # type: ignore[operator]
    import gc

    gc.collect()
    before = counts()
    for _ in range(maps):
        assert square(range(20)) == [x * x for x in range(20)]
        assert scoped(range(5)) == [x + 1 for x in range(5)]
        assert fresh()(range(5)) == [x**3 for x in range(5)]  # type: ignore[operator]
    import gc
    import time

    gc.collect()
    # A map's end reaches the workers as a "drop" message they read when they get to it: on a
    # loaded machine the last map's runner (and its limiter file) may still be open there.
    deadline = time.monotonic() + 5
    while (after := counts()) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"before": before, "after": after}))
