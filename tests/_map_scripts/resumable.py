"""A slow process-mode map with the disk cache; logs 'start i' / 'done i' lines to argv[1]."""

import os
import sys
import time

from opero import opmap

LOG = sys.argv[1]


@opmap(mode="process", workers=2, cache=True, cache_backend="disk", progress=False)
def work(x):
    with open(LOG, "a") as f:
        f.write(f"start {x}\n")
    time.sleep(0.25)
    with open(LOG, "a") as f:
        f.write(f"done {x}\n")
    return x * 2


if __name__ == "__main__":
    print("ready", flush=True)
    result = work(range(12))
    assert result == [2 * x for x in range(12)], result
    print("finished", os.getpid(), flush=True)
