"""Fixtures for the browser tests: Debian's Chromium via Playwright, Voila and JupyterLab.

Chromium with fixed flags, every request that does not go to 127.0.0.1 aborted, servers bound
to 127.0.0.1 with fresh Jupyter config/runtime dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("OPERO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
BROWSER_ARTIFACTS = REPO / "artifacts" / "browser"
DEMO_NOTEBOOK = REPO / "notebooks" / "dashboard_demo.ipynb"


def _require(condition: bool, reason: str) -> None:
    from tests.conftest import require

    require(condition, reason)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200, failing early when ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


def _jupyter_env(root: Path) -> dict[str, str]:
    """Fresh Jupyter config/runtime/settings dirs, and this checkout on the kernels' path."""
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ):
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    labconfig = root / "config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["OPERO_CACHE_DIR"] = str(root / "opero-cache")
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots are kept (printed so CI can collect them)."""
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser artefacts (screenshots): {BROWSER_ARTIFACTS}")
    return BROWSER_ARTIFACTS


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright."""
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed")
        raise
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _loopback_only(route: Any) -> None:
    url: str = route.request.url
    if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh page whose requests can only reach 127.0.0.1."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", _loopback_only)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _serve(
    cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, ready: str, timeout: float, url: str
) -> Iterator[str]:
    """Start a notebook server, wait until ``ready`` answers, yield ``url``, stop it by PID."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_http(ready, timeout, proc)
            yield url
        finally:
            _stop(proc)


@pytest.fixture
def voila_url(tmp_path: Path) -> Iterator[str]:
    """Voila serving the demo notebook on 127.0.0.1; yields its URL."""
    voila = Path(sys.executable).with_name("voila")
    _require(voila.exists(), "voila is not installed")
    work = tmp_path / "voila"
    work.mkdir()
    notebook = Path(shutil.copy(DEMO_NOTEBOOK, work))
    port = free_port()
    yield from _serve(
        [
            str(voila),
            str(notebook),
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            f"--port={port}",
            "--Voila.port_retries=0",
        ],
        cwd=work,
        env=_jupyter_env(tmp_path / "jupyter"),
        log=work / "voila.log",
        ready=f"http://127.0.0.1:{port}/voila/static/voila.js",
        timeout=60,
        url=f"http://127.0.0.1:{port}/",
    )


class Lab:
    """A running JupyterLab: its base URL, its root folder and the demo notebook's URL."""

    def __init__(self, base: str, root: Path) -> None:
        self.base = base
        self.root = root
        self.url = f"{base}/lab/tree/{DEMO_NOTEBOOK.name}?reset"


@pytest.fixture
def lab_url(tmp_path: Path) -> Iterator[str]:
    """JupyterLab serving a copy of the notebooks on 127.0.0.1; yields the demo notebook's URL."""
    for lab in _lab(tmp_path, theme=None):
        yield lab.url


@pytest.fixture
def light_lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab in its default (light) theme; write more notebooks into ``lab.root``."""
    yield from _lab(tmp_path, theme=None)


@pytest.fixture
def dark_lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab in its dark theme ("JupyterLab Dark"), serving a copy of the demo notebook."""
    yield from _lab(tmp_path, theme="JupyterLab Dark")


def _lab(tmp_path: Path, theme: str | None) -> Iterator[Lab]:
    jupyter = Path(sys.executable).with_name("jupyter")
    _require(jupyter.exists(), "jupyter is not installed")
    root = tmp_path / "lab-root"
    root.mkdir()
    shutil.copy(DEMO_NOTEBOOK, root)
    port = free_port()
    env = _jupyter_env(tmp_path / "jupyter")
    if theme is not None:
        themes = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
        themes.mkdir(parents=True, exist_ok=True)
        (themes / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    for base in _serve(
        [
            str(jupyter),
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
        ],
        cwd=root,
        env=env,
        log=tmp_path / "lab.log",
        ready=f"http://127.0.0.1:{port}/api",
        timeout=90,
        url=f"http://127.0.0.1:{port}",
    ):
        yield Lab(base, root)
