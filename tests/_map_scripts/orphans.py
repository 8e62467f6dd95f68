"""A process map of long items that call a loopback server (argv[1]) until they are stopped.

Prints "ready <pid>" and then runs; the test kills this process and checks that its workers
stop with it. ``rate_limit`` gives the map a host-store limiter file.
"""

import os
import sys
import time
import urllib.request

from opero import opmap


@opmap(mode="process", workers=2, rate_limit=100, retries=0, progress=False)
def call_forever(x):
    url = os.environ["ORPHANS_URL"]
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with urllib.request.urlopen(f"{url}/{os.getpid()}/{x}", timeout=5) as response:
            response.read()
        time.sleep(0.02)
    return x


if __name__ == "__main__":
    os.environ["ORPHANS_URL"] = sys.argv[1]
    print("ready", os.getpid(), flush=True)
    call_forever(range(4))
