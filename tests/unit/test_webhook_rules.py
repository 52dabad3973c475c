"""Webhooks without services: the callback URL guard, the signature a receiver checks, the retry schedule, the settings
and the store's delivery rows (SQLite)."""

from __future__ import annotations

import hashlib
import hmac
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import update
from typer.testing import CliRunner

from cubeqa.cli import app
from cubeqa.intake import check_callback_url
from storage.hooks import Attempt, Callback, claim_attempt, deliveries_of, overdue_deliveries, record_attempt
from storage.models import WebhookDelivery, now
from storage.repository import JobOutcome, NewJob, create_batch, record_outcomes
from tasks.hooks import (
    HookConfig,
    HookPolicy,
    UnresolvableCallback,
    UnsafeCallback,
    attempt_post,
    check_callback,
    signature,
)
from tests.conftest import migrated

OPEN = HookPolicy(allow_http=True, allow_private=True)
REFUSED = [
    ("http://93.184.216.34/hook", "scheme 'http' is not allowed: use https"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://example.com/", "scheme 'gopher' is not allowed"),
    ("hook.example.com/x", "scheme '(none)' is not allowed"),
    ("https://127.0.0.1/hook", "127.0.0.1, a loopback, private or link-local address"),
    ("https://127.1.2.3:8443/hook", "127.1.2.3, a loopback"),
    ("https://localhost/hook", "a loopback, private or link-local address"),
    ("https://[::1]/hook", "::1, a loopback"),
    ("https://[::ffff:10.0.0.1]/hook", "10.0.0.1, a loopback"),
    ("https://10.2.3.4/hook", "10.2.3.4, a loopback"),
    ("https://172.16.0.9/hook", "172.16.0.9, a loopback"),
    ("https://192.168.1.1/hook", "192.168.1.1, a loopback"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254, a loopback"),
    ("https://[fe80::1]/hook", "fe80::1, a loopback"),
    ("https://0.0.0.0/hook", "0.0.0.0, which is not a host address"),
    ("https://224.0.0.1/hook", "224.0.0.1, which is not a host address"),
    ("https://user:pw@93.184.216.34/hook", "must not carry a user name or password"),
    ("https:///hook", "has no host"),
    ("https://93.184.216.34:99999/hook", "callback URL port"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED, ids=[url for url, _ in REFUSED])
def test_the_guard_refuses_schemes_credentials_and_addresses_that_are_not_public(url: str, why: str) -> None:
    with pytest.raises(UnsafeCallback) as refused:
        check_callback(url, HookPolicy())
    assert why in str(refused.value)


def test_the_settings_open_http_and_private_addresses_but_never_multicast() -> None:
    assert check_callback("https://93.184.216.34/hook", HookPolicy()) == ["93.184.216.34"]
    assert check_callback("http://93.184.216.34/hook", HookPolicy(allow_http=True)) == ["93.184.216.34"]
    with pytest.raises(UnsafeCallback, match="loopback"):
        check_callback("http://127.0.0.1:9/hook", HookPolicy(allow_http=True))
    assert check_callback("http://127.0.0.1:9/hook", OPEN) == ["127.0.0.1"]
    assert check_callback("https://169.254.169.254/", HookPolicy(allow_private=True)) == ["169.254.169.254"]
    with pytest.raises(UnsafeCallback, match="not a host address"):
        check_callback("http://224.0.0.1/", OPEN)


def test_a_host_that_does_not_resolve_is_its_own_kind_of_refusal() -> None:
    with pytest.raises(UnresolvableCallback, match="does not resolve"):
        check_callback("https://no-such-host.invalid/hook", HookPolicy())


def test_intake_checks_length_and_characters_and_says_whose_callback_it_is() -> None:
    assert check_callback_url(None, HookPolicy()) is None
    assert check_callback_url("https://93.184.216.34/h", HookPolicy(), each_job=True) == Callback("https://93.184.216.34/h", True)
    with pytest.raises(UnsafeCallback, match="the limit is 2000"):
        check_callback_url("https://93.184.216.34/" + "a" * 2000, HookPolicy())
    with pytest.raises(UnsafeCallback, match="NUL"):
        check_callback_url("https://93.184.216.34/\x00", HookPolicy())


def verify(secret: bytes, body: bytes, headers: dict[str, str], tolerance: float = 300) -> bool:
    """The receiver's check, as docs/user-guide.md prints it."""
    timestamp = headers["X-Cubeqa-Timestamp"]
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Cubeqa-Signature"]) and abs(time.time() - int(timestamp)) < tolerance


def test_the_signature_is_what_the_documented_check_recomputes() -> None:
    body, stamp = b'{"id":"abc","finished":true}', int(time.time())
    headers = {"X-Cubeqa-Timestamp": str(stamp), "X-Cubeqa-Signature": signature(b"s3cret", stamp, body)}
    assert verify(b"s3cret", body, headers)
    assert not verify(b"other", body, headers)
    assert not verify(b"s3cret", body + b" ", headers)
    assert not verify(b"s3cret", body, {**headers, "X-Cubeqa-Timestamp": str(stamp - 1)})  # the timestamp is signed
    old = stamp - 3600
    assert not verify(b"s3cret", body, {"X-Cubeqa-Timestamp": str(old), "X-Cubeqa-Signature": signature(b"s3cret", old, body)})


def test_retries_double_up_to_the_cap_and_stop_after_the_last_attempt() -> None:
    config = HookConfig(secret=b"k", max_attempts=6, backoff=5, backoff_max=30)
    assert [config.retry_in(n) for n in range(1, 7)] == [5, 10, 20, 30, 30, None]
    assert config.lease > timedelta(seconds=3 * config.timeout)


def test_settings_refuse_an_empty_secret_and_cap_the_back_off_below_the_visibility_timeout(monkeypatch) -> None:
    from cubeqa.settings import Settings
    from cubeqa.wiring import hook_config

    for name in [k for k in __import__("os").environ if k.upper().startswith("CUBEQA_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValidationError, match="CUBEQA_WEBHOOK_SECRET is empty"):
        Settings(webhook_secret=" ")
    assert hook_config(Settings()) is None
    config = hook_config(Settings(webhook_secret="x", visibility_timeout=60, webhook_allow_http=True))
    assert config is not None and config.secret == b"x" and config.backoff_max == 30 and config.policy.allow_http
    assert hook_config(Settings(webhook_secret="x")).backoff_max == 600  # type: ignore[union-attr]


def test_submit_refuses_a_loopback_callback_in_one_line_before_reading_the_file(tmp_path) -> None:
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "missing.jsonl"), "--callback", "https://127.0.0.1/hook"],
                                env={"CUBEQA_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"})
    assert result.exit_code == 1
    assert "127.0.0.1, a loopback, private or link-local address" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "none.db").exists()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.services, pytest.mark.slow])])
def sessions(request, tmp_path):
    """The store on SQLite, and on PostgreSQL where services run."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'hooks.db'}"
        else:
            from jobsystem import postgres_database

            url = stack.enter_context(postgres_database())
        sessions = migrated(url)
        yield sessions
        sessions.kw["bind"].dispose()


def finish(sessions, job_ids: list[str]):
    with sessions.begin() as session:
        return record_outcomes(session=session, outcomes=[JobOutcome(job_id=j, error="x") for j in job_ids], model_version=None)


def test_a_batch_hook_is_queued_once_when_its_last_job_is_final_and_job_hooks_per_job(sessions) -> None:
    with sessions.begin() as session:
        batch = create_batch(session=session, items=[NewJob("a?"), NewJob("b?")], callback=Callback("https://h.example/b"))
        single = create_batch(session=session, items=[NewJob("c?")], callback=Callback("https://h.example/j", each_job=True))
        plain = create_batch(session=session, items=[NewJob("d?")])
    assert finish(sessions, batch.job_ids[:1]).hooks == []  # one job of two: the batch is not final
    recorded = finish(sessions, [batch.job_ids[1], *single.job_ids, *plain.job_ids])
    assert (recorded.finished, len(recorded.hooks)) == (3, 2)
    assert finish(sessions, batch.job_ids).hooks == []  # a redelivered write queues nothing again
    with sessions() as session:
        (batch_hook,) = deliveries_of(session=session, batch_id=batch.id)
        (job_hook,) = deliveries_of(session=session, batch_id=single.id)
        assert deliveries_of(session=session, batch_id=plain.id) == []
    assert (batch_hook["event"], batch_hook["job_id"], batch_hook["url"]) == ("batch.final", None, "https://h.example/b")
    assert (job_hook["event"], job_hook["job_id"], job_hook["status"]) == ("job.final", single.job_ids[0], "pending")
    assert {batch_hook["id"], job_hook["id"]} == set(recorded.hooks)


def test_a_cancel_that_makes_a_batch_or_a_single_job_final_queues_their_hooks(sessions) -> None:
    from storage.control import cancel_batch, cancel_job

    with sessions.begin() as session:
        batch = create_batch(session=session, items=[NewJob("a?"), NewJob("b?")], callback=Callback("https://h.example/b"))
        single = create_batch(session=session, items=[NewJob("c?")], callback=Callback("https://h.example/j", each_job=True))
    assert finish(sessions, batch.job_ids[:1]).hooks == []
    with sessions.begin() as session:
        cancelled = cancel_batch(session=session, batch_id=batch.id)  # the last unfinished job: the batch is final
        _, one = cancel_job(session=session, job_id=single.job_ids[0])
    assert (cancelled.finished, len(cancelled.hooks), one.finished, len(one.hooks)) == (1, 1, 1, 1)
    with sessions() as session:
        (batch_hook,) = deliveries_of(session=session, batch_id=batch.id)
        events = sorted(d["event"] for d in deliveries_of(session=session, batch_id=single.id))
    assert batch_hook["event"] == "batch.final" and events == ["job.final"]  # a single job: its own hook only


def test_an_attempt_is_claimed_once_retried_when_due_and_given_up_at_the_end(sessions) -> None:
    with sessions.begin() as session:
        batch = create_batch(session=session, items=[NewJob("a?")], callback=Callback("https://h.example/b"))
    (delivery,) = finish(sessions, batch.job_ids).hooks
    lease = timedelta(seconds=30)
    with sessions.begin() as session:
        first = claim_attempt(session=session, delivery_id=delivery, lease=lease)
        assert claim_attempt(session=session, delivery_id=delivery, lease=lease) is None  # under way: a duplicate posts nothing
    assert first is not None and (first.number, first.event) == (1, "batch.final")
    with sessions.begin() as session:
        record_attempt(session=session, delivery_id=delivery, status_code=503, error="HTTP 503", retry_in=60)
        assert claim_attempt(session=session, delivery_id=delivery, lease=lease) is None  # not due for a minute
        assert overdue_deliveries(session=session, older_than=timedelta(0)) == []
        session.execute(update(WebhookDelivery).values(next_attempt_at=now() - timedelta(seconds=5)))
        assert overdue_deliveries(session=session, older_than=timedelta(seconds=1)) == [delivery]  # its message was lost
        second = claim_attempt(session=session, delivery_id=delivery, lease=lease)
        assert second is not None and second.number == 2
        record_attempt(session=session, delivery_id=delivery, status_code=None, error="ConnectError: refused", retry_in=None)
        (row,) = deliveries_of(session=session, batch_id=batch.id)
    assert (row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == ("failed", 2, None, "ConnectError: refused")
    with sessions.begin() as session:
        assert claim_attempt(session=session, delivery_id=delivery, lease=lease) is None  # given up stays given up


def test_an_attempt_past_the_limit_posts_nothing_and_gives_up() -> None:
    """Attempts whose worker died mid-POST were counted but never recorded: the next claim past the limit ends it."""
    config = HookConfig(secret=b"k", max_attempts=2)
    late = Attempt("d" * 32, "b" * 32, None, "https://93.184.216.34/hook", 3)
    assert attempt_post(config, late, {"id": "b" * 32}) == (None, "gave up after 2 attempts", True)
    assert attempt_post(config, replace(late, number=1), None) == (None, "the batch or job no longer exists", True)


def test_status_prints_each_webhook_delivery_with_its_last_outcome(sessions) -> None:
    with sessions.begin() as session:
        batch = create_batch(session=session, items=[NewJob("a?")], callback=Callback("https://h.example/b"))
    (delivery,) = finish(sessions, batch.job_ids).hooks
    with sessions.begin() as session:
        claim_attempt(session=session, delivery_id=delivery, lease=timedelta(seconds=30))
        record_attempt(session=session, delivery_id=delivery, status_code=500, error="HTTP 500", retry_in=5)
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["status", batch.id], env={"CUBEQA_DATABASE_URL": url, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "webhook (batch) https://h.example/b: pending after 1 attempt(s), HTTP 500" in result.output


def test_https_goes_to_the_checked_address_with_the_url_host_as_tls_name(tmp_path) -> None:
    """The request connects to the address given (hooks.test resolves nowhere), sends the URL's host as SNI and checks
    the certificate against it: a self-signed one is refused, so nothing is posted."""
    import socket
    import ssl
    import subprocess
    import threading

    import httpx

    from tasks.hooks import post

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=hooks.test", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        connection, _ = listener.accept()
        with connection:
            try:
                context.wrap_socket(connection, server_side=True).close()
            except (ssl.SSLError, OSError):
                pass  # the client refuses the certificate mid-handshake

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    with listener, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        post(f"https://hooks.test:{port}/hook", "127.0.0.1", b"{}", {}, timeout=10)
    assert names == ["hooks.test"]
