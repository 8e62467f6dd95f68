"""Write notebooks 01-03 from the cells below, with clean outputs: ``python tools/build_notebooks.py``.

The notebooks are generated so they stay consistent (same kernel metadata, no outputs, no
execution counts) and reviewable as plain Python. Edit the cells here, then rebuild.
They run against the loopback demo API (``opero.demo.DemoServer``), never the internet.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from pushback_notebook import PUSHBACK  # tools/ is on the path: this script's own folder

#: where the notebooks live (this helper sits outside them, out of Binder users' view)
HERE = Path(__file__).resolve().parents[1] / "notebooks"

QUICKSTART = [
    (
        "md",
        """# opero quickstart

opero makes calls to slow, flaky, rate-limited things resilient and parallel:

* `@opero` — one call with retries, fallback arguments, a timeout, a cache and a rate limit;
* `@opmap` — the same, mapped over many items in parallel; a failed item keeps its exception
  in the result list instead of stopping the run.

This notebook talks to a small demo API that runs inside this kernel on 127.0.0.1 — nothing
goes to the internet. About 30% of its items fail the first time they are asked for.""",
    ),
    (
        "code",
        """from opero.demo import DemoServer

api = DemoServer(fail_rate=0.3).start()
api.url""",
    ),
    ("md", "## One resilient call\n\n`urllib` raises `HTTPError` on a 500; opero retries it."),
    (
        "code",
        """import json
import urllib.request

from opero import opero


@opero(retries=3, min_delay=0.05)
def get_item(item_id: int) -> dict:
    with urllib.request.urlopen(f"{api.url}/item/{item_id}") as response:
        return json.load(response)


item = get_item(3)
print("item 3:", item["name"], "value", item["value"], "arrived on attempt", item["attempt"])
get_item.stats""",
    ),
    (
        "md",
        """## Many calls in parallel

`@opmap` runs the function over many items with 16 threads and one progress bar. Every
item still gets retries; the result list has one entry per item, in input order.""",
    ),
    (
        "code",
        """from opero import opmap


@opmap(mode="thread", workers=16, retries=3, min_delay=0.05, cache=True)
def get_value(item_id: int) -> int:
    with urllib.request.urlopen(f"{api.url}/item/{item_id}") as response:
        return json.load(response)["value"]


values = get_value(range(100))
failed = [v for v in values if isinstance(v, Exception)]
print(f"ok: {len(values) - len(failed)} failed: {len(failed)} retries: {get_value.stats.retries}")""",
    ),
    ("md", "## Cached the second time\n\nThe same 100 items again: all from the memory cache."),
    (
        "code",
        """import time

started = time.perf_counter()
again = get_value(range(100))
print(f"same: {again == values} cache hits: {get_value.stats.cache_hits} "
      f"in {time.perf_counter() - started:.3f} s")""",
    ),
    (
        "md",
        """## A bad item does not stop the run

Item ids that are not numbers make the function raise `ValueError`. Only the errors you
name in `retry_on` are retried; the others come back as themselves, in their slot.""",
    ),
    (
        "code",
        """@opmap(retries=2, min_delay=0.01, retry_on=urllib.error.HTTPError, progress=False)
def checked_value(item_id: str) -> int:
    number = int(item_id)  # ValueError for "oops"
    with urllib.request.urlopen(f"{api.url}/item/{number}") as response:
        return json.load(response)["value"]


mixed = checked_value(["1", "oops", "2"])
print([type(r).__name__ for r in mixed])""",
    ),
    ("md", "## Everything opero did\n\n`opero.stats()` is a DataFrame with a row per decorated function."),
    (
        "code",
        """import opero

opero.stats()[["calls", "successes", "failures", "attempts", "retries", "cache_hits"]]""",
    ),
    ("code", "api.stop()"),
]

SCRAPING = [
    (
        "md",
        """# Scraping with fallbacks and rate limits

Three things that go wrong when you collect data from a web API, and the opero option
for each:

| problem | option |
|---|---|
| a client is blocked (403) or a key is revoked (401) | `arg_fallback`: try the next user agent / key |
| the API answers 429 above N requests per second | `rate_limit`: space every attempt, retries included |
| pages fail now and then | `retries` with backoff |

The demo API runs in this kernel on 127.0.0.1.""",
    ),
    (
        "code",
        """from opero.demo import DemoServer

api = DemoServer(rate_limit=20).start()  # /limited/<id> allows 20 requests per second
api.url""",
    ),
    (
        "md",
        """## Fallback user agents (async)

`/html/<id>` refuses user agents that contain "OperoBot". On candidate *i* the function
receives `user_agent[i:]`, so `user_agent[0]` is the one in use. In a notebook you can
`await` an async opmap directly.""",
    ),
    (
        "code",
        """import re

import aiohttp

from opero import opmap

AGENTS = ["Mozilla/5.0 (compatible; OperoBot/1.0)", "Mozilla/5.0 (X11; Linux x86_64)"]


@opmap(mode="async", workers=10, retries=1, min_delay=0.01, arg_fallback="user_agent", progress=False)
async def scrape(page: int, user_agent: list[str] = AGENTS) -> dict:
    async with aiohttp.ClientSession(headers={"User-Agent": user_agent[0]}) as session:
        async with session.get(f"{api.url}/html/{page}") as response:
            response.raise_for_status()  # 403 for OperoBot -> next agent
            html = await response.text()
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    return {"page": page, "title": title, "agent": user_agent[0]}


pages = await scrape(range(20))
print("pages:", len(pages), "first:", pages[0]["title"], "via", pages[0]["agent"])
# Sticky candidates: once OperoBot got its 403, later calls start from the healthy agent,
# so at most one fallback per call that was already in flight (10 workers).
print("fallbacks at most one per worker:", scrape.stats.fallbacks <= 10)""",
    ),
    (
        "md",
        """## Fallback API keys

The same idea for keys: `key-revoked` gets a 401, `key-good` works.""",
    ),
    (
        "code",
        """import requests


@opmap(mode="thread", workers=8, retries=0, arg_fallback="api_key", progress=False)
def secure(item_id: int, api_key: list[str]) -> str:
    response = requests.get(f"{api.url}/secure/{item_id}",
                            headers={"Authorization": f"Bearer {api_key[0]}"}, timeout=10)
    response.raise_for_status()
    return response.json()["key"]


keys_used = secure(range(10), api_key=["key-revoked", "key-good"])
print("keys used:", set(keys_used))""",
    ),
    (
        "md",
        """## Rate limits

Without a limit, 16 threads overrun the API's 20 requests/s and get 429s (which opero then
retries, making more requests). With `rate_limit=15`, every attempt waits its turn and the
API never says no.""",
    ),
    (
        "code",
        """def limited_page(item_id: int) -> int:
    response = requests.get(f"{api.url}/limited/{item_id}", timeout=10)
    response.raise_for_status()
    return response.json()["value"]


options = dict(mode="thread", workers=16, retries=5, min_delay=0.2, progress=False)
too_fast = opmap(**options)(limited_page)
polite = opmap(**options, rate_limit=15)(limited_page)

api.reset()
too_fast(range(40))
print("without rate_limit: 429s =", api.stats["rate_limited"])

api.reset()
results = polite(range(40))
print("with rate_limit=15: 429s =", api.stats["rate_limited"],
      "ok =", sum(not isinstance(r, Exception) for r in results))""",
    ),
    ("code", "api.stop()"),
]

ENRICHMENT = [
    (
        "md",
        """# DataFrame enrichment: results and errors in new columns

`df.pipe(fn, "column")` calls an `@opmap` function once per row and returns a new frame
with two extra columns: `<name>` (the result) and `<name>_error` (None, or the exception
that row ended with). The input frame is not modified, and one bad row does not stop the
others. Here we geocode addresses against the demo API on 127.0.0.1.""",
    ),
    (
        "code",
        """import pandas as pd

from opero.demo import DemoServer

api = DemoServer(fail_rate=0.3).start()

df = pd.DataFrame(
    {
        "customer": ["ada", "bob", "cy", "dee", "eve"],
        "address": ["1 Main St", "22 High St", "Nowhere Lane", "5 Park Ave", "9 Elm Rd"],
    },
    index=[10, 11, 12, 13, 14],
)
df""",
    ),
    (
        "code",
        """import requests

from opero import opmap


def permanent(error: Exception) -> bool:
    \"\"\"A 404 will not go away: do not retry it.\"\"\"
    return not (isinstance(error, requests.HTTPError) and error.response.status_code == 404)


@opmap(workers=8, retries=2, min_delay=0.05, retry_on=permanent, cache=True, progress=False)
def geocode(address: str) -> dict:
    response = requests.get(f"{api.url}/geocode", params={"address": address}, timeout=10)
    response.raise_for_status()  # 500 now and then (retried), 404 for "Nowhere"
    data = response.json()
    return {"lat": data["lat"], "lon": data["lon"]}


enriched = df.pipe(geocode, "address")
enriched""",
    ),
    (
        "code",
        """errors = enriched["geocode_error"].dropna()
print("rows:", len(enriched), "failed:", len(errors), "retries:", geocode.stats.retries)
print("failed row:", errors.index[0], type(errors.iloc[0]).__name__)
print("input untouched:", list(df.columns))""",
    ),
    (
        "md",
        """## Spread dict results over columns

`expand=True` turns the dict of each result into `geocode.lat` and `geocode.lon` columns.
The calls are cached, so this costs no request.""",
    ),
    (
        "code",
        """wide = df.pipe(geocode, "address", expand=True)
print(list(wide.columns))
wide""",
    ),
    ("md", "## A Series works too\n\n`geocode(series)` returns a Series on the same index."),
    (
        "code",
        """series = geocode(df["address"])
print(series.name, list(series.index))""",
    ),
    (
        "md",
        """## Each distinct value once

After a `sort_values` or a join, duplicates sit side by side. With `cache=True`, opmap sends
each distinct value once, even while the first call for it is still running: the duplicates
wait for its answer instead of calling the API too. 2,000 rows of 100 addresses, sorted,
cost 100 requests (a second demo server without flaky answers counts them).""",
    ),
    (
        "code",
        """clean = DemoServer(fail_rate=0.0).start()

big = pd.DataFrame({"address": sorted(f"{i % 100} Main St" for i in range(2000))})


@opmap(workers=16, cache=True, progress=False)
def locate(address: str) -> dict:
    response = requests.get(f"{clean.url}/geocode", params={"address": address}, timeout=10)
    response.raise_for_status()
    return response.json()


located = big.pipe(locate, "address")
print("rows:", len(located), "distinct:", big["address"].nunique(), "requests:", clean.stats["requests"])""",
    ),
    (
        "md",
        """## Batch APIs: many rows per request

Embedding and bulk-lookup APIs take a list per request. With `batch_size=N` the function
receives a list of up to N values and returns a list of as many results; opero keeps one
result per row, caches per row, and retries per request. A request that keeps failing is
split in halves until the bad row is alone, so one over-long text fails by itself while
its batch-mates get their vectors. (The demo API echoes the texts back; the vector is made
from the echo, and texts over 40 characters are refused.)""",
    ),
    (
        "code",
        """requests_sent = []


@opmap(batch_size=50, retries=0, progress=False)
def embed(texts: list[str]) -> list[list[float]]:
    requests_sent.append(len(texts))
    if any(len(t) > 40 for t in texts):
        raise ValueError("text too long")
    echoed = requests.post(f"{clean.url}/embed", json=texts, timeout=10).json()["json"]
    return [[float(len(t)), float(t.count(" "))] for t in echoed]


docs = pd.DataFrame({"text": [f"document number {i}" for i in range(1000)]})
docs.loc[137, "text"] = "a very long document " * 5
embedded = docs.pipe(embed, "text")
print("rows:", len(embedded), "vectors:", embedded["embed_error"].isna().sum(), "failed rows:", list(embedded.index[embedded["embed_error"].notna()]))
print("requests:", len(requests_sent), "first batch:", requests_sent[0])""",
    ),
    (
        "md",
        """## Rerun only what failed

Without retries, the flaky demo API fails about 30% of the first requests. Instead of
running the whole frame again, `resume=True` on the earlier output reruns only the rows
whose error cell is set and keeps every other row as it was.""",
    ),
    (
        "code",
        """calls = []


@opmap(workers=8, retries=0, progress=False)
def geocode_once(address: str) -> dict:
    calls.append(address)
    response = requests.get(f"{api.url}/geocode", params={"address": address}, timeout=10)
    response.raise_for_status()
    return response.json()


streets = pd.DataFrame({"address": [f"{i} Station Rd" for i in range(200)]})
first = streets.pipe(geocode_once, "address")
failed = first["geocode_once_error"].notna()
calls.clear()
second = first.pipe(geocode_once, "address", resume=True)
print("rerun only the failed rows:", len(calls) == failed.sum() > 0)
print("failed after resume:", second["geocode_once_error"].notna().sum())""",
    ),
    ("code", "clean.stop()\napi.stop()"),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_scraping_fallbacks_rate_limits.ipynb": SCRAPING,
    "03_dataframe_enrichment.ipynb": ENRICHMENT,
    "05_pushback.ipynb": PUSHBACK,
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with no outputs, for the python3 kernel."""
    nb = new_notebook(
        cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells],
        metadata={
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: rebuilding changes nothing
    return nb


def main() -> None:
    """Write every notebook next to this file."""
    for name, cells in NOTEBOOKS.items():
        nb = build(cells)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
