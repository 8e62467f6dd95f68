"""A throwaway nginx with strict ``limit_req`` zones: ``nginx_limiter.url(rate)`` and its log.

Debian's nginx, run as our own master (``nginx -c CONF -p DIR``, ``daemon off``), loopback
only, stopped by PID at the end of the session. Each location ``/r<R>`` is a zone of R requests
per second without burst (``limit_req_status 429``, ``Retry-After: 1`` on the 429); the access
log records ``$msec`` (nginx's millisecond clock), the status and the location.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

#: The zones the server offers, requests per second.
RATES = (20,)


def find_nginx(install: bool = False) -> str | None:
    """Path of ``nginx``; with ``install`` and root, apt-get installs it when missing."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "nginx"],
            env=env,
            check=False,
            capture_output=True,
        )
        path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int, folder: str) -> str:
    zones = "\n".join(f"    limit_req_zone $server_name zone=r{r}:1m rate={r}r/s;" for r in RATES)
    locations = "\n".join(
        # a static file, not `return 200`: `return` answers in the rewrite phase, before
        # limit_req (preaccess phase) would ever see the request
        f"        location = /r{r} {{ limit_req zone=r{r}; default_type text/plain; root {folder}/www; }}"
        for r in RATES
    )
    return f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    log_format timed '$msec $status $uri';
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{zones}
    limit_req_status 429;
    server {{
        listen 127.0.0.1:{port};
        server_name limiter;
        access_log {folder}/access.log timed;
        error_page 429 = @throttled;
        location @throttled {{ add_header Retry-After 1 always; return 429 'throttled'; }}
{locations}
    }}
}}
"""


class NginxLimiter:
    """Our own nginx master on a free loopback port.

    Attributes:
        port: its port.
        dir: its folder (config, logs, pid).
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="opero-nginx-")
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.log = os.path.join(self.dir, "access.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, rate: int) -> str:
        """The location limited to ``rate`` requests per second."""
        return f"http://127.0.0.1:{self.port}/r{rate}"

    def start(self) -> NginxLimiter:
        """Start the master; return once it answers."""
        with open(self.conf, "w") as f:
            f.write(_config(self.port, self.dir))
        # nginx's worker drops root for "nobody": it must be able to read the page
        os.chmod(self.dir, 0o755)
        os.makedirs(os.path.join(self.dir, "www"), mode=0o755, exist_ok=True)
        for rate in RATES:
            with open(os.path.join(self.dir, "www", f"r{rate}"), "w") as f:
                f.write("ok")
        self.proc = subprocess.Popen(
            [self.binary, "-c", self.conf, "-p", self.dir, "-e", os.path.join(self.dir, "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(1.1)  # let every zone's last-request time age past one interval
        return self

    def entries(self) -> list[tuple[float, int, str]]:
        """``(msec, status, uri)`` of every request logged so far."""
        out = []
        with open(self.log) as f:
            for line in f:
                msec, status, uri = line.split()
                out.append((float(msec), int(status), uri))
        return out

    def clear_log(self) -> None:
        """Empty the access log (nginx keeps appending at the new end)."""
        with open(self.log, "w"):
            pass

    def close(self) -> None:
        """Stop the master by PID (it stops its worker) and remove the folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx_limiter() -> Iterator[NginxLimiter]:
    """nginx with strict ``limit_req`` zones (see the module docstring)."""
    from tests.conftest import require

    binary = find_nginx(install=True)
    require(binary is not None, "nginx is not installed (apt-get install nginx)")
    assert binary is not None
    server = NginxLimiter(binary).start()
    try:
        urllib.request.urlopen(server.url(RATES[0]), timeout=5).read()
        yield server
    finally:
        server.close()
