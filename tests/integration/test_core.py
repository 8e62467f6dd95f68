"""One call of a decorated function, the part that needs another process (see tests/unit/test_core.py)."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys

from tests.shared.core import Driver


def test_decorated_function_pickles_by_value(driver: Driver) -> None:
    """A decorated function travels by value (cloudpickle) to another process and still works there."""
    script = (
        "import sys, cloudpickle\n"
        "from opero import opero\n"
        "CALLS = []\n"
        "@opero(retries=2, min_delay=0.001, cache=True, rate_limit=1000)\n"
        f"{'async def' if driver.is_async else 'def'} f(x):\n"
        "    CALLS.append(x)\n"
        "    return x * 3\n"
        "sys.stdout.buffer.write(cloudpickle.dumps(f))\n"
    )
    blob = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    g = pickle.loads(blob)
    assert inspect.iscoroutinefunction(g) is driver.is_async
    assert [driver.call(g, 2), driver.call(g, 2), driver.call(g, 3)] == [6, 6, 9]
    assert g.__wrapped__.__globals__["CALLS"] == [2, 3]  # the second g(2) was a cache hit
