"""Webhook deliveries in the store: queued where a batch or job becomes final, claimed one attempt at a time, every
attempt's outcome recorded.

A delivery row is an outbox entry: it is written in the transaction that makes its batch or job final, so a crash
between that commit and sending the task loses nothing (the reconciler re-sends deliveries whose message is lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from storage.models import DELIVERED, FAILED, PENDING, WebhookDelivery, new_id, now
from storage.summary import as_utc

BATCH_EVENT, JOB_EVENT = "batch.final", "job.final"  # the X-Cubeqa-Event header of each kind
ERROR_CHARS = 500


@dataclass(frozen=True)
class Callback:
    """Where a submission's final summaries are posted: the batch's once every job is final, or each job's
    (`each_job`: a single job submitted on its own)."""

    url: str
    each_job: bool = False


def hooks_on_final(
    *, session: Session, jobs: Sequence[tuple[str, str, str | None]] = (), batches: Sequence[tuple[str, str | None]] = ()
) -> list[str]:
    """Queues one delivery per job (id, batch id, callback URL) and batch (id, callback URL) that has just become final
    and carries a URL, in the caller's transaction; returns their ids, to send once it commits (tasks.hooks.send).

    The one trigger of webhooks: call it wherever a job or batch reaches a final state, with the rows that changed.
    """
    at = now()
    targets: list[tuple[str, str | None, str]] = [(batch_id, job_id, url) for job_id, batch_id, url in jobs if url]
    targets += [(batch_id, None, url) for batch_id, url in batches if url]
    if not targets:
        return []
    ids = [new_id() for _ in targets]
    session.execute(insert(WebhookDelivery), [
        {"id": delivery_id, "batch_id": batch_id, "job_id": job_id, "url": url, "status": PENDING, "attempts": 0,
         "created_at": at, "next_attempt_at": at}
        for delivery_id, (batch_id, job_id, url) in zip(ids, targets)
    ])
    return ids


@dataclass(frozen=True)
class Attempt:
    """A claimed attempt of one delivery: where to post what, and which attempt this is (1 for the first)."""

    delivery_id: str
    batch_id: str
    job_id: str | None
    url: str
    number: int

    @property
    def event(self) -> str:
        return event_of(self.job_id)


def event_of(job_id: str | None) -> str:
    """A delivery's event: the batch's final summary, or one job's."""
    return BATCH_EVENT if job_id is None else JOB_EVENT


def claim_attempt(*, session: Session, delivery_id: str, lease: timedelta) -> Attempt | None:
    """Takes the next attempt of a delivery that is pending, due and not under way, and holds it for `lease`; None
    when it was delivered, given up, is not due yet or another worker holds it (a duplicate message is a no-op).

    The attempt is counted when claimed: one that dies mid-POST still counts towards the limit.
    """
    at = now()
    row = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= at,
            or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < at),
        )
        .values(attempts=WebhookDelivery.attempts + 1, leased_until=at + lease)
        .returning(WebhookDelivery.batch_id, WebhookDelivery.job_id, WebhookDelivery.url, WebhookDelivery.attempts)
    ).one_or_none()
    return None if row is None else Attempt(delivery_id, *row)


def record_attempt(
    *, session: Session, delivery_id: str, status_code: int | None, error: str | None, retry_in: float | None
) -> None:
    """One attempt's outcome: delivered (no error), due again in `retry_in` seconds, or given up (`retry_in` None)."""
    at = now()
    values: dict[str, Any] = {"last_status_code": status_code, "last_error": None if error is None else error[:ERROR_CHARS],
                              "leased_until": None}
    if error is None:
        values.update(status=DELIVERED, delivered_at=at)
    elif retry_in is None:
        values.update(status=FAILED)
    else:
        values.update(next_attempt_at=at + timedelta(seconds=retry_in))
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))


def overdue_deliveries(*, session: Session, older_than: timedelta, limit: int = 1000) -> list[str]:
    """Pending deliveries due for more than `older_than` and not under way: their message was lost (Redis emptied, a
    worker gone), so the reconciler sends them again."""
    at = now()
    return list(session.scalars(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at < at - older_than,
            or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < at),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    ))


def deliveries_of(*, session: Session, batch_id: str) -> list[dict[str, Any]]:
    """The deliveries of a batch and its jobs, oldest first, as plain dicts (the API's WebhookDeliveryPublic)."""
    rows = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id).order_by(WebhookDelivery.created_at)
    ).all()
    return [
        {"id": d.id, "event": event_of(d.job_id), "batch_id": d.batch_id, "job_id": d.job_id,
         "url": d.url, "status": d.status, "attempts": d.attempts, "last_status_code": d.last_status_code,
         "last_error": d.last_error, "created_at": as_utc(d.created_at), "next_attempt_at": as_utc(d.next_attempt_at),
         "delivered_at": as_utc(d.delivered_at) if d.delivered_at else None}
        for d in rows
    ]
