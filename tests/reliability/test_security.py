"""Security: pickle and YAML messages are refused by a real worker and never executed; the API wants its token
(compared in constant time); Flower wants its credentials; no secret reaches a log, an error message or a
command line; SQL is built only from bound parameters, so injection text is stored verbatim."""

from __future__ import annotations

import ast
import os
import pickle
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from jobsystem import postgres_database, results_of, service_env, start, stop
from single_worker import all_stage_worker

from tasks.priority import queue_length
from tests.conftest import ROOT, migrated

DB_PASSWORD = "db-Pa55-" + uuid.uuid4().hex[:8]
BROKER_PASSWORD = "broker-Pa55-" + uuid.uuid4().hex[:8]
TOKEN = "api-T0ken-" + uuid.uuid4().hex
FLOWER_PASSWORD = "flower-Pa55-" + uuid.uuid4().hex[:8]
SECRETS = (DB_PASSWORD, BROKER_PASSWORD, TOKEN, FLOWER_PASSWORD)
PRODUCT_PACKAGES = ("pipeline", "storage", "tasks", "workers", "cubeqa")
INJECTIONS = [
    "Robert'); DROP TABLE job; --",
    "' OR '1'='1",
    '"; DELETE FROM batch WHERE ""="',
    "1; UPDATE job SET status='done' --",
    "%(question)s %s {0} :question $1 ?",
    "\\'; SELECT pg_sleep(10); --",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_password(url: str, password: str) -> str:
    """`scheme://user@host...` or `scheme://host...` with a password added (PostgreSQL here trusts any password,
    and Redis without a password configured accepts one)."""
    scheme, rest = url.split("://", 1)
    user, _, host = rest.rpartition("@")
    return f"{scheme}://{user}:{password}@{host}"


@dataclass
class Secured:
    broker_url: str  # without the password, for the test's own producer
    env: dict[str, str]  # every cubeqa process gets all four secrets
    sessions: object
    base: str  # the API, started with the token
    logs: Path
    worker: subprocess.Popen


@pytest.fixture(scope="module")
def secured(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Secured:
    """PostgreSQL and Redis URLs holding passwords, an API token and Flower credentials, given to one
    all-stage worker and one `cubeqa api` process."""
    import redis

    logs = tmp_path_factory.mktemp("security")
    redis.Redis.from_url(broker_url).flushdb()
    with postgres_database() as url:
        sessions = migrated(url)
        secret_db, secret_broker = with_password(url, DB_PASSWORD), with_password(broker_url, BROKER_PASSWORD)
        extra = {"CUBEQA_API_TOKEN": TOKEN, "CUBEQA_FLOWER_BASIC_AUTH": f"admin:{FLOWER_PASSWORD}"}
        env = service_env(secret_broker, secret_db, COLUMNS="300", **extra)
        with all_stage_worker(secret_broker, secret_db, logs / "worker.log", **extra) as worker:
            port = free_port()
            api = start(["api"], {**env, "CUBEQA_API_PORT": str(port)}, logs / "api.log")
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(f"{base}/livez", api, logs / "api.log")
                yield Secured(broker_url, env, sessions, base, logs, worker)
            finally:
                stop([api])
        sessions.kw["bind"].dispose()
    redis.Redis.from_url(broker_url).flushdb()


def wait_http(url: str, process: subprocess.Popen, log: Path, **kwargs: object) -> httpx.Response:
    deadline = time.monotonic() + 90
    while True:
        try:
            return httpx.get(url, timeout=2, **kwargs)
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def answered(secured: Secured, question: str, timeout: float = 60) -> dict:
    response = httpx.post(f"{secured.base}/v1/jobs", params={"wait": 30}, json={"question": question}, headers=auth(), timeout=40)
    assert response.status_code in (200, 202), response.text  # 200 once final
    job = response.json()
    deadline = time.monotonic() + timeout
    while job["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = httpx.get(f"{secured.base}/v1/jobs/{job['id']}", headers=auth()).json()
    return job


# --- untrusted serialisations on the queues --------------------------------------------------------


class Planted:
    """Unpickling (or YAML-loading) this runs `touch MARKER`: the marker appearing proves execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def task_headers(name: str) -> dict[str, object]:
    """Celery task-protocol 2 headers: to the worker the message looks like a real task but for its encoding."""
    task_id = str(uuid.uuid4())
    return {
        "lang": "py", "task": name, "id": task_id, "root_id": task_id, "parent_id": None, "group": None, "retries": 0,
        "eta": None, "expires": None, "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}", "origin": "attacker",
    }


@pytest.mark.slow
@pytest.mark.services
def test_pickle_and_yaml_messages_are_refused_and_never_executed(secured: Secured, tmp_path: Path) -> None:
    import redis
    from kombu import Connection, Exchange

    marker = tmp_path / "executed"
    payloads = {
        "application/x-python-serialize": pickle.dumps(((Planted(marker),), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})),
        "application/x-yaml": f"!!python/object/apply:os.system ['touch {marker}']\n".encode(),
    }
    with Connection(secured.broker_url) as connection:
        producer = connection.Producer()
        for content_type, body in payloads.items():
            for stage in ("encode", "cube", "decode"):
                producer.publish(
                    body, exchange="", routing_key=stage, headers=task_headers(f"cubeqa.{stage}"),
                    content_type=content_type, content_encoding="binary", serializer=None,
                )
            # and to every worker's broadcast mailbox, the remote-control channel
            producer.publish(
                body, exchange=Exchange("celery.pidbox", type="fanout"), routing_key="",
                headers={"ticket": str(uuid.uuid4())}, content_type=content_type, content_encoding="binary", serializer=None,
            )

    job = answered(secured, "Where is Kenya located?")  # the worker keeps serving, after the six refusals
    assert job["status"] == "done" and job["answer"]
    assert not marker.exists(), "a pickle or YAML message was executed"
    assert secured.worker.poll() is None
    log = (secured.logs / "worker.log").read_text(errors="replace")
    assert log.count("Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)") >= 3, log[-3000:]
    assert log.count("Refusing to deserialize untrusted content of type yaml (application/x-yaml)") >= 3, log[-3000:]
    client = redis.Redis.from_url(secured.broker_url)
    assert [queue_length(client, stage) for stage in ("encode", "cube", "decode")] == [0, 0, 0]  # discarded, not requeued
    assert client.hlen("unacked") == 0


@pytest.mark.slow
@pytest.mark.services
def test_the_worker_accepts_only_msgpack_and_json(broker_url: str) -> None:
    from tasks.app import configure

    conf = configure(broker_url).conf
    assert set(conf.accept_content) == {"msgpack", "json"} and conf.task_serializer == "msgpack"
    assert set(conf.result_accept_content) == {"msgpack", "json"} and conf.event_serializer == "json"


# --- the API token -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.services
def test_every_v1_route_wants_the_token(secured: Secured) -> None:
    schema = httpx.get(f"{secured.base}/openapi.json").json()
    routes = [(method.upper(), path) for path, item in schema["paths"].items() for method in item if path.startswith("/v1/")]
    assert len(routes) == 17  # jobs, batches, their controls and webhooks, and banks
    wrong = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {'x' * len(TOKEN)}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN.upper()}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"X-API-Token": TOKEN},
    ]
    for method, path in routes:
        url = secured.base + path.replace("{job_id}", "0" * 32).replace("{batch_id}", "0" * 32).replace("{build_id}", "0" * 32)
        url = url.replace("{name}", "no-such-bank")
        body = {"question": "q?"} if path == "/v1/jobs" else {"items": [{"question": "q?"}]}
        for headers in wrong:
            response = httpx.request(method, url, headers=headers, json=body if method == "POST" else None)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text
        passed = httpx.request(method, url, headers=auth(), json=body if method == "POST" else None)
        assert passed.status_code in (200, 202, 404, 422), passed.text  # 422: a bank build wants files, not JSON
    for open_path in ("/livez", "/healthz", "/metrics", "/openapi.json"):
        assert httpx.get(secured.base + open_path).status_code == 200, open_path


def test_the_token_is_compared_in_constant_time() -> None:
    """The bearer check goes through hmac.compare_digest and never compares the token with == or in."""
    tree = ast.parse((ROOT / "cubeqa" / "api" / "deps.py").read_text(encoding="utf-8"))
    (check,) = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "authorised"]
    calls = [ast.unparse(node.func) for node in ast.walk(check) if isinstance(node, ast.Call)]
    assert "hmac.compare_digest" in calls or "secrets.compare_digest" in calls
    comparisons = [node for node in ast.walk(check) if isinstance(node, ast.Compare)]
    assert all(isinstance(op, ast.Is | ast.IsNot) for node in comparisons for op in node.ops), [ast.unparse(c) for c in comparisons]


# --- Flower ------------------------------------------------------------------------------------------


def command_lines(process: subprocess.Popen) -> list[str]:
    """The command line of every process in `process`'s group (cubeqa flower becomes celery flower)."""
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == process.pid:
                    lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
    return lines


@pytest.mark.slow
@pytest.mark.services
def test_flower_wants_its_credentials_and_its_command_line_holds_no_secret(secured: Secured) -> None:
    port = free_port()
    log = secured.logs / "flower.log"
    flower = start(["flower"], {**secured.env, "CUBEQA_FLOWER_PORT": str(port)}, log)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_http(f"{base}/workers", flower, log).status_code == 401
        assert httpx.get(f"{base}/workers", auth=("admin", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
        assert httpx.get(f"{base}/workers", auth=("admin", FLOWER_PASSWORD), timeout=5).status_code == 200
        lines = command_lines(flower)
        assert any("celery -A cubeqa.flower_app flower" in line for line in lines), lines  # cubeqa flower execs Flower
        leaked = [line for line in lines for secret in SECRETS if secret in line]
        assert leaked == []
    finally:
        stop([flower])
    where = secured.broker_url.split("://", 1)[1]
    assert f"Broker: redis://:**@{where}" in log.read_text(errors="replace")  # the broker came from the environment


# --- secrets in logs and error messages -----------------------------------------------------------


def cli(*args: str, env: dict[str, str]):
    """`cubeqa ARGS` in this process (typer's runner) with exactly these CUBEQA_* settings."""
    from typer.testing import CliRunner

    from cubeqa.cli import app

    cleared: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("CUBEQA_")}
    return CliRunner().invoke(app, list(args), env={**cleared, **{k: v for k, v in env.items() if k.startswith("CUBEQA_")}})


@pytest.mark.slow
@pytest.mark.services
def test_secrets_never_reach_error_messages(secured: Secured, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Where is Kenya?"}\n', encoding="utf-8")
    base = secured.env
    db = base["CUBEQA_DATABASE_URL"]
    cases = [
        (["db", "check"], {"CUBEQA_DATABASE_URL": db.rsplit("/", 1)[0] + "/no_such_database"}, "no_such_database"),
        (["db", "upgrade"], {"CUBEQA_DATABASE_URL": db.replace(":5432/", ":port5432/")}, "invalid database URL"),
        (["db", "check"], {"CUBEQA_DATABASE_URL": db.replace("postgresql+psycopg://", "postgres://")}, "unusable database URL"),
        (["db", "check"], {"CUBEQA_DATABASE_URL": db.replace("postgresql+psycopg://", "mysql://")}, "unusable database URL"),
        (["status", "0" * 32], {}, "no batch"),
        (["api"], {"CUBEQA_DATABASE_URL": db.rsplit("/", 1)[0] + "/no_such_database"}, "cannot open database"),
        (["status", "x"], {"CUBEQA_API_TOKEN": "   "}, "CUBEQA_API_TOKEN is empty"),
        (["status", "x"], {"CUBEQA_FLOWER_BASIC_AUTH": FLOWER_PASSWORD}, "must be user:password"),
        (["status", "x"], {"CUBEQA_API_PORT": TOKEN}, "CUBEQA_API_PORT"),
    ]
    for args, change, expected in cases:
        run = cli(*args, env={**base, **change})
        output = run.stdout + run.stderr
        assert run.exit_code in (1, 2) and expected in " ".join(output.split()), (args, output)
        assert [secret for secret in SECRETS if secret in output] == [], (args, output)
        assert "Traceback" not in output, (args, output)
    # A producer's broker connection lives as long as its process: an unreachable broker needs a fresh one.
    down = {**base, "CUBEQA_BROKER_URL": with_password("redis://127.0.0.1:1/0", BROKER_PASSWORD)}
    for args in (["submit", str(questions)], ["health", "--timeout", "1"]):
        run = subprocess.run([sys.executable, "-m", "cubeqa", *args], env=down, cwd=ROOT, capture_output=True, text=True, timeout=120)
        output = run.stdout + run.stderr
        assert run.returncode == 1 and "broker unreachable" in " ".join(output.split()), (args, output)
        assert [secret for secret in SECRETS if secret in output] == [] and "Traceback" not in output, (args, output)


def test_the_demo_never_prints_a_database_password() -> None:
    from cubeqa.demo import where_results_are

    url = f"postgresql+psycopg://cubeqa:{DB_PASSWORD}@db-host/cubeqa"
    line = where_results_are(url, "b" * 32, explicit=True)
    assert DB_PASSWORD not in line and "postgresql+psycopg://cubeqa:***@db-host/cubeqa" in line
    assert "CUBEQA_DATABASE_URL=sqlite:///x/cubeqa-demo.db" in where_results_are("sqlite:///x/cubeqa-demo.db", "b" * 32, explicit=False)


@pytest.mark.slow
@pytest.mark.services
def test_secrets_never_reach_the_logs(secured: Secured) -> None:
    answered(secured, "Who built the fort?")  # the worker and the API have logged a whole job by now
    httpx.get(f"{secured.base}/v1/jobs/{'0' * 32}", headers={"Authorization": "Bearer wrong"})
    logs = {path.name: path.read_text(errors="replace") for path in secured.logs.glob("*.log")}
    assert {"worker.log", "api.log"} <= set(logs)
    assert "redis://:**@" in logs["worker.log"]  # the broker URL is shown, masked
    leaks = {name: [secret for secret in SECRETS if secret in text] for name, text in logs.items()}
    assert all(found == [] for found in leaks.values()), leaks
    for process in (secured.worker,):
        assert [s for s in SECRETS for line in command_lines(process) if s in line] == []


# --- SQL ---------------------------------------------------------------------------------------------

SQL_RUNNERS = {"execute", "exec_driver_sql", "executescript", "executemany", "text", "literal_column", "from_statement"}
SQL_WORDS = re.compile(r"\b(SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s|DROP\s|ALTER\s+TABLE|PRAGMA\s|WHERE\s)")


def composed_sql(node: ast.expr) -> bool:
    """psycopg's `sql.SQL("...").format(sql.Identifier(...))`: composition that quotes each piece, not text building."""
    return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "SQL"


def built_sql(source: str, filename: str) -> list[str]:
    """Places where SQL text is built from pieces: an f-string, %, + or .format() given to something that runs
    SQL, or any f-string / formatted string that reads like SQL."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in SQL_RUNNERS and node.args:
                first = node.args[0]
                if isinstance(first, ast.JoinedStr | ast.BinOp) or (
                    isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "format"
                    and not composed_sql(first.func.value)
                ):
                    found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
            if isinstance(node.func, ast.Attribute) and node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
                if SQL_WORDS.search(str(node.func.value.value)):
                    found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
        elif isinstance(node, ast.JoinedStr):
            literal = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            if SQL_WORDS.search(literal):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add) and isinstance(node.left, ast.Constant):
            if SQL_WORDS.search(str(node.left.value)):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
    return found


def test_the_sql_scanner_finds_built_sql() -> None:
    """The check below can fail: each of these is flagged, and bound parameters are not."""
    bad = [
        "session.execute(text(f\"SELECT * FROM job WHERE id = '{job_id}'\"))",
        "cursor.execute('DELETE FROM job WHERE id = %s' % job_id)",
        "connection.exec_driver_sql('UPDATE job SET status = ' + status)",
        "session.execute(text('SELECT {} FROM job'.format(column)))",
        "query = f'SELECT answer FROM job WHERE question = {question!r}'",
        "sql = 'INSERT INTO job VALUES (%s)' % value",
    ]
    for snippet in bad:
        assert built_sql(snippet, "snippet.py"), snippet
    good = (
        "session.execute(text('SELECT 1'))\nsession.execute(select(Job).where(Job.id == job_id))\n"
        "message = f'no batch {batch_id!r}'\ncursor.execute('PRAGMA journal_mode=WAL')\n"
        "connection.execute(sql.SQL('DROP DATABASE {}').format(sql.Identifier(name)))"
    )
    assert built_sql(good, "good.py") == []


def test_no_product_code_builds_sql_text() -> None:
    files = sorted(p for package in PRODUCT_PACKAGES for p in (ROOT / package).rglob("*.py"))
    assert any("migrations" in str(p) for p in files) and len(files) > 30
    found = [hit for path in files for hit in built_sql(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.slow
@pytest.mark.services
def test_injection_text_is_stored_verbatim(secured: Secured, tmp_path: Path) -> None:
    """Through the API (PostgreSQL) and `cubeqa submit` (SQLite): questions, references and keys that read as SQL
    come back byte for byte, the tables are intact, and an injected id matches nothing."""
    from sqlalchemy import func, select

    from storage.db import make_engine, session_factory, upgrade
    from storage.models import Batch, Job

    with secured.sessions() as session:
        jobs_before = session.scalar(select(func.count()).select_from(Job))
    items = [{"question": text, "reference": text[::-1]} for text in INJECTIONS]
    for key in INJECTIONS[:3]:
        first = httpx.post(f"{secured.base}/v1/batches", json={"items": items, "key": key}, headers=auth())
        again = httpx.post(f"{secured.base}/v1/batches", json={"items": items, "key": key}, headers=auth())
        assert first.status_code == again.status_code == 202, first.text
        assert (first.json()["created"], again.json()["created"]) == (True, False)
        assert again.json()["batch_id"] == first.json()["batch_id"]
        rows = results_of(secured.sessions, first.json()["batch_id"])
        assert [(r["question"], r["reference"]) for r in rows] == [(i["question"], i["reference"]) for i in items]
    for text in INJECTIONS:
        assert httpx.get(f"{secured.base}/v1/batches/{quote(text, safe='')}", headers=auth()).status_code == 404
    with secured.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before + 3 * len(INJECTIONS)
        assert session.scalar(select(func.count()).select_from(Batch).where(Batch.key == INJECTIONS[1])) == 1

    url = f"sqlite:///{tmp_path / 'cubeqa.db'}"
    upgrade(url)
    questions = tmp_path / "injection.csv"
    questions.write_text("question,reference\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}",ref\n' for t in INJECTIONS), encoding="utf-8")
    run = cli("submit", str(questions), "--key", INJECTIONS[0], env={**secured.env, "CUBEQA_DATABASE_URL": url})
    assert run.exit_code == 0, run.output
    sessions = session_factory(make_engine(url))
    with sessions() as session:
        (batch_id,) = session.scalars(select(Batch.id).where(Batch.key == INJECTIONS[0])).all()
    assert [r["question"] for r in results_of(sessions, batch_id)] == INJECTIONS
    sessions.kw["bind"].dispose()
