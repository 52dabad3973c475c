"""Faults mid-bulk: each scenario of bench/reliability.py (500 jobs in flight, private Redis and
PostgreSQL, real worker and reconciler processes) must end with every accepted job answered exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = 500
POISONED = 5
SCENARIOS = [
    "no fault",
    "SIGKILL encode worker",
    "SIGKILL cube worker",
    "SIGKILL decode worker",
    "SIGKILL rerank worker",
    "SIGTERM encode worker",
    "Redis restarted empty",
    "PostgreSQL restarted",
    "poisoned jobs",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Runs every scenario once (one rig, about nine minutes on 2 cores); rows by scenario name."""
    out = tmp_path_factory.mktemp("chaos")
    args = [sys.executable, str(ROOT / "bench" / "reliability.py"), "--jobs", str(JOBS), "--json", str(out / "rows.json")]
    for name in SCENARIOS:
        args += ["--scenario", name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    if not (out / "rows.json").is_file():
        pytest.fail(f"bench/reliability.py wrote no rows (exit {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    return {row["scenario"]: row for row in json.loads((out / "rows.json").read_text())}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_accepted_job_is_answered_exactly_once(rows: dict[str, dict], scenario: str) -> None:
    row = rows[scenario]
    poisoned = POISONED if scenario == "poisoned jobs" else 0
    assert row["submitted"] == JOBS
    assert (row["lost"], row["duplicated"]) == (0, 0), row
    assert row["counters_exact"], row
    assert (row["done"], row["failed_as_expected"]) == (JOBS - poisoned, poisoned), row
