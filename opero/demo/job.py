"""The ``make demo`` job: 1,000 resilient API calls, then the same 1,000 from cache.

Run it with ``python -m opero.demo.job``. It starts the loopback demo API in this process
(nothing reaches the internet, no Redis needed) and calls it through one ``@opmap``
function:

* every call first checks its API key on ``/secure/<id>``. The first key in our list has
  been revoked (401), so opero falls back to the next key: ``arg_fallback="api_key"``, on a
  refused key only (``fallback_on=key_refused``: a 500 is the server's hiccup, retried with
  the same key); and it remembers (sticky candidates): later calls start from the good key,
  so the revoked one is tried about once per worker, not once per call;
* then it reads ``/item/<id>``. About 20% of items fail with a 500 the first time they are
  asked for; opero retries them: ``retries=3``;
* the API allows 200 requests/s; opero spaces every attempt (first tries, fallbacks and
  retries alike) to stay below that: ``rate_limit=180``;
* successful results are cached in memory: ``cache=True``, so the second run of the
  same 1,000 items makes no request at all.

Then two runs show what opero does when the API pushes back (``opero.demo.pushback``):

* run 3: the API allows 200 requests/s and answers 429 + ``Retry-After`` above it; opero
  starts at 800/s (``rate_limit="auto", rate_start=800``), cuts its shared rate on each 429
  and climbs back while calls succeed: the rate's path is printed;
* run 4: the API is down (503) for 2 s in the middle of a map; the circuit breaker
  (``circuit_breaker={"failures": 5, "open": 0.5}``) opens, lets one probe through every
  0.5 s, closes when the API is back, and every item succeeds.

Run 5 calls a language-model-shaped API (the demo server's ``/v1/chat/completions``, with a
provider's per-minute limits scaled to a 1-s window): 2,000 prompts of mixed length, where
one long document costs as much as dozens of short questions. ``token_limit`` paces the
tokens, ``tokens=`` estimates each call (prompt tokens + ``max_tokens``: an upper bound),
``opero.charge`` reports the real ``usage.total_tokens`` so the budget follows what was
really spent, and ``opero.observe`` reads the ``x-ratelimit-*`` headers. It prints the tokens
served in each window as a share of the limit, and the number of 429 answers.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import urllib.request
from typing import TypedDict

import opero
from opero import opmap
from opero.demo import DemoServer

N_ITEMS = 1000
API_KEYS = ["key-revoked", "key-good"]  # the first one was revoked: fallback kicks in
SERVER_RATE_LIMIT = 200.0  # requests/s the demo API accepts
OUR_RATE_LIMIT = 180.0  # stay a little below it

BASE_URL = ""  # set by main() once the demo server runs


def get_json(path: str, key: str) -> dict[str, object]:
    """GET ``BASE_URL + path`` with a bearer key; HTTP errors raise ``urllib.error.HTTPError``."""
    request = urllib.request.Request(BASE_URL + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    if not isinstance(body, dict):
        raise ValueError(f"{path} answered {body!r}, not an object")
    return body


def key_refused(error: BaseException) -> bool:
    """True for a refused key (HTTP 401 or 403): only these move on to the next key."""
    return getattr(error, "code", None) in (401, 403)


@opmap(
    mode="thread",
    workers=16,
    retries=3,
    min_delay=0.01,
    arg_fallback="api_key",
    fallback_on=key_refused,
    rate_limit=OUR_RATE_LIMIT,
    cache=True,
    cache_backend="memory",
    progress=True,
)
def fetch_item(item_id: int, api_key: list[str] = API_KEYS) -> dict[str, object]:
    """Fetch one item with the first API key of ``api_key`` (opero rotates the list)."""
    key = api_key[0]
    get_json(f"/secure/{item_id}", key)  # 401 for a revoked key -> next key
    item = get_json(f"/item/{item_id}", key)  # 500 now and then -> retry
    return {"id": item["id"], "value": item["value"], "key": key}


def _counters() -> dict[str, float]:
    """A snapshot of fetch_item's counters, to report one run's share of them."""
    d = fetch_item.stats.as_dict()
    return {k: d[k] for k in ("retries", "fallbacks", "rate_waits", "rate_wait_seconds", "cache_hits")}


def run_once(label: str, items: list[int]) -> tuple[list[dict[str, object] | BaseException], float]:
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
        revoked = server.stats["unauthorized"]
        print(f"requests with the revoked key: {revoked} (then every call starts from the good key)")
        second, warm = run_once("run 2: the same items again (cache)", items)
        requests_made = server.stats["requests"]

    print(f"\nHTTP requests made: {requests_made}")
    print(f"same results both runs: {first == second}")
    print(f"cache speed-up: {cold / max(warm, 1e-9):.0f}x")
    print("\nopero.stats():")
    table = opero.stats()
    table = table[table["calls"] > 0]  # the functions that ran so far (run 5's has not yet)
    columns = ["calls", "successes", "failures", "attempts", "retries", "fallbacks", "cache_hits"]
    columns += ["rate_waits", "rate_wait_seconds", "latency_p50"]
    print(table[[c for c in columns if c in table.columns]].to_string())
    pushed_ok = pushback()
    llm_ok = print_llm(llm_run())
    return 0 if first == second and pushed_ok and llm_ok else 1


def pushback() -> bool:
    """Runs 3 and 4: the adaptive rate and the circuit breaker; True when every item succeeded."""
    from opero.demo.pushback import adaptive_run, outage_run

    run = adaptive_run(n_items=1000, server_rate=200.0, start=800.0)
    print("\n== run 3: the API pushes back (429 + Retry-After above 200/s), opero starts at 800/s ==")
    print(f"ok:              {run['ok']}")
    print(f"failed:          {run['failed']}")
    print(f"rejected:        {run['rejected']} (429 answers)")
    print(f"final rate:      {run['final_rate']:.0f} /s")
    print(f"elapsed:         {run['elapsed']:.2f} s")
    print("rate path:       " + " -> ".join(f"{rate:.0f}" for _, rate in run["path"]) + " (every 0.5 s)")
    down = outage_run(n_items=600, down=2.0)
    print("\n== run 4: the API is down (503) for 2 s; circuit breaker failures=5, open=0.5 s ==")
    print(f"ok:              {down['ok']}")
    print(f"failed:          {down['failed']}")
    print(f"outage requests: {down['outage_requests']} (instead of one per attempt of every worker)")
    print(f"elapsed:         {down['elapsed']:.2f} s")
    print("breaker:         " + ", ".join(f"{state} at {t:.2f} s" for t, state in down["events"]))
    return bool(run["failed"] == 0 and down["failed"] == 0)


# -- run 5: a language-model API, paced by tokens ---------------------------------------------

N_PROMPTS = 2000
#: the chat endpoint's limits per window: a provider's "400 RPM, 50,000 TPM", a minute scaled
#: to a second so the run takes seconds; the token limit is the one that binds
LLM_REQUESTS, LLM_TOKENS, LLM_WINDOW = 400, 50000, 1.0
MAX_TOKENS = 100  # the longest answer asked for


def llm_prompts(n: int) -> list[str]:
    """``n`` prompts of mixed length (deterministic): short questions to long documents."""
    rng = random.Random(5)
    return [("word " * rng.choice((10, 40, 100, 300, 800)))[: rng.randint(50, 4000)] for _ in range(n)]


def estimate_tokens(prompt: str) -> int:
    """An upper bound of one call's tokens: prompt tokens (about 4 characters each) + max_tokens."""
    return -(-len(prompt) // 4) + MAX_TOKENS


class Served:
    """When each served answer arrived and how many tokens it used (for the per-window shares)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[float, int]] = []

    def add(self, tokens: int) -> None:
        with self.lock:
            self.log.append((time.monotonic(), tokens))

    def shares(self, limit: float, window: float) -> list[float]:
        """Tokens served in each full window since the first answer, as a share of ``limit``."""
        if not self.log:
            return []
        start = self.log[0][0]
        full = int((self.log[-1][0] - start) // window)
        used = [0.0] * full
        for at, tokens in self.log:
            k = int((at - start) // window)
            if k < full:
                used[k] += tokens
        return [u / limit for u in used]


SERVED = Served()


@opmap(
    mode="thread",
    workers=16,
    rate_limit=f"{LLM_REQUESTS}/s",
    token_limit=f"{LLM_TOKENS}/s",
    tokens=lambda prompt: estimate_tokens(prompt),
    retries=8,
    progress=False,
)
def complete(prompt: str) -> str:
    """One chat completion: observe the rate-limit headers, charge the real token usage."""
    body = {"model": "demo", "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS}
    request = urllib.request.Request(
        BASE_URL + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        opero.observe(response)  # x-ratelimit-remaining-* of 0 would hold the budget
        reply = json.load(response)
    used = int(reply["usage"]["total_tokens"])
    opero.charge(used)  # the estimate was an upper bound: give the difference back
    SERVED.add(used)
    return str(reply["choices"][0]["message"]["content"])


class LlmRun(TypedDict):
    """What :func:`llm_run` measured."""

    ok: int
    failed: int
    estimated: int
    tokens: float
    throttled: float
    requests: float
    token_use: float
    shares: list[float]
    elapsed: float


def llm_run(n_prompts: int = N_PROMPTS) -> LlmRun:
    """Map ``complete`` over ``n_prompts`` prompts against a fresh demo server's chat endpoint."""
    global BASE_URL
    prompts = llm_prompts(n_prompts)
    SERVED.log.clear()
    with DemoServer(llm_requests=LLM_REQUESTS, llm_tokens=LLM_TOKENS, llm_window=LLM_WINDOW) as server:
        BASE_URL = server.url
        started = time.perf_counter()
        results = complete(prompts)
        elapsed = time.perf_counter() - started
        usage = server.chat.usage()
    shares = SERVED.shares(LLM_TOKENS, LLM_WINDOW)
    return {
        "ok": sum(not isinstance(r, BaseException) for r in results),
        "failed": sum(isinstance(r, BaseException) for r in results),
        "estimated": sum(estimate_tokens(p) for p in prompts),
        "tokens": usage["tokens"],
        "throttled": usage["throttled"],
        "requests": usage["accepted"] + usage["throttled"],
        "token_use": usage["token_use"],
        "shares": shares,
        "elapsed": elapsed,
    }


def print_llm(run: LlmRun) -> bool:
    """Print run 5; True when every prompt was answered."""
    print(
        f"\n== run 5: a language-model API, {LLM_REQUESTS} requests and {LLM_TOKENS} tokens "
        f"per {LLM_WINDOW:g} s window (a minute, scaled) =="
    )
    print(f"ok:              {run['ok']}")
    print(f"failed:          {run['failed']}")
    print(f"tokens used:     {run['tokens']:.0f} (estimated {run['estimated']}: charge gave the rest back)")
    print(f"token use:       {run['token_use']:.1%} of the token limit over the run")
    share = min(run["shares"]) if run["shares"] else 0.0
    print(f"lowest window:   {share:.1%} of the token limit")
    print("per window:      " + " ".join(f"{s:.0%}" for s in run["shares"]))
    throttled, requests = run["throttled"], max(1, run["requests"])
    print(f"429s:            {throttled} ({throttled / requests:.2%} of {run['requests']} requests)")
    print(f"elapsed:         {run['elapsed']:.2f} s")
    return bool(run["failed"] == 0)


if __name__ == "__main__":
    sys.exit(main())
