"""Errors users can catch, backoff through wait strategies, deadlines, wrong calls, recursion."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_tenacity_imported_only_at_the_first_failure() -> None:
    """import opero and successful calls never import tenacity; the first backoff does."""
    code = textwrap.dedent(
        """
        import sys
        import opero
        assert "tenacity" not in sys.modules, "import"
        @opero.opero(retries=2, min_delay=0.001)
        def ok(x):
            return x
        ok(1)
        assert "tenacity" not in sys.modules, "success"
        n = []
        @opero.opero(retries=2, min_delay=0.001)
        def bad():
            n.append(1)
            raise ConnectionError
        try:
            bad()
        except opero.AllFailedError:
            pass
        assert len(n) == 3
        assert "tenacity" in sys.modules, "the built-in backoff is tenacity's wait_exponential"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_deep_recursion_finishes_fast() -> None:
    """depth(5000) on a recursive decorated function raises RecursionError in seconds."""
    code = textwrap.dedent(
        """
        import time
        from opero import opero
        @opero(retries=3, min_delay=0.01)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        t0 = time.perf_counter()
        try:
            depth(5000)
        except RecursionError:
            print("RecursionError", round(time.perf_counter() - t0, 2))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("RecursionError")
