"""Cancel, pause, resume and retry from the outside: the `cubeqa` CLI, the HTTP API and the Python client, against
real Redis, SQLite and stage worker processes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from jobsystem import service_env, stage_workers, start, stop, wait_until_idle

from tasks.app import app as celery
from tests.conftest import DATA, ROOT, migrated

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(900)]
TOKEN = "control-token-for-tests"


@pytest.fixture(scope="module")
def system(broker_url, tmp_path_factory) -> dict[str, object]:
    """SQLite store, one worker per stage and the API (with a token), shared by this module's tests."""
    work = tmp_path_factory.mktemp("control-system")
    url = f"sqlite:///{work / 'cubeqa.db'}"
    migrated(url).kw["bind"].dispose()
    env = service_env(broker_url, url, COLUMNS="250")
    with stage_workers(broker_url, url, work):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        api = start(["api"], {**env, "CUBEQA_API_PORT": str(port), "CUBEQA_API_TOKEN": TOKEN}, work / "api.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_api(base, api, work / "api.log")
            yield {"env": env, "work": work, "base": base, "broker": broker_url}
        finally:
            stop([api])


def wait_for_api(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
        assert process.poll() is None, log.read_text()
    raise TimeoutError(log.read_text())


def cubeqa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cubeqa", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def questions(count: int, start: int) -> list[str]:
    lines = (DATA / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()[start : start + count]
    return [json.loads(line)["question"] for line in lines]


def test_the_cli_pauses_cancels_a_job_resumes_and_retries_refused_jobs(system, tmp_path) -> None:
    env = system["env"]
    path = tmp_path / "bulk.jsonl"
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions(500, 0)), encoding="utf-8")
    submitted = cubeqa("submit", str(path), "--batch-size", "8", "--min-confidence", "0.9", env=env)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.split("batch ")[1].split(":")[0].strip()

    paused = cubeqa("pause", batch_id[:8], env=env)
    assert paused.returncode == 0, paused.stderr
    assert f"batch {batch_id}:" in paused.stdout and "jobs waiting" in paused.stdout and "is paused" in paused.stdout
    wait_until_idle(system["broker"], celery)
    status = json.loads(cubeqa("status", batch_id, "--json", env=env).stdout)
    assert status["state"] == "paused" and status["counts"]["paused"] > 0 and not status["finished"]
    rows = [json.loads(line) for line in cubeqa("results", batch_id, env=env).stdout.splitlines()]
    held = [row["id"] for row in rows if row["status"] == "paused"]
    assert len(held) == status["counts"]["paused"]

    cancelled = cubeqa("cancel", held[0][:10], env=env)  # a job prefix
    assert cancelled.returncode == 0 and f"job {held[0]}: 1 jobs cancelled" in cancelled.stdout
    resumed = cubeqa("resume", batch_id, env=env)
    assert resumed.returncode == 0 and f"{len(held) - 1} jobs resumed, {len(held) - 1} sent" in resumed.stdout
    assert cubeqa("status", batch_id, "--wait", env=env).returncode == 0
    status = json.loads(cubeqa("status", batch_id, "--json", env=env).stdout)
    assert (status["state"], status["done"], status["failed"], status["cancelled"]) == ("finished", 499, 0, 1)
    refused = status["quality"]["refused"]
    assert refused > 0

    retried = cubeqa("retry", batch_id, "--no-failed", "--refused", env=env)
    assert retried.returncode == 0 and f"{refused} jobs retried, {refused} sent" in retried.stdout
    cubeqa("status", batch_id, "--wait", env=env)
    rows = {row["id"]: row for row in map(json.loads, cubeqa("results", batch_id, env=env).stdout.splitlines())}
    again = [row for row in rows.values() if row["attempts"] == 2]
    assert len(again) == refused and all(row["decoder_path"] == "none" for row in again)  # the same threshold refuses

    late = cubeqa("cancel", batch_id, env=env)
    assert late.returncode == 1 and f"batch {batch_id} is finished: nothing to cancel" in late.stderr
    unknown = cubeqa("pause", "ffffffff", env=env)
    assert unknown.returncode == 1 and "no batch 'ffffffff'" in unknown.stderr


def test_the_api_and_the_client_pause_cancel_resume_and_retry(system) -> None:
    from cubeqa.client import AsyncClient, Client, ClientError

    base = system["base"]
    with Client(base, token=TOKEN) as api:
        accepted = api.submit(questions(400, 500), micro_batch=8)
        paused = api.pause(accepted.batch_id[:8])
        assert (paused.action, paused.batch.id, paused.batch.state) == ("pause", accepted.batch_id, "paused")
        assert httpx.post(f"{base}/v1/batches/{accepted.batch_id}/resume").status_code == 401  # the token is asked
        wait_until_idle(system["broker"], celery)
        held = [row.id for row in api.results(accepted.batch_id) if row.status == "paused"]
        assert held and api.batch(accepted.batch_id).counts["paused"] == len(held)

        one = api.cancel_job(held[0][:10])
        assert (one.action, one.jobs, one.batch.cancelled) == ("cancel", 1, 1)
        resumed = api.resume(accepted.batch_id)
        assert (resumed.jobs, resumed.sent, resumed.batch.state) == (len(held) - 1, len(held) - 1, "running")
        summary = api.wait(accepted.batch_id, poll=0.2, timeout=300)
        assert (summary.state, summary.done, summary.failed, summary.cancelled) == ("finished", 399, 0, 1)
        assert api.retry(accepted.batch_id).jobs == 0  # nothing failed: answered jobs stay as they are
        page = httpx.get(f"{base}/dashboard/batches/{accepted.batch_id}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200 and '<b data-text="q-cancelled">1</b><span>cancelled</span>' in page.text
        with pytest.raises(ClientError) as conflict:
            api.cancel(accepted.batch_id)
        assert conflict.value.status == 409 and "is finished: nothing to cancel" in str(conflict.value.detail)
        missing = httpx.post(f"{base}/v1/batches/ffffffff/cancel", headers={"Authorization": f"Bearer {TOKEN}"})
        assert missing.status_code == 404 and "no batch" in missing.json()["detail"]
        other = api.submit(questions(300, 900), micro_batch=8)

    async def cancel_through_async() -> tuple[int, str, bool]:
        async with AsyncClient(base, token=TOKEN) as client:
            done = await client.cancel(other.batch_id)
            return done.jobs, done.batch.state, (await client.wait(other.batch_id, timeout=60)).finished

    with ThreadPoolExecutor(1) as thread:  # its own event loop: an earlier test (Playwright) may leave one running here
        jobs, state, finished = thread.submit(asyncio.run, cancel_through_async()).result()
    assert jobs > 0 and state == "cancelled" and finished
