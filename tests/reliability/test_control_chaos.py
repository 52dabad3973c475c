"""A cancel racing a worker SIGKILL and the reconciler (bench/reliability.py's scenario "cancel racing SIGKILL decode
worker": 500 jobs, private Redis and PostgreSQL, real worker and reconciler processes): every other unfinished job is
cancelled, one job per transaction, while the decode worker is killed mid-task and replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = 500
SCENARIO = "cancel racing SIGKILL decode worker"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_cancel_racing_a_sigkill_and_the_reconciler_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = [sys.executable, str(ROOT / "bench" / "reliability.py"), "--jobs", str(JOBS), "--scenario", SCENARIO,
            "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=850)
    if not out.is_file():
        pytest.fail(f"bench/reliability.py wrote no rows (exit {run.returncode}):\n{run.stdout[-4000:]}\n"
                    f"{run.stderr[-4000:]}")
    (row,) = json.loads(out.read_text())
    assert row["hit_running_task"], row  # the worker died holding a micro-batch
    assert row["cancelled"] > 0 and row["done"] + row["cancelled"] == JOBS, row
    assert (row["lost"], row["duplicated"], row["written_after_cancel"]) == (0, 0, 0), row
    assert row["counters_exact"], row
