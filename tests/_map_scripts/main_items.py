"""Items whose classes live in __main__, lambdas and local classes, in a process map."""

import json
import sys
import threading
import time

from opero import opmap


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@opmap(mode=sys.argv[1], workers=2, progress=False)
def measure(item):
    if callable(item):
        return item(10)
    if isinstance(item, Point):
        return Point(item.x * 2)  # a __main__ class travels back too
    return item.value


def make_local(value: int):
    class Local:
        def __init__(self) -> None:
            self.value = value

    return Local()


if __name__ == "__main__":
    items = [Point(1), lambda v: v + 1, make_local(7), threading.Lock(), Point(5)]
    t0 = time.monotonic()
    out = measure(items)
    took = time.monotonic() - t0
    print(
        json.dumps(
            {
                "points": [out[0].x, out[4].x],
                "lambda": out[1],
                "local": out[2],
                "lock": [type(out[3]).__name__, str(out[3]), getattr(out[3], "__notes__", [])],
                "seconds": took,
            }
        )
    )
