"""Run the opero demo API in the foreground: ``python -m opero.demo [--port N]``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from opero.demo._server import DemoServer

DEFAULT_PORT = 8765

_ENDPOINTS = (
    "GET  /health",
    "GET  /item/<id>             (first attempt fails for ~fail_rate of ids)",
    "GET  /slow?delay=0.2",
    "GET  /flaky?p=0.5",
    "GET  /status/<code>",
    "GET  /limited/<id>          (429 + Retry-After above --rate-limit req/s)",
    "GET  /secure/<id>           (Authorization: Bearer key-good | key-backup)",
    "GET  /geocode?address=...",
    "GET  /user-agent",
    "GET  /html/<id>             (403 for User-Agent containing OperoBot)",
    "GET  /delay/<n>",
    "GET  /users/<id>[/preferences]",
    "POST /data, POST /<anything> (echo)",
)


def _parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m opero.demo", description="Serve the opero demo API on 127.0.0.1 until Ctrl-C."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free port)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.2,
        help="fraction of /item ids whose first attempt fails (default 0.2)",
    )
    parser.add_argument(
        "--rate-limit", type=float, default=5.0, help="requests/s allowed on /limited before 429 (default 5)"
    )
    parser.add_argument(
        "--limit-all",
        action="store_true",
        help="apply --rate-limit to every endpoint (429 + Retry-After above it), not only /limited",
    )
    parser.add_argument(
        "--outage",
        type=float,
        nargs=2,
        metavar=("START", "SECONDS"),
        help="be down (503) for SECONDS, beginning START seconds after start-up",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="extra seconds slept before every response (default 0)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the demo server, print its URL and serve until interrupted.

    Args:
        argv: Command-line arguments without the program name (default:
            ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    args = _parser().parse_args(argv)
    try:
        server = DemoServer(
            port=args.port,
            seed=args.seed,
            fail_rate=args.fail_rate,
            rate_limit=args.rate_limit,
            latency=args.latency,
            limit_all=args.limit_all,
        ).start()
        if args.outage:
            server.outage(args.outage[1], start=args.outage[0])
    except (OSError, ValueError) as exc:
        print(f"opero.demo: cannot start server: {exc}", file=sys.stderr)
        return 1
    print(f"opero demo server running at {server.url}", flush=True)
    for line in _ENDPOINTS:
        print(f"  {line}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("opero demo server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
