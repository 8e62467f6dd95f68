"""The peer tools several benchmarks time opero against, built once here.

Each builder imports its peers lazily, so a benchmark that skips a shape never imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def disk_cached(d: str) -> tuple[dict[str, Callable[[int], list[int]]], Any]:
    """The same ``[x] * 10`` function behind opero's disk cache, diskcache and joblib.Memory.

    Every store lives under ``d``. Returns the functions by tool name and the diskcache
    ``Cache``, which the caller closes before ``d`` goes away.
    """
    import diskcache
    import joblib

    import opero

    @opero.opero(cache=True, cache_backend="disk", cache_backend_config={"location": f"{d}/o"})
    def o(x: int) -> list[int]:
        return [x] * 10

    def j(x: int) -> list[int]:
        return [x] * 10

    jm = joblib.Memory(f"{d}/j", verbose=0).cache(j)
    dc = diskcache.Cache(f"{d}/d")

    @dc.memoize()
    def dk(x: int) -> list[int]:
        return [x] * 10

    return {"opero": o, "diskcache": dk, "joblib.Memory": jm}, dc


def retry_tools() -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Awaitable[Any]]]]:
    """A do-nothing call (sync, then async) behind each retry tool, up to 4 attempts each."""
    import stamina
    import tenacity
    from pyresilience import RetryConfig, resilient

    from opero import opero

    stamina.instrumentation.set_on_retry_hooks([])  # stamina logs retries; time the retry only

    def work() -> int:
        return 1

    async def awork() -> int:
        return 1

    def plain(f: Callable[[], int]) -> Callable[[], int]:
        def w() -> int:
            try:
                return f()
            except Exception:
                return f()

        return w

    sync = {
        "opero": opero(retries=3)(work),
        "pyresilience": resilient(retry=RetryConfig(max_attempts=4))(work),
        "tenacity": tenacity.retry(stop=tenacity.stop_after_attempt(4))(work),
        "stamina": stamina.retry(on=Exception, attempts=4)(work),
        "plain try/except": plain(work),
    }
    asyn = {
        "opero": opero(retries=3)(awork),
        "pyresilience": resilient(retry=RetryConfig(max_attempts=4))(awork),
        "tenacity": tenacity.retry(stop=tenacity.stop_after_attempt(4))(awork),
        "stamina": stamina.retry(on=Exception, attempts=4)(awork),
    }
    return sync, asyn


def one_failure_tools() -> dict[str, Callable[[], Any]]:
    """Each retry tool around a call that fails every other time: one failure, then success.

    Zero backoff everywhere, so the time is the retry machinery's own.
    """
    import stamina
    import tenacity
    from pyresilience import RetryConfig, resilient

    from opero import opero

    stamina.instrumentation.set_on_retry_hooks([])  # stamina logs retries; time the retry only

    def make() -> Callable[[], int]:
        state = {"n": 0}

        def work() -> int:
            state["n"] += 1
            if state["n"] % 2:
                raise ConnectionError
            return 1

        return work

    return {
        "opero": opero(retries=3, min_delay=0, max_delay=0, jitter=0)(make()),
        "pyresilience": resilient(retry=RetryConfig(max_attempts=4, delay=0, jitter=False))(make()),
        "tenacity": tenacity.retry(stop=tenacity.stop_after_attempt(4))(make()),
        "stamina": stamina.retry(on=ConnectionError, attempts=4, wait_initial=0, wait_max=0, wait_jitter=0)(
            make()
        ),
    }
