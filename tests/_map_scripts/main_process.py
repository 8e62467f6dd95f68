"""A map over a function defined in __main__, in process mode (run as a script)."""

import json
import os

from opero import opmap


@opmap(mode="process", workers=2, progress=False)
def triple(x):
    return (3 * x, os.getpid())


if __name__ == "__main__":
    out = triple(range(20))
    print(json.dumps({"values": [v for v, _ in out], "pids": sorted({p for _, p in out}), "me": os.getpid()}))
