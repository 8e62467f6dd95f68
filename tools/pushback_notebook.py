"""The cells of ``notebooks/05_pushback.ipynb`` (built by ``tools/build_notebooks.py``)."""

from __future__ import annotations

PUSHBACK = [
    (
        "md",
        """# When the API pushes back: an adaptive rate and a circuit breaker

Real APIs say *slow down* (HTTP 429 with `Retry-After`) and sometimes go down for a while
(503). opero listens:

* `rate_limit="auto"` (or `adaptive=True` next to a number) makes the rate limit follow the
  server: it is cut on every 429/503 and climbs back while calls succeed (AIMD), with one
  budget for every thread, process (and machine, with `rate_limit_backend="redis"`);
* `circuit_breaker=True` (or a dict) stops calling an API that keeps failing: after
  `failures` failed attempts within `window` seconds calls fail fast with
  `CircuitOpenError` for `open` seconds, then one *probe* tests the API. In a map, items
  wait for the probe instead of burning their retries.

Everything runs against the demo API inside this kernel, on 127.0.0.1. The dashboard below
updates live while the cells run.""",
    ),
    (
        "code",
        """import json
import threading
import time
import urllib.request

from opero import CircuitOpenError, opero, opmap, parts
from opero.demo import DemoServer

# 100 requests/s on every endpoint; above that: 429 + Retry-After
api = DemoServer(fail_rate=0.0, rate_limit=100, limit_all=True).start()


def get(path):
    with urllib.request.urlopen(api.url + path, timeout=10) as response:
        return json.load(response)


%load_ext opero
%opero dashboard""",
    ),
    (
        "md",
        """## The adaptive rate

We start four times too fast (400/s against a 100/s API). Each 429 cuts the shared rate
(at most once per round of in-flight calls), successes raise it again; opero settles near
what the server accepts. A background thread samples the rate every half second.""",
    ),
    (
        "code",
        """@opmap(mode="thread", workers=16, rate_limit="auto", rate_start=400, retries=20,
       min_delay=0.01, max_delay=1.0, progress=False)
def fetch(item):
    return get(f"/item/{item}")["value"]


limiter = parts(fetch).limiter
path, done = [], threading.Event()


def sample():
    while not done.wait(0.5):
        path.append(round(limiter.current_rate()))


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
started = time.monotonic()
values = fetch(range(800))
done.set()
sampler.join()
failed = sum(isinstance(v, Exception) for v in values)
print("ok:", len(values) - failed, "failed:", failed)
print("429 answers:", api.stats["rate_limited"], f"in {time.monotonic() - started:.1f} s")
print("rate path (every 0.5 s):", " -> ".join(map(str, path)))
print("settled near the server's 100/s:", 60 < limiter.current_rate() < 160)""",
    ),
    (
        "md",
        """## The circuit breaker

Now the API goes down (503) for 2 seconds, half a second into a 600-item map. Five failed
attempts open the breaker; every 0.5 s one probe checks the API; when it answers again the
breaker closes and the waiting items carry on. Every item succeeds, and the server saw a
handful of requests while it was down instead of one per attempt of every worker.""",
    ),
    (
        "code",
        """states = []
from opero._telemetry import subscribe

stop = subscribe(lambda e: states.append(e.state), kinds=["breaker"])
plain = DemoServer(fail_rate=0.0).start()


@opmap(mode="thread", workers=16, rate_limit=200, retries=5, min_delay=0.05,
       circuit_breaker={"failures": 5, "window": 10.0, "open": 0.5}, progress=False)
def fetch_or_wait(item):
    with urllib.request.urlopen(f"{plain.url}/item/{item}", timeout=10) as response:
        return json.load(response)["value"]


plain.outage(2.0, start=0.5)
values = fetch_or_wait(range(600))
stop()
print("all items ok:", all(isinstance(v, int) for v in values))
print("requests while the API was down:", plain.stats["outage"])
print("breaker:", " -> ".join(states))""",
    ),
    (
        "md",
        """Outside a map, an open breaker fails the call at once, without a request, with an
`opero.CircuitOpenError` that says when the next probe may run:""",
    ),
    (
        "code",
        """plain.outage(60.0)


@opero(retries=0, circuit_breaker={"failures": 2, "open": 30.0})
def one(item):
    with urllib.request.urlopen(f"{plain.url}/item/{item}", timeout=10) as response:
        return json.load(response)


for attempt in range(3):
    try:
        one(attempt)
    except CircuitOpenError as exc:
        print("CircuitOpenError: next probe in", round(exc.retry_in), "s")
    except Exception as exc:
        print("failed:", type(exc).__name__)""",
    ),
    ("code", "api.stop()\nplain.stop()"),
]
