"""Names the seed guides use without defining them, so each seed block runs as written.

tests/test_seeds.py puts this file in front of every block (one script per block). Helpers
that "call an API" call the loopback demo server at $OPERO_DEMO_URL, never the internet.
"""

import asyncio
import collections
import logging
import os
import time
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, Dict, List, Optional

import aiohttp
import psutil
import requests
import structlog
from pythonjsonlogger import jsonlogger

from opero import AllFailedError, configure_logging, opero, opmap

DEMO_URL = os.environ["OPERO_DEMO_URL"]
#: how often each helper below ran, so a block's epilogue can check what was cached
CALLS = collections.Counter()


def expensive_operation(x):
    """Something slow enough to be worth caching."""
    CALLS["expensive_operation"] += 1
    time.sleep(0.01)
    return f"expensive({x!r})"


def process_item(item):
    """One unit of I/O-ish work."""
    CALLS["process_item"] += 1
    time.sleep(0.005)
    return f"processed_{item}"


def process_items(items):
    """A batch of work."""
    return [process_item(item) for item in items]


sample_items = list(range(20))
all_items = list(range(100))


def complex_calculation(item):
    """CPU work."""
    return sum(i * i for i in range(10_000 + int(item)))


async def cpu_intensive_async_operation(item):
    """CPU work behind an await."""
    await asyncio.sleep(0)
    return complex_calculation(item)


def fetch_user_data(user_id):
    """GET /users/<id> from the demo API."""
    CALLS["fetch_user_data"] += 1
    response = requests.get(f"{DEMO_URL}/users/{user_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def fetch_product_data(product_id, category=None):
    """A product record (no API needed)."""
    CALLS["fetch_product_data"] += 1
    return {"id": product_id, "category": category}


def make_api_call(endpoint):
    """GET <endpoint> from the demo API."""
    CALLS["make_api_call"] += 1
    response = requests.get(f"{DEMO_URL}/{endpoint.lstrip('/')}", timeout=10)
    response.raise_for_status()
    return response.json()


class DevelopmentConfig:
    """best-practices.md's load_opero_config() returns it outside production; the guide never shows it."""

    def get_api_config(self):
        return {"retries": 1, "cache": True, "cache_ttl": 60, "rate_limit": 5.0}

    def get_batch_config(self):
        return {"mode": "thread", "workers": 2, "retries": 1, "progress": False}

    def get_database_config(self):
        return {"retries": 1, "cache": False}


# basic-usage.md "Error Handling Best Practices" refers to these.
class SpecificError(Exception):
    """An error the caller knows how to handle."""


@opero(retries=1, min_delay=0.01)
def resilient_function():
    """Always fails: its caller must degrade gracefully."""
    raise ConnectionError("service unavailable")


default_value = {"status": "default"}
logger = logging.getLogger("app")
