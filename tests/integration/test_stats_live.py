"""Live numbers that stay true: throttled time, recent calls/s, history, in flight, latency."""

from __future__ import annotations

import threading
import time

from opero import opero

_INTERRUPTED_MAP = """
import json, os, signal, threading, time
from opero import Cancelled, opmap

@opmap(workers=4, progress=False)
def slow(x):
    time.sleep(0.1)
    return x * 2

threading.Timer(0.55, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    slow(list(range(100)))
    raised = False
except KeyboardInterrupt:
    raised = True
results = slow.last_results()
failures = slow.failures()
print(json.dumps({
    "raised": raised,
    "n": len(results),
    "done": [v for v in results if not isinstance(v, Cancelled)],
    "cancelled_stat": slow.stats["cancelled"],
    "failure_types": sorted(set(failures["error_type"])),
    "failure_positions": [int(p) for p in failures["position"]],
    "messages": sorted({str(v) for v in results if isinstance(v, Cancelled)}),
}))
"""


def test_interrupt_keeps_partial_results_and_counts_in_flight_as_cancelled() -> None:
    """A real SIGINT during a map: done items kept, running ones cancelled in stats and failures."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_MAP], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["raised"] is True
    assert report["n"] == 100
    done = report["done"]
    assert 4 <= len(done) <= 96, report  # 4 workers x 0.1 s items, interrupted at 0.55 s
    assert done == [2 * i for i in range(len(done))]  # in input order, nothing lost in between
    assert 1 <= report["cancelled_stat"] <= 4, report
    assert report["failure_types"] == ["Cancelled"]
    assert len(report["failure_positions"]) == report["cancelled_stat"]
    assert all(p >= len(done) for p in report["failure_positions"])
    assert report["messages"] == [
        "slow #1: interrupted before this item started",
        "slow #1: interrupted while this item ran",
    ]


_IPYTHON_INTERRUPT = """
import os, signal, threading
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance(colors="NoColor")
shell.run_cell('''
import os, signal, threading, time
from opero import opmap

@opmap(workers=2, progress=False)
def slow(x):
    time.sleep(0.1)
    return x

threading.Timer(0.35, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
results2 = slow(list(range(50)))
''')
print("PARTIAL", sum(1 for v in shell.user_ns["slow"].last_results() if isinstance(v, int)))
"""


def test_interrupt_traceback_in_ipython_shows_no_opero_frames() -> None:
    """IPython's traceback of an interrupted map names the user's cell, not opero's modules."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _IPYTHON_INTERRUPT], capture_output=True, text=True, timeout=60, check=True
    )
    text = out.stdout + out.stderr
    assert "KeyboardInterrupt" in text, text
    assert "opero/" not in text and "_map.py" not in text and "executors" not in text, text
    partial = int(text.split("PARTIAL", 1)[1].split()[0])
    assert partial >= 2, text


_INTERRUPTED_ASYNC_MAP = """
import asyncio, json, os, signal, threading
from opero import Cancelled, opmap

@opmap(workers=4, progress=False)
async def slow(x):
    await asyncio.sleep(0.1)
    return x

threading.Timer(0.55, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    asyncio.run(slow(list(range(100))))
except KeyboardInterrupt:
    pass
results = slow.last_results()
done = [v for v in results if not isinstance(v, Cancelled)]
print(json.dumps([len(results), done, slow.stats["cancelled"], len(slow.failures())]))
"""


def test_interrupt_of_an_awaited_map_keeps_partial_results() -> None:
    """asyncio.run interrupted by SIGINT: the awaited map's partial results stay reachable."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_ASYNC_MAP], capture_output=True, text=True, timeout=60, check=True
    )
    n, done, cancelled, failures = json.loads(out.stdout.strip().splitlines()[-1])
    assert n == 100 and 4 <= len(done) <= 96, out.stdout
    assert done == list(range(len(done)))
    assert 1 <= cancelled <= 4 and failures == cancelled, out.stdout


def test_throttled_time_includes_the_wait_under_way() -> None:
    """rate_wait_wall and rate_wait_seconds grow while a call still waits for the limit."""

    @opero(rate_limit=0.5)  # one start every 2 s
    def ping() -> int:
        return 1

    ping()
    waiter = threading.Thread(target=ping)
    waiter.start()
    time.sleep(1.0)
    during = ping.stats.as_dict()
    waiter.join()
    assert during["rate_wait_wall"] >= 0.3, during
    assert during["rate_wait_seconds"] >= 0.3, during
    after = ping.stats.as_dict()
    assert 1.5 <= after["rate_wait_wall"] <= 6.0, after
    assert after["rate_waits"] == 1


def test_latency_is_time_in_the_function_not_the_rate_wait() -> None:
    """With a 2/s limit and 10 ms calls, latency p50 is ~10 ms while waits are reported apart."""

    @opero(rate_limit=2)
    def call() -> int:
        time.sleep(0.01)
        return 1

    for _ in range(4):
        call()
    stats = call.stats.as_dict()
    assert stats["rate_wait_seconds"] >= 1.0, stats
    assert stats["latency_p50"] is not None and stats["latency_p50"] < 0.15, stats
