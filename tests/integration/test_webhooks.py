"""Webhooks end to end: real Redis, SQLite, encode/cube/decode workers and a hooks worker (`cubeqa worker --stage hooks`)
posting to a real HTTP server in this process; the API as a subprocess for a single job's callback."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobsystem import results_of, service_env, start, stop, wait_for_batch
from sqlalchemy import update

from cubeqa import supervise
from storage.hooks import Callback, deliveries_of
from storage.models import WebhookDelivery, now
from storage.repository import JobOutcome, NewJob, create_batch, job_view, record_outcomes
from storage.summary import batch_summary
from tasks.app import configure
from tasks.hooks import HookConfig, HookPolicy, deliver
from tasks.producer import reconcile, submit
from tests.conftest import migrated

pytestmark = [pytest.mark.slow, pytest.mark.services]
SECRET = "webhook-test-secret"
HOOK_ENV = {
    "CUBEQA_WEBHOOK_SECRET": SECRET, "CUBEQA_WEBHOOK_ALLOW_HTTP": "true", "CUBEQA_WEBHOOK_ALLOW_PRIVATE": "true",
    "CUBEQA_WEBHOOK_BACKOFF": "0.5", "CUBEQA_WEBHOOK_MAX_ATTEMPTS": "4", "CUBEQA_WEBHOOK_TIMEOUT": "60",
    "CUBEQA_RERANK": "false",
}
STAGES = ("encode", "cube", "decode", "hooks")


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver(ThreadingHTTPServer):
    """Records every POST. /flaky/... answers 503 to its first two requests, /fail/... always 500, /slow/... holds the
    request until `release` is set; anything else is 200."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[Request] = []
        self.held = 0
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def to(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests.append(Request(self.path, dict(self.headers), body, time.monotonic()))
            seen = sum(r.path == self.path for r in self.server.requests)
        if self.path.startswith("/slow"):
            with self.server.lock:
                self.server.held += 1
            self.server.release.wait(120)
        status = 503 if self.path.startswith("/flaky") and seen <= 2 else 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Stack:
    url: str
    sessions: Any
    receiver: Receiver
    env: dict[str, str]
    logdir: Path
    broker_url: str
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logdir = tmp_path_factory.mktemp("webhooks")
    url = f"sqlite:///{logdir / 'hooks.db'}"
    sessions = migrated(url)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = service_env(broker_url, url, **HOOK_ENV)
    try:
        with supervise.stage_workers(env, logdir, stages=STAGES) as processes:
            supervise.wait_for_workers(configure(broker_url), processes, logdir, timeout=180)
            yield Stack(url, sessions, receiver, env, logdir, broker_url)
    finally:
        receiver.release.set()
        receiver.shutdown()
        sessions.kw["bind"].dispose()


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"not within {timeout} s: {what}")


def questions(count: int, prefix: str) -> list[NewJob]:
    return [NewJob(question=f"{prefix}: where is kenya located, question {i}?") for i in range(count)]


def verified(request: Request) -> dict[str, Any]:
    """The body, after checking its signature the way docs/user-guide.md tells a receiver to."""
    timestamp = request.headers["X-Cubeqa-Timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["X-Cubeqa-Signature"])
    assert abs(time.time() - int(timestamp)) < 300
    return json.loads(request.body)


def deliveries(stack: Stack, batch_id: str) -> list[dict[str, Any]]:
    with stack.sessions() as session:
        return deliveries_of(session=session, batch_id=batch_id)


def settled(stack: Stack, batch_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The batch's deliveries once `count` of them are no longer pending."""
    return eventually(lambda: (rows := deliveries(stack, batch_id)) and sum(r["status"] != "pending" for r in rows) >= count
                      and rows, what=f"deliveries of {batch_id}")


def test_the_hooks_worker_answers_health_pings_and_one_without_a_secret_exits_saying_so(stack: Stack) -> None:
    from tasks.health import probe_stages

    (health,) = probe_stages(30, ("hooks",))
    assert health.ok and health.worker is not None and health.worker.startswith("hooks-")
    env = {k: v for k, v in stack.env.items() if k != "CUBEQA_WEBHOOK_SECRET"}
    ended = subprocess.run([sys.executable, "-m", "cubeqa", "worker", "--stage", "hooks"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert ended.returncode == 1
    assert "the hooks stage cannot load: ValueError: CUBEQA_WEBHOOK_SECRET is unset" in " ".join(ended.stderr.split())


def test_a_batch_callback_arrives_once_signed_with_the_summary_get_returns(stack: Stack) -> None:
    path = "/ok/batch"
    result = submit(stack.sessions, questions(12, "once"), micro_batch=4, callback=Callback(stack.receiver.url + path))
    wait_for_batch(stack.sessions, result.batch_id)
    (row,) = settled(stack, result.batch_id)
    time.sleep(1.0)  # a second POST, had one been queued, would have had time to arrive
    (request,) = stack.receiver.to(path)
    body = verified(request)
    with stack.sessions() as session:
        summary = batch_summary(session=session, batch_id=result.batch_id)
    assert summary is not None and body == summary.to_dict() and body["finished"] and body["done"] + body["failed"] == 12
    assert request.headers["X-Cubeqa-Event"] == "batch.final" and request.headers["X-Cubeqa-Delivery"] == row["id"]
    assert request.headers["X-Cubeqa-Attempt"] == "1" and request.headers["Content-Type"] == "application/json"
    assert (row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == ("delivered", 1, 200, None)
    assert row["delivered_at"] is not None and row["job_id"] is None


def test_a_receiver_failing_twice_gets_three_attempts_all_recorded(stack: Stack) -> None:
    path = "/flaky/batch"
    result = submit(stack.sessions, questions(3, "flaky"), micro_batch=3, callback=Callback(stack.receiver.url + path))
    wait_for_batch(stack.sessions, result.batch_id)
    (row,) = settled(stack, result.batch_id)
    attempts = stack.receiver.to(path)
    assert [r.headers["X-Cubeqa-Attempt"] for r in attempts] == ["1", "2", "3"]
    assert {r.headers["X-Cubeqa-Delivery"] for r in attempts} == {row["id"]}  # one delivery: the receiver can de-duplicate
    assert all(verified(r) == verified(attempts[-1]) for r in attempts)
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # CUBEQA_WEBHOOK_BACKOFF 0.5 s, doubled
    assert (row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == ("delivered", 3, 200, None)


def test_a_receiver_that_always_fails_is_given_up_after_the_last_attempt(stack: Stack) -> None:
    path = "/fail/batch"
    result = submit(stack.sessions, questions(2, "fail"), micro_batch=2, callback=Callback(stack.receiver.url + path))
    wait_for_batch(stack.sessions, result.batch_id)
    (row,) = settled(stack, result.batch_id)
    assert len(stack.receiver.to(path)) == 4  # CUBEQA_WEBHOOK_MAX_ATTEMPTS
    assert (row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == ("failed", 4, 500, "HTTP 500")
    assert row["delivered_at"] is None


def test_a_blocked_receiver_holds_no_job_back(stack: Stack) -> None:
    """Four job hooks held by the receiver occupy every slot of the hooks worker; batches submitted meanwhile still
    finish (the stage workers only queue deliveries), and their own hook waits its turn."""
    receiver = stack.receiver
    blocked = submit(stack.sessions, questions(4, "slow"), micro_batch=1,
                     callback=Callback(receiver.url + "/slow/job", each_job=True))
    eventually(lambda: receiver.held == 4, what="four held requests")
    bulk = submit(stack.sessions, questions(40, "bulk"), micro_batch=8)
    waiting = submit(stack.sessions, questions(4, "after"), micro_batch=4, callback=Callback(receiver.url + "/ok/after"))
    try:
        assert wait_for_batch(stack.sessions, bulk.batch_id, timeout=120).done == 40
        assert wait_for_batch(stack.sessions, waiting.batch_id, timeout=120).done == 4
        assert receiver.held == 4 and not receiver.release.is_set()  # finished while every delivery slot was stuck
        assert {(r["status"], r["attempts"]) for r in deliveries(stack, blocked.batch_id)} == {("pending", 1)}
        assert [(r["status"], r["attempts"]) for r in deliveries(stack, waiting.batch_id)] == [("pending", 0)]
        assert receiver.to("/ok/after") == []
    finally:
        receiver.release.set()
    rows = settled(stack, blocked.batch_id, count=4)
    assert {(r["event"], r["status"]) for r in rows} == {("job.final", "delivered")}
    assert {verified(r)["id"] for r in receiver.to("/slow/job")} == set(blocked.job_ids)
    assert settled(stack, waiting.batch_id)[0]["status"] == "delivered" and len(receiver.to("/ok/after")) == 1


def test_the_reconciler_sends_a_delivery_whose_message_was_lost(stack: Stack) -> None:
    """A delivery queued but never sent (the broker lost it): the reconciler's pass sends it, the hooks worker posts."""
    path = "/ok/lost"
    with stack.sessions.begin() as session:
        batch = create_batch(session=session, items=questions(1, "lost"), callback=Callback(stack.receiver.url + path))
    with stack.sessions.begin() as session:  # written as a stage would, but its task never sent
        (delivery,) = record_outcomes(session=session, outcomes=[JobOutcome(batch.job_ids[0], error="x")], model_version=None).hooks
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery)
                        .values(next_attempt_at=now() - timedelta(seconds=30)))
    report = reconcile(stack.sessions, after=timedelta(seconds=10), max_attempts=5, micro_batch=8)
    assert report.hooks >= 1
    (request,) = eventually(lambda: stack.receiver.to(path), what="the re-sent delivery")
    assert request.headers["X-Cubeqa-Delivery"] == delivery and verified(request)["id"] == batch.id


def test_delivery_checks_the_address_again_and_a_duplicate_message_posts_nothing(stack: Stack) -> None:
    """In this process, with a policy that allows no private address: the loopback receiver is refused at delivery
    (given up at once, nothing posted); with one that does, a second message for a delivered hook posts nothing."""
    path = "/ok/guard"
    with stack.sessions.begin() as session:
        batch = create_batch(session=session, items=questions(2, "guard"), callback=Callback(stack.receiver.url + path, each_job=True))
    with stack.sessions.begin() as session:
        outcomes = [JobOutcome(job_id, error="x") for job_id in batch.job_ids]
        refused, allowed = record_outcomes(session=session, outcomes=outcomes, model_version=None).hooks
    strict = HookConfig(secret=SECRET.encode(), policy=HookPolicy(allow_http=True))
    assert deliver(stack.sessions, strict, refused) is None
    opened = HookConfig(secret=SECRET.encode(), policy=HookPolicy(allow_http=True, allow_private=True))
    assert deliver(stack.sessions, opened, allowed) is None and deliver(stack.sessions, opened, allowed) is None
    rows = {r["id"]: r for r in deliveries(stack, batch.id)}
    assert (rows[refused]["status"], rows[refused]["attempts"]) == ("failed", 1)
    assert rows[refused]["last_error"].startswith("refused: callback host '127.0.0.1' resolves to 127.0.0.1, a loopback")
    assert (rows[allowed]["status"], rows[allowed]["attempts"]) == ("delivered", 1)
    (request,) = stack.receiver.to(path)
    assert request.headers["X-Cubeqa-Delivery"] == allowed and request.headers["X-Cubeqa-Event"] == "job.final"


def serve_api(stack: Stack, log: Path) -> tuple[Any, str]:
    """`cubeqa api` on a free port of its own, once /readyz answers."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start(["api"], {**stack.env, "CUBEQA_API_PORT": str(port)}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: ready(base), timeout=90, what="the API")
    except TimeoutError:
        stop([process])
        raise
    return process, base


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_client_asks_with_a_callback_and_the_job_posts_its_final_state(stack: Stack, tmp_path: Path) -> None:
    from cubeqa.client import Client, ClientError

    process, base = serve_api(stack, tmp_path / "api.log")
    path = "/ok/client"
    try:
        with Client(base) as api:
            job = api.ask("Where is kenya located?", callback=stack.receiver.url + path, wait=30)
            assert job.status in ("done", "failed")
            (request,) = eventually(lambda: stack.receiver.to(path), what="the job's hook")
            listed = httpx.get(f"{base}/v1/batches/{job.batch_id}/webhooks").json()
            typed = eventually(lambda: [d for d in api.webhooks(job.batch_id[:8]) if d.status == "delivered"],
                               what="the delivery recorded as delivered")
            with pytest.raises(ClientError) as refused:
                api.submit(["q?"], callback="ftp://127.0.0.1/x")
    finally:
        stop([process])
    body = verified(request)
    with stack.sessions() as session:
        assert body == job_view(session=session, job_id=job.id)
    assert body["id"] == job.id and request.headers["X-Cubeqa-Event"] == "job.final"
    assert [(d["event"], d["job_id"], d["url"]) for d in listed] == [("job.final", job.id, stack.receiver.url + path)]
    assert [(d.id, d.attempts, d.last_status_code) for d in typed] == [(listed[0]["id"], 1, 200)]
    assert refused.value.status == 422 and "callback_url" in json.dumps(refused.value.detail)
    assert "scheme 'ftp' is not allowed" in json.dumps(refused.value.detail)
    assert results_of(stack.sessions, job.batch_id)[0]["id"] == job.id
