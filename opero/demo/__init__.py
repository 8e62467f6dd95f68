"""Loopback demo/test HTTP API for opero notebooks, docs, tests and ``make demo``.

Example:
    >>> from opero.demo import start_demo_server
    >>> server = start_demo_server(seed=0, rate_limit=5)
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
"""

from opero.demo._endpoints import first_attempt_fails, geocode, item_value
from opero.demo._server import DEFAULT_VALID_KEYS, DemoServer, start_demo_server

__all__ = [
    "DEFAULT_VALID_KEYS",
    "DemoServer",
    "first_attempt_fails",
    "geocode",
    "item_value",
    "start_demo_server",
]
