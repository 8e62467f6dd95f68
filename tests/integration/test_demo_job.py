"""``make demo``: the main job runs end to end and reports the counts it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from opero.demo import first_attempt_fails

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 1000
#: items whose first /item request fails with a 500 (the demo server is deterministic)
N_FLAKY = sum(first_attempt_fails(str(i), seed=0, fail_rate=0.2) for i in range(N_ITEMS))


def _section(output: str, title: str) -> dict[str, float]:
    """The ``name: number`` lines of one ``== title ==`` block of the job's output."""
    block = output.split(f"== {title}")[1].split("\n\n")[0]
    return {
        m["name"]: float(m["value"])
        for m in re.finditer(r"^(?P<name>[a-z ]+):\s+(?P<value>[\d.]+)", block, re.MULTILINE)
    }


@pytest.fixture(scope="module")
def job_output() -> str:
    """Run ``python -m opero.demo.job`` once, as ``make demo`` does."""
    proc = subprocess.run(
        [sys.executable, "-m", "opero.demo.job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_first_run_succeeds_for_every_item(job_output: str) -> None:
    """Run 1: all 1,000 items succeed despite a revoked key and 20% flaky first answers."""
    run1 = _section(job_output, "run 1")
    assert run1["ok"] == N_ITEMS
    assert run1["failed"] == 0


@pytest.mark.slow
def test_first_run_counts_retries_and_fallbacks(job_output: str) -> None:
    """Each flaky item costs one retry round; the revoked key is tried at most once per worker
    (sticky fallback: later calls start from the good key), so fallbacks are that few."""
    assert 100 < N_FLAKY < 300  # fail_rate=0.2 of 1,000
    run1 = _section(job_output, "run 1")
    assert run1["retries"] == N_FLAKY
    revoked = int(re.search(r"requests with the revoked key: (\d+)", job_output)[1])
    assert 1 <= revoked <= 16  # 16 workers: at most one each (1,186 before sticky candidates)
    assert run1["fallbacks"] == revoked
    assert run1["rate waits"] > N_ITEMS  # 180/s spacing: nearly every attempt waits its turn
    assert run1["cache hits"] == 0


@pytest.mark.slow
def test_second_run_is_served_from_cache(job_output: str) -> None:
    """Run 2: the same 1,000 items are 1,000 cache hits, with no retry, and far faster."""
    run1, run2 = _section(job_output, "run 1"), _section(job_output, "run 2")
    assert run2["ok"] == N_ITEMS
    assert run2["cache hits"] == N_ITEMS
    assert run2["retries"] == run2["fallbacks"] == run2["rate waits"] == 0
    assert run2["elapsed"] < run1["elapsed"] / 10
    assert "same results both runs: True" in job_output


@pytest.mark.slow
def test_job_makes_only_the_requests_it_needs(job_output: str) -> None:
    """2 requests per item (key check, item), 2 more per flaky item, one per revoked-key try,
    none in run 2."""
    made = int(re.search(r"HTTP requests made: (\d+)", job_output)[1])
    revoked = int(re.search(r"requests with the revoked key: (\d+)", job_output)[1])
    assert made == 2 * N_ITEMS + 2 * N_FLAKY + revoked


@pytest.mark.slow
def test_job_prints_the_stats_table(job_output: str) -> None:
    """The opero.stats() table closes the output, with fetch_item's cumulative row."""
    table = job_output.split("opero.stats():")[1]
    assert "fetch_item" in table
    row = next(line for line in table.splitlines() if "fetch_item" in line).split()
    assert row[1:3] == [str(2 * N_ITEMS), str(2 * N_ITEMS)]  # calls, successes over both runs


def _percent(output: str, label: str) -> float:
    """The first percentage on run 5's ``label:`` line, as a fraction."""
    block = output.split("== run 5")[1]
    return float(re.search(rf"^{label}:\s+([\d.]+)%", block, re.MULTILINE)[1]) / 100


@pytest.mark.slow
def test_llm_run_uses_the_token_limit_without_429s(job_output: str) -> None:
    """Run 5: 2,000 prompts answered, >= 90 % of the token limit used, <= 1 % 429s."""
    run5 = _section(job_output, "run 5")
    assert run5["ok"] == 2000
    assert run5["failed"] == 0
    assert _percent(job_output, "token use") >= 0.90
    windows = re.search(r"^per window:\s+(.+)$", job_output.split("== run 5")[1], re.MULTILINE)[1]
    shares = [float(s.rstrip("%")) / 100 for s in windows.split()]
    assert len(shares) >= 3  # the run spans several windows
    assert sum(shares) / len(shares) >= 0.90
    assert max(shares) <= 1.10  # never far over the limit: the server would have said 429
    throttled = int(re.search(r"^429s:\s+(\d+)", job_output.split("== run 5")[1], re.MULTILINE)[1])
    assert throttled <= 0.01 * 2000


@pytest.mark.slow
def test_llm_run_charges_the_real_tokens(job_output: str) -> None:
    """charge() made the budget follow the real usage: fewer tokens used than estimated."""
    m = re.search(r"^tokens used:\s+(\d+) \(estimated (\d+)", job_output.split("== run 5")[1], re.MULTILINE)
    used, estimated = int(m[1]), int(m[2])
    assert 0.5 * estimated < used < estimated
