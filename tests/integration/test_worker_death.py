"""A worker process that dies fails only the item it was running; workers never outlive their parent."""

from __future__ import annotations

import asyncio
import ctypes
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from opero import AllFailedError, WorkerLostError, opmap


def _crash(x: int) -> None:
    if x == 7:
        ctypes.string_at(0)  # a segfault, as a bad C extension gives
    if x == 23:
        os._exit(3)


def _crashy(x: int) -> int:
    time.sleep(0.002)
    _crash(x)
    return x * 2


async def _crashy_async(x: int) -> int:
    await asyncio.sleep(0.01)
    _crash(x)
    await asyncio.sleep(0.01)
    return x * 2


def _lost_error(value: object) -> WorkerLostError:
    """The WorkerLostError a failed item holds (as itself, or inside AllFailedError)."""
    if isinstance(value, AllFailedError):
        assert len(value.errors) == 1
        value = value.errors[0]
    assert isinstance(value, WorkerLostError), repr(value)
    return value


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["process", "async_process"])
def test_dead_worker_fails_only_the_item_it_was_running(mode: Literal["process", "async_process"]) -> None:
    """40 items, item 7 segfaults and item 23 exits: exactly those two fail, the rest succeed."""
    out: list[Any]
    if mode == "async_process":
        afn = opmap(mode=mode, workers=2, retries=0, progress=False)(_crashy_async)

        async def run() -> list[Any]:
            return list(await afn(range(40)))

        out, st = asyncio.run(run()), afn.stats
    else:
        fn = opmap(mode=mode, workers=2, retries=0, progress=False)(_crashy)
        out, st = fn(range(40)), fn.stats
    failed = [i for i, v in enumerate(out) if isinstance(v, BaseException)]
    assert failed == [7, 23], [(i, out[i]) for i in failed]
    assert [out[i] for i in range(40) if i not in (7, 23)] == [2 * i for i in range(40) if i not in (7, 23)]
    assert "SIGSEGV" in str(_lost_error(out[7]))
    assert "exit code 3" in str(_lost_error(out[23]))
    assert (st.calls, st.successes, st.failures) == (40, 38, 2)


# -- workers never outlive their parent --------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


class _Hits(http.server.BaseHTTPRequestHandler):
    """Counts each request (its path names the worker pid) and answers at once."""

    hits: list[tuple[float, int]]

    def do_GET(self) -> None:
        self.hits.append((time.monotonic(), int(self.path.split("/")[1])))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _gone(pid: int) -> bool:
    """Whether process ``pid`` is gone (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _wait_until(check: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP], ids=lambda s: s.name)
def test_workers_stop_within_2s_when_the_parent_is_killed(sig: signal.Signals) -> None:
    """A killed parent's workers are gone within 2 s, call the server no more, and leave no file."""
    from opero.stores.host import folder

    hits: list[tuple[float, int]] = []
    handler = type("Hits", (_Hits,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    script = str(ROOT / "tests/_map_scripts/orphans.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, script, url], env=env, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().split()[0] == b"ready"
        assert _wait_until(lambda: len({pid for _, pid in hits}) == 2, 40)
        workers = {pid for _, pid in hits}
        mine = [n for n in os.listdir(folder()) if f"-{parent.pid}-" in n]
        assert mine, "the map's limiter file is in the host-store folder"
        parent.send_signal(sig)
        parent.wait(10)
        killed = time.monotonic()
        assert _wait_until(lambda: all(_gone(pid) for pid in workers), 2.0), workers
        assert time.monotonic() - killed < 2.1
        time.sleep(0.5)  # a request sent just before the death may still be in the server's queue
        calls = len(hits)
        time.sleep(1.0)
        assert len(hits) == calls  # nothing reached the server after the workers died
        # the next run sweeps what the dead processes left
        sweep = "from opero import opero; f = opero(rate_limit=50)(lambda: 1); assert f() == 1"
        subprocess.run([sys.executable, "-c", sweep], env=env, cwd=ROOT, check=True, timeout=60)
        dead = {parent.pid, *workers}
        left = [n for n in os.listdir(folder()) if any(f"-{pid}-" in n for pid in dead)]
        assert left == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        server.shutdown()
        server.server_close()
