"""A slow process-mode map with the disk cache; logs 'start i' / 'done i' lines to argv[1]."""

import os
import sys
import time

from opero import opmap


@opmap(mode="process", workers=2, cache=True, cache_backend="disk", progress=False)
def work(x):
    # The log path comes from the environment, not a global: persistent keys cover the plain
    # globals a function reads, and the rerun must find the first run's entries.
    log = os.environ["RESUMABLE_LOG"]
    with open(log, "a") as f:
        f.write(f"start {x}\n")
    time.sleep(0.25)
    with open(log, "a") as f:
        f.write(f"done {x}\n")
    return x * 2


if __name__ == "__main__":
    os.environ["RESUMABLE_LOG"] = sys.argv[1]
    print("ready", flush=True)
    result = work(range(12))
    assert result == [2 * x for x in range(12)], result
    print("finished", os.getpid(), flush=True)
