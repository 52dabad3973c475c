"""Workers that tell the truth, with real processes: a worker whose stage cannot load exits with the reason and
consumes nothing; `cubeqa health` and /healthz fail for its stage; jobs waiting on its queue show in `status`, the
metrics and `submit --wait`, which names the queue."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from jobsystem import redis_database, service_env, start, stop

from tasks.priority import queue_length
from tests.conftest import ROOT, migrated

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(300)]
WARN = 3  # CUBEQA_QUEUE_WAIT_WARN of these tests, in seconds


def cubeqa(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cubeqa", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, object]:
    """A fresh broker database and SQLite store, and the environment of commands on them."""
    broker = redis_database()
    url = f"sqlite:///{tmp_path / 'cubeqa.db'}"
    migrated(url).kw["bind"].dispose()
    env = service_env(broker, url, CUBEQA_QUEUE_WAIT_WARN=str(WARN), COLUMNS="200")
    yield {"env": env, "broker": broker, "url": url}
    redis.Redis.from_url(broker).flushdb()


def exits(process: subprocess.Popen, log: Path, within: float = 90) -> int:
    try:
        return process.wait(within)
    except subprocess.TimeoutExpired:
        stop([process])
        raise AssertionError(f"the worker did not exit: {log.read_text(errors='replace')[-2000:]}") from None


@pytest.mark.parametrize("args", [
    ["--stage", "encode", "--device", "cuda"],  # this CPU-only torch build sees no CUDA device
    ["--stage", "cube", "--pool", "prefork", "--concurrency", "1"],  # a child fails to load after fork
], ids=["threads-cuda", "prefork-bundle"])
def test_a_worker_whose_stage_cannot_load_exits_with_the_reason(broken, tmp_path: Path, args: list[str]) -> None:
    log = tmp_path / "worker.log"
    env = dict(broken["env"]) if "encode" in args else {**broken["env"], "CUBEQA_BUNDLE_DIR": str(tmp_path / "missing")}
    process = start(["worker", *args], env, log)
    assert exits(process, log) == 1
    text = log.read_text(errors="replace")
    stage = args[1]
    assert f"the {stage} stage cannot load" in text
    assert ("no CUDA device" if stage == "encode" else "does not exist") in text


def test_a_prefork_worker_whose_stage_cannot_load_consumes_nothing(broken, tmp_path: Path) -> None:
    env = broken["env"]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Where is place number {i}?"}) + "\n" for i in range(5)))
    assert cubeqa("submit", str(questions), env=env).returncode == 0  # one message waits on queue encode
    log = tmp_path / "worker.log"
    process = start(["worker", "--stage", "encode", "--pool", "prefork", "--concurrency", "2"],
                    {**env, "CUBEQA_BUNDLE_DIR": str(tmp_path / "missing")}, log)
    assert exits(process, log) == 1 and "the encode stage cannot load" in log.read_text(errors="replace")
    assert queue_length(redis.Redis.from_url(broken["broker"]), "encode") == 1  # refused or handed back, never consumed
    from storage.models import Job

    with migrated(broken["url"])() as session:
        assert {(job.status, job.attempts) for job in session.query(Job)} == {("queued", 0)}


def test_health_status_metrics_and_submit_wait_name_the_queue_nobody_serves(broken, tmp_path: Path) -> None:
    env = broken["env"]
    log = tmp_path / "worker.log"
    process = start(["worker", "--stage", "encode", "--device", "cuda"], env, log)
    assert exits(process, log) == 1

    started = time.monotonic()
    health = cubeqa("health", "--timeout", "5", env=env)
    assert health.returncode == 1 and time.monotonic() - started < 30
    assert "encode  silent" in health.stdout and "no live worker consumed a ping on queue encode" in health.stdout

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Where is place number {i}?"}) + "\n" for i in range(5)))
    with pytest.raises(subprocess.TimeoutExpired) as waited:  # nobody answers: --wait waits, and says why
        cubeqa("submit", str(questions), "--wait", env=env, timeout=WARN + 12)
    said = (waited.value.stdout or b"").decode() if isinstance(waited.value.stdout, bytes) else waited.value.stdout or ""
    assert "5 jobs queued" in said
    assert "no live worker on queue encode for" in said and "(1 messages waiting)" in said
    batch_id = said.split("batch ")[1].split(":")[0].strip()

    status = cubeqa("status", batch_id, env=env)
    assert status.returncode == 0
    note = " ".join(status.stderr.split())
    assert f"5 jobs queued longer than {WARN} s with no worker taking them" in note and "no live worker on queue encode" in note

    from fastapi.testclient import TestClient

    from cubeqa.api import create_app
    from cubeqa.settings import Settings

    api = TestClient(create_app(Settings(database_url=broken["url"], broker_url=broken["broker"], queue_wait_warn=WARN,
                                         bank_root=tmp_path / "banks")))
    metrics = api.get("/metrics").text
    assert "cubeqa_jobs_waiting_too_long 5.0" in metrics and 'cubeqa_stage_workers{stage="encode"} 0.0' in metrics
    assert float(metrics.split("\ncubeqa_oldest_waiting_job_seconds ")[1].split()[0]) >= WARN
    healthz = api.get("/healthz", params={"timeout": 2})
    assert healthz.status_code == 503 and healthz.json()["encode"].startswith("error: no live worker on queue encode")
    assert api.get("/readyz").status_code == 200  # the API itself can still take jobs
