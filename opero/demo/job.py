"""The ``make demo`` job: 1,000 resilient API calls, then the same 1,000 from cache.

Run it with ``python -m opero.demo.job``. It starts the loopback demo API in this process
(nothing reaches the internet, no Redis needed) and calls it through one ``@opmap``
function:

* every call first checks its API key on ``/secure/<id>``. The first key in our list has
  been revoked (401), so opero falls back to the next key: ``arg_fallback="api_key"``;
* then it reads ``/item/<id>``. About 20% of items fail with a 500 the first time they are
  asked for; opero retries them: ``retries=3``;
* the API allows 200 requests/s; opero spaces every attempt (first tries, fallbacks and
  retries alike) to stay below that: ``rate_limit=180``;
* successful results are cached in memory: ``cache=True``, so the second run of the
  same 1,000 items makes no request at all.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

import opero
from opero import opmap
from opero.demo import DemoServer

N_ITEMS = 1000
API_KEYS = ["key-revoked", "key-good"]  # the first one was revoked: fallback kicks in
SERVER_RATE_LIMIT = 200.0  # requests/s the demo API accepts
OUR_RATE_LIMIT = 180.0  # stay a little below it

BASE_URL = ""  # set by main() once the demo server runs


def get_json(path: str, key: str) -> Any:
    """GET ``BASE_URL + path`` with a bearer key; HTTP errors raise ``urllib.error.HTTPError``."""
    request = urllib.request.Request(BASE_URL + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@opmap(
    mode="thread",
    workers=16,
    retries=3,
    min_delay=0.01,
    arg_fallback="api_key",
    rate_limit=OUR_RATE_LIMIT,
    cache=True,
    cache_backend="memory",
    progress=True,
)
def fetch_item(item_id: int, api_key: list[str] = API_KEYS) -> dict[str, Any]:
    """Fetch one item with the first API key of ``api_key`` (opero rotates the list)."""
    key = api_key[0]
    get_json(f"/secure/{item_id}", key)  # 401 for a revoked key -> next key
    item = get_json(f"/item/{item_id}", key)  # 500 now and then -> retry
    return {"id": item["id"], "value": item["value"], "key": key}


def _counters() -> dict[str, float]:
    """A snapshot of fetch_item's counters, to report one run's share of them."""
    d = fetch_item.stats.as_dict()
    return {k: d[k] for k in ("retries", "fallbacks", "rate_waits", "rate_wait_seconds", "cache_hits")}


def run_once(label: str, items: list[int]) -> tuple[list[Any], float]:
    """Map fetch_item over ``items`` and print one summary line per counter."""
    before = _counters()
    started = time.perf_counter()
    results = fetch_item(items, api_key=API_KEYS)
    elapsed = time.perf_counter() - started
    after = _counters()
    delta = {k: after[k] - before[k] for k in after}
    failed = [r for r in results if isinstance(r, BaseException)]
    print(f"\n== {label} ==")
    print(f"ok:              {len(results) - len(failed)}")
    print(f"failed:          {len(failed)}")
    print(f"retries:         {delta['retries']:.0f}")
    print(f"fallbacks:       {delta['fallbacks']:.0f}")
    waited = delta["rate_wait_seconds"]
    print(f"rate waits:      {delta['rate_waits']:.0f} ({waited:.1f} s waited, summed over the workers)")
    print(f"cache hits:      {delta['cache_hits']:.0f}")
    print(f"elapsed:         {elapsed:.2f} s")
    for error in failed[:3]:
        print(f"  example failure: {error}")
    return results, elapsed


def main(n_items: int = N_ITEMS) -> int:
    """Run the demo job and return a process exit code."""
    global BASE_URL
    items = list(range(n_items))
    api = DemoServer(fail_rate=0.2, rate_limit=SERVER_RATE_LIMIT, valid_keys=("key-good", "key-backup"))
    with api as server:
        BASE_URL = server.url
        print(f"demo API at {server.url}: {n_items} items, keys {API_KEYS}, {OUR_RATE_LIMIT:g} calls/s")
        first, cold = run_once("run 1: through the API", items)
        second, warm = run_once("run 2: the same items again (cache)", items)
        requests_made = server.stats["requests"]

    print(f"\nHTTP requests made: {requests_made}")
    print(f"same results both runs: {first == second}")
    print(f"cache speed-up: {cold / max(warm, 1e-9):.0f}x")
    print("\nopero.stats():")
    table = opero.stats()
    columns = ["calls", "successes", "failures", "attempts", "retries", "fallbacks", "cache_hits"]
    columns += ["rate_waits", "rate_wait_seconds", "latency_p50"]
    print(table[[c for c in columns if c in table.columns]].to_string())
    return 0 if first == second else 1


if __name__ == "__main__":
    sys.exit(main())
