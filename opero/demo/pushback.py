"""When the API pushes back: the adaptive rate and the circuit breaker against the demo API.

Used by ``make demo`` (``opero.demo.job``) and ``notebooks/05_pushback.ipynb``; everything
runs against a loopback :class:`~opero.demo.DemoServer`:

* :func:`adaptive_run` — the server accepts ``server_rate`` requests/s on every endpoint and
  answers 429 + ``Retry-After`` above it; opero starts 4x too fast (``rate_limit="auto"``,
  ``rate_start=``) and follows the server down, then holds near its limit;
* :func:`outage_run` — the server is down (503) for a few seconds in the middle of a map;
  the circuit breaker opens after a few failures, lets one probe through per open period,
  closes when the API is back, and every item succeeds.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import TypedDict, TypeVar

from opero import opmap, parts
from opero._telemetry import Event, subscribe
from opero.demo._server import DemoServer

__all__ = ["AdaptiveRun", "OutageRun", "adaptive_run", "outage_run"]

T = TypeVar("T")


class Tally(TypedDict):
    """How many results of a map are values (``ok``) and how many exceptions (``failed``)."""

    ok: int
    failed: int


class AdaptiveRun(Tally):
    """What :func:`adaptive_run` measured."""

    rejected: int
    elapsed: float
    path: list[tuple[float, float]]
    final_rate: float
    events: list[tuple[float, float]]


class OutageRun(Tally):
    """What :func:`outage_run` measured."""

    outage_requests: int
    events: list[tuple[float, str]]
    elapsed: float


def _value(url: str) -> int:
    """The ``value`` of the demo API's JSON answer at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if not isinstance(body, dict):
        raise ValueError(f"{url} answered {body!r}, not an object")
    return int(body["value"])


def _tally(results: Sequence[object]) -> Tally:
    """``ok`` and ``failed``: how many results are values and how many exceptions."""
    failed = sum(isinstance(r, BaseException) for r in results)
    return {"ok": len(results) - failed, "failed": failed}


@contextlib.contextmanager
def _sampling(read: Callable[[], float], t0: float) -> Iterator[list[tuple[float, float]]]:
    """Sample ``read()`` every 0.5 s, as ``[(seconds since t0, value), ...]``, while inside."""
    path: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while True:
            path.append((time.monotonic() - t0, read()))
            if done.wait(0.5):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield path
    finally:
        done.set()
        sampler.join()


@contextlib.contextmanager
def _recording(kind: str, value: Callable[[Event], T], t0: float) -> Iterator[list[tuple[float, T]]]:
    """Collect ``(seconds since t0, value(event))`` of every ``kind`` event while inside."""
    events: list[tuple[float, T]] = []
    stop = subscribe(lambda e: events.append((time.monotonic() - t0, value(e))), kinds=[kind])
    try:
        yield events
    finally:
        stop()


def adaptive_run(
    n_items: int = 1000, server_rate: float = 200.0, start: float = 800.0, workers: int = 16
) -> AdaptiveRun:
    """Map ``n_items`` over a server limiting at ``server_rate``/s, starting at ``start``/s.

    Returns:
        ``ok``, ``failed``, ``rejected`` (429 answers), ``elapsed`` seconds, ``path`` (the
        shared rate every 0.5 s: ``[(seconds, rate), ...]``), ``final_rate`` and ``events``
        (the ``rate`` events: ``[(seconds, rate), ...]``).
    """
    with DemoServer(fail_rate=0.0, rate_limit=server_rate, limit_all=True) as api:
        url = api.url

        @opmap(
            mode="thread",
            workers=workers,
            rate_limit="auto",
            rate_start=start,
            retries=20,
            min_delay=0.01,
            max_delay=1.0,
            progress=False,
        )
        def fetch_limited(item: int) -> int:
            """One item from an API that answers 429 above its limit."""
            return _value(f"{url}/item/{item}")

        limiter = parts(fetch_limited).limiter
        assert limiter is not None  # rate_limit="auto" makes one
        t0 = time.monotonic()
        with (
            _recording("rate", lambda e: float(e.rate or 0), t0) as events,
            _sampling(limiter.current_rate, t0) as path,
        ):
            results = fetch_limited(list(range(n_items)))
        elapsed = time.monotonic() - t0
        rejected = api.stats["rate_limited"]
    return {
        **_tally(results),
        "rejected": rejected,
        "elapsed": elapsed,
        "path": path,
        "final_rate": limiter.current_rate(),
        "events": events,
    }


def outage_run(
    n_items: int = 600,
    down: float = 2.0,
    workers: int = 16,
    *,
    retries: int = 5,
    open_for: float = 0.5,
    down_at: float = 0.5,
) -> OutageRun:
    """Map ``n_items`` while the API is down (503) for ``down`` seconds, with a breaker.

    The outage starts ``down_at`` seconds into the map; the breaker opens after 5 failures
    for ``open_for`` seconds; each item has ``retries`` retries.

    Returns:
        ``ok``, ``failed``, ``outage_requests`` (requests the server answered while down),
        ``events`` (breaker state changes: ``[(seconds, state), ...]``), ``elapsed``.
    """
    with DemoServer(fail_rate=0.0) as api:
        url = api.url

        @opmap(
            mode="thread",
            workers=workers,
            rate_limit=200,
            retries=retries,
            min_delay=0.05,
            circuit_breaker={"failures": 5, "window": 10.0, "open": open_for},
            progress=False,
        )
        def fetch_or_wait(item: int) -> int:
            """One item from an API that goes down for a while."""
            return _value(f"{url}/item/{item}")

        t0 = time.monotonic()
        with _recording("breaker", lambda e: str(e.state), t0) as events:
            api.outage(down, start=down_at)
            results = fetch_or_wait(list(range(n_items)))
        elapsed = time.monotonic() - t0
        during = api.stats["outage"]
    return {**_tally(results), "outage_requests": during, "events": events, "elapsed": elapsed}
