"""binder/ holds what Binder needs to open the notebooks; checked without Docker (TESTING.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"


def requirement_lines() -> list[str]:
    """binder/requirements.txt without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in (BINDER / "requirements.txt").read_text().splitlines())
    return [line for line in lines if line]


def test_runtime_pins_python_311() -> None:
    """runtime.txt asks Binder for Python 3.11."""
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_requirements_install_opero_from_the_repo_with_notebook_extras() -> None:
    """The requirements install this checkout with the notebook and pandas extras."""
    lines = requirement_lines()
    local = [line for line in lines if line.removeprefix("-e ").startswith(".")]
    assert len(local) == 1
    extras = local[0].removeprefix("-e ").strip()
    assert extras.startswith(".[") and {"notebook", "pandas"} <= set(extras[2:-1].split(","))
    for line in lines:
        if line not in local:
            Requirement(line)  # raises InvalidRequirement for a malformed line


def test_post_build_is_valid_bash() -> None:
    """postBuild parses with ``bash -n`` and is executable (Binder runs it directly)."""
    post_build = BINDER / "postBuild"
    subprocess.run(["bash", "-n", str(post_build)], check=True)
    assert os.access(post_build, os.X_OK)
    assert post_build.read_text().startswith("#!/usr/bin/env bash")


def test_repo2docker_accepts_the_repo() -> None:
    """``repo2docker --no-build --no-run .`` prints a Dockerfile that installs the requirements."""
    r2d = shutil.which("repo2docker", path=str(Path(sys.executable).parent))
    command = [r2d] if r2d else [sys.executable, "-m", "repo2docker"]
    proc = subprocess.run(
        [*command, "--no-build", "--debug", "--no-run", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dockerfile = proc.stdout
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert "binder/postBuild" in dockerfile
    assert "python=3.11" in proc.stderr  # runtime.txt picked the conda env's Python
    # the whole repo is copied before pip runs, so `-e .` finds pyproject.toml
    copy_repo = dockerfile.index("COPY --chown=0:0 src/ ${REPO_DIR}/")
    assert copy_repo < dockerfile.index('-r "binder/requirements.txt"')


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fresh_venv_installs_requirements_and_runs_post_build(tmp_path: Path) -> None:
    """In a brand-new venv, ``pip install -r binder/requirements.txt`` then postBuild succeed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    post = subprocess.run(
        ["bash", "binder/postBuild"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert post.returncode == 0, post.stdout[-2000:] + post.stderr[-3000:]
    assert "demo API ok at http://127.0.0.1:" in post.stdout
    kernel = venv / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    assert kernel.exists()


def test_requirements_are_pinned() -> None:
    """Every requirement but the repository itself is pinned to one version (==)."""
    lines = requirement_lines()
    others = [line for line in lines if not line.removeprefix("-e ").startswith(".")]
    assert others
    for line in others:
        req = Requirement(line)
        assert [s.operator for s in req.specifier] == ["=="], line


def test_readme_has_a_binder_badge_for_the_notebooks() -> None:
    """The README's top links to Binder, opening the quickstart notebook of this repository."""
    head = (ROOT / "README.md").read_text().splitlines()[:5]
    badge = next(line for line in head if "mybinder.org/badge_logo.svg" in line)
    assert "https://mybinder.org/v2/gh/twardoch/opero/HEAD" in badge
    assert "notebooks/01_quickstart.ipynb" in badge
    assert (ROOT / "notebooks" / "01_quickstart.ipynb").exists()


def test_notebooks_folder_holds_only_notebooks() -> None:
    """Build helpers live outside notebooks/ (users see that folder first in Binder)."""
    stray = [
        p.name
        for p in (ROOT / "notebooks").iterdir()
        if p.suffix != ".ipynb" and p.name != ".ipynb_checkpoints"
    ]
    assert stray == []
    assert (ROOT / "tools" / "build_notebooks.py").exists()
