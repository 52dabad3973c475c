"""Webhooks: the callback URL guard (SSRF), the signature, and the `cubeqa.deliver_hook` task on the `hooks` queue.

A stage task that makes a batch or job final only queues its delivery (storage.hooks, in the same transaction) and
sends the task (`send`); the hooks worker makes each attempt: it claims it in SQL, resolves the host and checks every
address again (a name may point elsewhere since submission), connects to the checked address, POSTs the summary
signed with HMAC-SHA256 over `timestamp.body`, and records the outcome. A failed attempt is sent again after an
exponential back-off; a lost message is re-sent by the reconciler (`storage.hooks.overdue_deliveries`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from celery import Task
from celery.exceptions import Reject
from sqlalchemy.orm import Session, sessionmaker

from storage.hooks import Attempt, claim_attempt, record_attempt
from storage.repository import job_view
from storage.summary import batch_summary
from tasks import runtime
from tasks.app import HOOK_TASK, HOOKS_QUEUE, app
from tasks.errors import BROKER_DOWN, DATABASE_DOWN

log = logging.getLogger(__name__)
DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeCallback(ValueError):
    """A callback URL this service refuses to post to: its scheme, its form, or an address that is not public."""


class UnresolvableCallback(UnsafeCallback):
    """A callback host that does not resolve (now): refused at submission, retried at delivery."""


@dataclass(frozen=True)
class HookPolicy:
    """Which callback URLs may be posted to: https to public addresses only, unless a setting allows more."""

    allow_http: bool = False  # CUBEQA_WEBHOOK_ALLOW_HTTP
    allow_private: bool = False  # CUBEQA_WEBHOOK_ALLOW_PRIVATE: loopback, private and link-local addresses too

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_http else ("https",)


def check_callback(url: str, policy: HookPolicy) -> list[str]:
    """The addresses the URL's host resolves to, once its scheme and every address pass `policy`; raises
    UnsafeCallback saying why not (UnresolvableCallback when the host does not resolve)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
        raise UnsafeCallback(f"callback URL: {exc}") from exc
    if parts.scheme.lower() not in policy.schemes:
        raise UnsafeCallback(f"callback URL scheme {parts.scheme or '(none)'!r} is not allowed: use {' or '.join(policy.schemes)}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeCallback("callback URL must not carry a user name or password")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
    except ValueError as exc:
        raise UnsafeCallback(f"callback URL port: {exc}") from exc
    host = parts.hostname
    if not host:
        raise UnsafeCallback("callback URL has no host")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableCallback(f"callback host {host!r} does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        check_address(host, address, policy)
    return addresses


def check_address(host: str, address: str, policy: HookPolicy) -> None:
    """Raises UnsafeCallback for an address a webhook must not reach: multicast or unspecified always; loopback,
    private, link-local and other non-global ones unless the policy allows private addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 link-local address may carry a %scope
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified:
        raise UnsafeCallback(f"callback host {host!r} resolves to {ip}, which is not a host address")
    if not ip.is_global and not policy.allow_private:
        raise UnsafeCallback(
            f"callback host {host!r} resolves to {ip}, a loopback, private or link-local address "
            "(refused unless CUBEQA_WEBHOOK_ALLOW_PRIVATE is set)"
        )


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Cubeqa-Signature header: `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under the secret."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class HookConfig:
    """What the hooks worker delivers with: the signing secret, the URL policy, the timeout and the retry schedule."""

    secret: bytes
    policy: HookPolicy = HookPolicy()
    timeout: float = 10.0  # seconds to connect, to send, and to get the answer, each
    max_attempts: int = 8
    backoff: float = 5.0  # seconds before the second attempt; doubling after each failure
    backoff_max: float = 600.0

    def retry_in(self, attempts: int) -> float | None:
        """Seconds before the next attempt after `attempts` failed ones; None once they are all spent."""
        if attempts >= self.max_attempts:
            return None
        return min(self.backoff * 2 ** (attempts - 1), self.backoff_max)

    @property
    def lease(self) -> timedelta:
        """How long a claimed attempt is held: past its three timeouts, so no second worker posts while it runs."""
        return timedelta(seconds=3 * self.timeout + 5)


def payload_of(session: Session, attempt: Attempt) -> dict[str, Any] | None:
    """The summary GET /v1/batches/{id} or GET /v1/jobs/{id} returns, read now (None: the row is gone)."""
    if attempt.job_id is not None:
        return job_view(session=session, job_id=attempt.job_id)
    summary = batch_summary(session=session, batch_id=attempt.batch_id)
    return None if summary is None else summary.to_dict()


def headers_of(secret: bytes, attempt: Attempt, body: bytes) -> dict[str, str]:
    """The request's headers: the event, the delivery id (the same on every attempt), the timestamp and signature."""
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json", "User-Agent": "cubeqa-webhooks", "X-Cubeqa-Event": attempt.event,
        "X-Cubeqa-Delivery": attempt.delivery_id, "X-Cubeqa-Attempt": str(attempt.number),
        "X-Cubeqa-Timestamp": str(timestamp), "X-Cubeqa-Signature": signature(secret, timestamp, body),
    }


def post(url: str, address: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POSTs to `url` through the checked `address` (no second lookup a DNS answer could change), no redirects, no
    proxies from the environment; returns the status code without reading the response body."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": parts.hostname} if parts.scheme.lower() == "https" else None  # TLS checks the name
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        with client.stream("POST", target, content=body, headers={**headers, "Host": parts.netloc},
                           extensions=extensions) as response:
            return response.status_code


def attempt_post(config: HookConfig, attempt: Attempt, payload: dict[str, Any] | None) -> tuple[int | None, str | None, bool]:
    """One POST: (the status code, the error or None once delivered, whether to give up now)."""
    if payload is None:
        return None, "the batch or job no longer exists", True
    if attempt.number > config.max_attempts:  # earlier attempts died mid-POST (their worker killed): none is recorded
        return None, f"gave up after {config.max_attempts} attempts", True
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        addresses = check_callback(attempt.url, config.policy)
    except UnresolvableCallback as exc:
        return None, str(exc), False
    except UnsafeCallback as exc:  # the policy will not change between attempts
        return None, f"refused: {exc}", True
    try:
        status = post(attempt.url, addresses[0], body, headers_of(config.secret, attempt, body), config.timeout)
    except Exception as exc:  # whatever the receiver's address or answer makes httpx raise fails this attempt only
        return None, f"{type(exc).__name__}: {exc}", False
    return status, None if 200 <= status < 300 else f"HTTP {status}", False


def deliver(sessions: sessionmaker[Session], config: HookConfig, delivery_id: str) -> float | None:
    """One attempt of a delivery: claim it, post the signed summary, record the outcome. Returns the seconds until
    the next attempt, None when there is none (delivered, given up, or not this call's to make)."""
    with sessions.begin() as session:
        attempt = claim_attempt(session=session, delivery_id=delivery_id, lease=config.lease)
        payload = None if attempt is None else payload_of(session, attempt)
    if attempt is None:
        return None
    status, error, give_up = attempt_post(config, attempt, payload)
    retry = None if error is None or give_up else config.retry_in(attempt.number)
    with sessions.begin() as session:
        record_attempt(session=session, delivery_id=delivery_id, status_code=status, error=error, retry_in=retry)
    log.info("webhook %s %s attempt %d: %s", delivery_id, attempt.event, attempt.number, error or f"HTTP {status}")
    return retry


@app.task(name=HOOK_TASK, bind=True, acks_late=True, autoretry_for=DATABASE_DOWN, retry_backoff=2, retry_backoff_max=60,
          retry_jitter=True, max_retries=12)
def deliver_hook(self: Task, delivery_id: str) -> None:
    """One attempt of a webhook delivery (the hooks worker's config is its stage); a failure schedules the next."""
    rt = runtime.current()
    try:
        config = rt.stage(HOOKS_QUEUE)
    except runtime.StageUnavailable as exc:  # no secret: back to the queue for a worker that can sign
        raise Reject(str(exc), requeue=True) from exc
    retry = deliver(rt.sessions, config, delivery_id)
    if retry is not None:
        deliver_hook.apply_async((delivery_id,), countdown=retry)


def send(delivery_ids: Sequence[str]) -> int:
    """A task per delivery on the hooks queue; returns how many were sent. A broker that refuses is logged, not
    raised: the deliveries are stored and the reconciler sends them (the results they announce are committed)."""
    for sent, delivery_id in enumerate(delivery_ids):
        try:
            deliver_hook.apply_async((delivery_id,))
        except BROKER_DOWN as exc:
            log.warning("%d webhook deliveries not sent (the reconciler will): %s", len(delivery_ids) - sent, exc)
            return sent
    return len(delivery_ids)
