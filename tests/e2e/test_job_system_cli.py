"""The job system from the outside: `cubeqa submit/status/results`, the HTTP API and `cubeqa demo`,
against real Redis, SQLite and stage worker processes."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from jobsystem import service_env, stage_workers, start, stop

from tests.conftest import DATA, ROOT, migrated

pytestmark = [pytest.mark.slow, pytest.mark.services]
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def system(broker_url, tmp_path_factory) -> dict[str, object]:
    """SQLite store and one worker per stage, shared by this module's tests."""
    work = tmp_path_factory.mktemp("system")
    url = f"sqlite:///{work / 'cubeqa.db'}"
    migrated(url).kw["bind"].dispose()
    with stage_workers(broker_url, url, work):
        yield {"env": service_env(broker_url, url, COLUMNS="200"), "work": work, "url": url}


def cubeqa(*args: str, env: dict[str, str], cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cubeqa", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_submit_reports_bad_lines_and_answers_the_good_ones(system, tmp_path) -> None:
    good = [json.loads(line) for line in (DATA / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()[700:730]]
    lines = [json.dumps({"question": r["question"], "reference": r["answer"]}) for r in good]
    lines[3] = '{"question": "   "}'
    lines[10] = "{broken json"
    path = tmp_path / "bulk.jsonl"
    path.write_bytes(("\n".join(lines[:20]) + "\n").encode() + b'{"question": "\xff\xfe"}\n' + ("\n".join(lines[20:]) + "\n").encode())
    # --min-confidence 0: every answer is the bank's sentence, so each job has the end-to-end figures
    run = cubeqa("submit", str(path), "--wait", "--batch-size", "8", "--min-confidence", "0", env=system["env"])
    assert run.returncode == 0, run.stderr
    assert f"{path}:4: 'question' is empty" in run.stderr
    assert f"{path}:11: invalid JSON" in run.stderr
    assert f"{path}:21: not UTF-8" in run.stderr
    assert "28 jobs queued, 3 lines skipped" in run.stdout
    batch_id = run.stdout.split("batch ")[1].split(":")[0].strip()

    status = json.loads(cubeqa("status", batch_id[:8], "--json", env=system["env"]).stdout)  # a prefix names it too
    assert status["id"] == batch_id
    assert (status["done"], status["failed"], status["total"], status["finished"]) == (28, 0, 28, True)
    assert {"cube_cos", "e2e_cos", "decode_fidelity", "echo"} <= set(status["metrics"])

    rows = [json.loads(line) for line in cubeqa("results", batch_id, env=system["env"]).stdout.splitlines()]
    assert [r["line"] for r in rows] == [n for n in range(1, 32) if n not in (4, 11, 21)]
    assert all(r["status"] == "done" and r["answer"] for r in rows)
    table = list(csv.DictReader(io.StringIO(cubeqa("results", batch_id, "--format", "csv", env=system["env"]).stdout)))
    assert [r["answer"] for r in table] == [r["answer"] for r in rows]
    assert float(table[0]["metrics.cube_cos"]) == pytest.approx(rows[0]["metrics"]["cube_cos"])  # one column per metric
    assert float(table[0]["timings_ms.encode"]) == pytest.approx(rows[0]["timings_ms"]["encode"])


def test_resubmitting_a_file_with_its_key_queues_nothing(system, tmp_path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("question\nWhere is Kenya?\nWho built the fort?\n", encoding="utf-8")
    first = cubeqa("submit", str(path), "--key", "file-q-v1", "--wait", env=system["env"])
    second = cubeqa("submit", str(path), "--key", "file-q-v1", env=system["env"])
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    batch_id = first.stdout.split("batch ")[1].split(":")[0].strip()
    assert f"batch {batch_id} already exists for key 'file-q-v1': nothing submitted" in second.stdout.replace("\n", " ")
    assert "warning" not in second.stderr
    other = tmp_path / "other.csv"
    other.write_text("question\nWhat is the capital of kenya?\n", encoding="utf-8")
    third = cubeqa("submit", str(other), "--key", "file-q-v1", env=system["env"])
    assert third.returncode == 0 and "belongs to a batch of 2 jobs" in " ".join(third.stderr.split())


def test_commands_on_an_unmigrated_database_say_what_to_run(system, tmp_path) -> None:
    env = {**system["env"], "CUBEQA_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "Where is Kenya?"}\n', encoding="utf-8")
    run = cubeqa("submit", str(path), env=env)
    assert run.returncode == 1 and "run `cubeqa db upgrade`" in run.stderr
    assert "Traceback" not in run.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_api(system, log: Path, **extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**system["env"], "CUBEQA_API_PORT": str(port), **extra}
    process = start(["api"], env, log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
        assert process.poll() is None, log.read_text()
    raise TimeoutError(log.read_text())


def test_http_api_with_a_token(system, tmp_path) -> None:
    process, base = serve_api(system, tmp_path / "api.log", CUBEQA_API_TOKEN=TOKEN, CUBEQA_MAX_BATCH_ITEMS="50", CUBEQA_MAX_REQUEST_BYTES="20000")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        question = {"question": "Where is kenya located?", "reference": "Kenya is a country in africa."}
        assert httpx.post(f"{base}/v1/jobs", json=question).status_code == 401
        assert httpx.post(f"{base}/v1/jobs", json=question, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/v1/batches/x", headers={"Authorization": "Basic abc"}).status_code == 401

        job = httpx.post(f"{base}/v1/jobs", params={"wait": 30}, json=question, headers=auth, timeout=40)
        body = job.json()
        assert job.status_code == 200 and body["status"] == "done" and body["answer"] and body["decoder_path"] in ("bank", "none")
        assert {"cube_cos", "e2e_cos"} <= set(body["metrics"]) or body["decoder_path"] == "none"
        assert httpx.get(f"{base}/v1/jobs/{body['id']}", headers=auth).json()["answer"] == body["answer"]
        assert httpx.get(f"{base}/v1/jobs/{body['id'][:8]}", headers=auth).json()["id"] == body["id"]  # a prefix names it

        items = [{"question": f"What is question number {i}?"} for i in range(12)]
        accepted = httpx.post(f"{base}/v1/batches", json={"items": items, "key": "api-batch-1"}, headers=auth).json()
        assert accepted["created"] and accepted["jobs"] == len(accepted["job_ids"]) == 12
        again = httpx.post(f"{base}/v1/batches", json={"items": items, "key": "api-batch-1"}, headers=auth).json()
        assert (again["batch_id"], again["created"]) == (accepted["batch_id"], False)
        deadline = time.monotonic() + 60
        while not (batch := httpx.get(f"{base}/v1/batches/{accepted['batch_id']}", headers=auth).json())["finished"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert batch["done"] == 12 and batch["counts"]["done"] == 12
        assert httpx.get(f"{base}/v1/batches/{accepted['batch_id'][:6]}", headers=auth).json()["id"] == accepted["batch_id"]
        with httpx.stream("GET", f"{base}/v1/batches/{accepted['batch_id']}/results", headers=auth) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            rows = [json.loads(line) for line in stream.iter_lines() if line]
        assert [r["question"] for r in rows] == [i["question"] for i in items]
        assert [r["id"] for r in rows] == accepted["job_ids"] == again["job_ids"]
        listed = httpx.get(f"{base}/v1/batches", headers=auth).json()
        assert listed["batches"][0]["id"] == accepted["batch_id"] and listed["total"] >= 2

        assert httpx.post(f"{base}/v1/jobs", json={"question": "  "}, headers=auth).status_code == 422
        assert httpx.post(f"{base}/v1/batches", json={"items": [{"question": "q?"}] * 51}, headers=auth).status_code == 413
        too_big = httpx.post(f"{base}/v1/batches", content=b"{" + b" " * 30000 + b"}", headers={**auth, "content-type": "application/json"})
        assert too_big.status_code == 413
        assert httpx.get(f"{base}/v1/jobs/nope", headers=auth).status_code == 404
        assert httpx.get(f"{base}/openapi.json").json()["paths"].keys() >= {"/v1/jobs", "/v1/batches", "/v1/batches/{batch_id}/results"}
        metrics = httpx.get(f"{base}/metrics").text
        assert 'cubeqa_jobs{status="done"}' in metrics and 'cubeqa_queue_length{queue="encode"}' in metrics
        assert 'cubeqa_stage_latency_ms{quantile="0.50",stage="encode"}' in metrics
        assert 'cubeqa_stage_backlog{stage="decode"}' in metrics and 'cubeqa_stage_workers{stage="cube"} 1.0' in metrics
        assert httpx.get(f"{base}/livez").json() == {"status": "ok"}
    finally:
        stop([process])
    assert TOKEN not in (tmp_path / "api.log").read_text()


def test_the_python_client_asks_submits_waits_and_streams_typed_results(system, tmp_path) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from cubeqa.client import AsyncClient, Client, ClientError

    process, base = serve_api(system, tmp_path / "api.log", CUBEQA_API_TOKEN=TOKEN)
    try:
        with Client(base, token=TOKEN) as api:
            job = api.ask("Where is kenya located?", min_confidence=0.0)
            assert job.status == "done" and job.answer and api.job(job.id[:8]).id == job.id
            items = ["Who designed the tower?", {"question": "What is the capital of kenya?", "reference": "Its capital is nairobi."}]
            accepted = api.submit(items, key="client-1")
            seen: list[int] = []
            summary = api.wait(accepted.batch_id, poll=0.1, timeout=60, progress=lambda s: seen.append(s.done + s.failed))
            assert summary.finished and summary.total == 2 and seen[-1] == 2
            rows = list(api.results(accepted.batch_id))
            assert [r.question for r in rows] == [items[0], items[1]["question"]] and [r.id for r in rows] == accepted.job_ids
            assert api.submit(items, key="client-1").created is False
            assert api.batches(limit=1).batches[0].id == accepted.batch_id
            with pytest.raises(ClientError) as refused:
                api.batch("ffffffffff")
            assert refused.value.status == 404 and "no batch" in str(refused.value.detail)
        with Client(base) as anonymous, pytest.raises(ClientError) as unauthorised:
            anonymous.batches()
        assert unauthorised.value.status == 401

        async def through_async() -> list[str]:
            async with AsyncClient(base, token=TOKEN) as api:
                assert (await api.wait(accepted.batch_id, timeout=10)).finished
                return [row.id async for row in api.results(accepted.batch_id)]

        with ThreadPoolExecutor(1) as thread:  # its own event loop: an earlier test (Playwright) may leave one running here
            assert thread.submit(asyncio.run, through_async()).result() == accepted.job_ids
    finally:
        stop([process])


def test_ask_through_a_running_api_answers_as_a_local_ask_and_hides_its_batches(system, tmp_path) -> None:
    records = [json.loads(line) for line in (DATA / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()[:20]]
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(r["question"] for r in records) + "\n", encoding="utf-8")
    process, base = serve_api(system, tmp_path / "api.log", CUBEQA_API_TOKEN=TOKEN)
    env = {**system["env"], "CUBEQA_API_TOKEN": TOKEN}
    try:
        listed = httpx.get(f"{base}/v1/batches", params={"interactive": True, "limit": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
        before = listed.json()["total"]
        remote = cubeqa("ask", "--api", base, "--file", str(questions), "--min-confidence", "0", env=env)
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout.count("answer:") == 20 and remote.stdout.count("question:") == 20
        assert all(f"question: {r['question']}" in remote.stdout for r in records)

        one = records[0]["question"]
        via_env = cubeqa("ask", one, "--min-confidence", "0", env={**env, "CUBEQA_API_URL": base})
        local = cubeqa("ask", one, "--min-confidence", "0", env=system["env"])
        assert via_env.returncode == 0 and local.returncode == 0, via_env.stderr + local.stderr
        answer_line = next(line for line in local.stdout.splitlines() if line.startswith("answer:"))
        assert answer_line in via_env.stdout.splitlines()  # the workers give the answer this process gives

        auth = {"Authorization": f"Bearer {TOKEN}"}
        shown = httpx.get(f"{base}/v1/batches", params={"limit": 500}, headers=auth).json()
        everything = httpx.get(f"{base}/v1/batches", params={"limit": 500, "interactive": True}, headers=auth).json()
        assert everything["total"] == before + 21  # one job, one batch each
        assert everything["total"] - shown["total"] >= 21 and all(b["source"] != "api:job" for b in shown["batches"])
        listing = cubeqa("batches", "--json", "--limit", "500", env=system["env"])
        assert len(json.loads(listing.stdout)["batches"]) == shown["total"]

        refused = cubeqa("ask", one, "--api", base, "--decoder", "generative", env=env)
        assert refused.returncode == 1 and "--decoder is the API workers' setting" in refused.stderr
    finally:
        stop([process])
    nobody = cubeqa("ask", "Where is kenya located?", "--api", f"http://127.0.0.1:{free_port()}", env=env)
    assert nobody.returncode == 1 and "no cubeqa API answers at" in nobody.stderr and "Traceback" not in nobody.stderr


def test_http_api_without_a_token_needs_no_auth(system, tmp_path) -> None:
    process, base = serve_api(system, tmp_path / "api.log")
    try:
        response = httpx.post(f"{base}/v1/jobs", params={"wait": 30}, json={"question": "Who wrote the constitution?"}, timeout=40)
        assert response.status_code == 200 and response.json()["status"] == "done"
    finally:
        stop([process])


def test_demo_from_a_clean_directory_runs_and_leaves_nothing_running(tmp_path) -> None:
    env = {k: v for k, v in service_env("", "").items() if not k.startswith("CUBEQA_")}
    env |= {"COLUMNS": "200", "XDG_DATA_HOME": str(tmp_path / "data")}  # the user's data directory holds the bank root
    run = cubeqa("demo", "--questions", "12", env=env, cwd=tmp_path, timeout=600)  # the sample questions and documents ship in the package
    assert run.returncode == 0, run.stdout + run.stderr
    assert "embedded Redis" in run.stdout and "submitted 12 questions" in run.stdout
    right = re.search(r"(\d+) of 12 answers are the reference sentence \((\d+) answered", run.stdout)
    assert right, run.stdout
    assert 2 <= int(right[1]) <= int(right[2]) <= 12  # the bank holds the questions' articles: a fair share is answered right
    assert (tmp_path / "data" / "cubeqa" / "banks" / "demo" / "CURRENT").is_file()
    assert re.search(r"jobs done\s*│\s*12 │", run.stdout) and re.search(r"jobs failed\s*│\s*0 │", run.stdout)
    assert (tmp_path / "cubeqa-demo.db").is_file()
    leftovers = subprocess.run(["pgrep", "-f", "cubeqa-demo-"], capture_output=True, text=True).stdout.strip()
    assert leftovers == "", f"orphan processes: {leftovers}"
    workers = subprocess.run(["pgrep", "-f", f"-m cubeqa worker.*{tmp_path}"], capture_output=True, text=True).stdout.strip()
    assert workers == ""


def test_flower_asks_for_basic_auth_when_configured(system, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "flower.log"
    process = start(["flower"], {**system["env"], "CUBEQA_FLOWER_PORT": str(port), "CUBEQA_FLOWER_BASIC_AUTH": "admin:flower-pw"}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"{base}/workers", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert response.status_code == 401
        assert httpx.get(f"{base}/workers", auth=("admin", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{base}/workers", auth=("admin", "flower-pw"), timeout=5).status_code == 200
    finally:
        stop([process])
    assert "flower-pw" not in log.read_text()


def test_health_proves_each_stage_consumes(system) -> None:
    run = cubeqa("health", "--timeout", "30", env=system["env"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert [line.split()[:2] for line in run.stdout.splitlines()] == [[s, "ok"] for s in ("encode", "cube", "decode", "rerank")]
    from tasks.health import unserved_queues

    assert unserved_queues() == {}  # every stage worker keeps its heartbeat on its queue


def test_health_names_a_stage_nobody_consumes(system) -> None:
    import redis

    empty = system["env"]["CUBEQA_BROKER_URL"].rsplit("/", 1)[0] + "/8"
    try:
        run = cubeqa("health", "--timeout", "1", "--stage", "cube", env={**system["env"], "CUBEQA_BROKER_URL": empty})
        assert run.returncode == 1 and "cube" in run.stdout and "silent" in run.stdout
    finally:
        redis.Redis.from_url(empty).flushdb()


def test_db_check_says_whether_the_schema_is_current(system, tmp_path) -> None:
    assert cubeqa("db", "check", env=system["env"]).returncode == 0
    fresh = {**system["env"], "CUBEQA_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    run = cubeqa("db", "check", "--wait", "1", env=fresh)
    assert run.returncode == 1 and "cubeqa db upgrade" in run.stderr
    assert cubeqa("db", "upgrade", env=fresh).returncode == 0
    assert cubeqa("db", "check", env=fresh).returncode == 0
