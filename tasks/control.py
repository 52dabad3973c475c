"""Cancel, pause, resume and retry, as the CLI and the API call them: the store's control (storage.control) in one
transaction, then the sends a resume or a retry needs (tasks.producer.dispatch)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.control import cancel_batch, cancel_job, pause_batch, resume_batch, retry_batch
from storage.repository import QueuedJob
from tasks import hooks
from tasks.producer import dispatch

T = TypeVar("T")
ATTEMPTS = 3  # a control that loses a deadlock to a worker's result write (PostgreSQL aborts one side) runs again
LOST_RACE = {"40P01", "40001"}  # PostgreSQL's deadlock_detected, serialization_failure


@dataclass(frozen=True)
class ControlReport:
    """What a control did: to which batch, how many jobs it moved, how many of them it sent."""

    batch_id: str
    action: str  # cancel, pause, resume, retry
    jobs: int  # jobs cancelled, jobs now waiting (pause), jobs resumed, jobs retried
    sent: int = 0  # of them, sent to the queues now (resume, retry)


def in_transaction(sessions: sessionmaker[Session], write: Callable[[Session], T]) -> T:
    """`write` in a transaction of its own, run again when PostgreSQL aborted it to break a deadlock."""
    attempt = 1
    while True:
        try:
            with sessions.begin() as session:
                return write(session)
        except OperationalError as exc:
            if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in LOST_RACE:
                raise
        time.sleep(0.05 * attempt)
        attempt += 1


def cancel(sessions: sessionmaker[Session], batch_id: str) -> ControlReport:
    """Cancels the batch's unfinished jobs; no result is written for them after this returns. The webhooks of what
    it made final are sent once it commits."""
    cancelled = in_transaction(sessions, lambda session: cancel_batch(session=session, batch_id=batch_id))
    hooks.send(cancelled.hooks)
    return ControlReport(batch_id, "cancel", cancelled.finished)


def cancel_one(sessions: sessionmaker[Session], job_id: str) -> ControlReport:
    """Cancels one unfinished job (and sends the webhooks of what that made final)."""
    batch_id, cancelled = in_transaction(sessions, lambda session: cancel_job(session=session, job_id=job_id))
    hooks.send(cancelled.hooks)
    return ControlReport(batch_id, "cancel", cancelled.finished)


def pause(sessions: sessionmaker[Session], batch_id: str) -> ControlReport:
    """Pauses the batch: no new micro-batch of it is sent or encoded until it resumes."""
    waiting = in_transaction(sessions, lambda session: pause_batch(session=session, batch_id=batch_id))
    return ControlReport(batch_id, "pause", waiting)


def resume(sessions: sessionmaker[Session], batch_id: str, micro_batch: int) -> ControlReport:
    """Resumes the batch and sends the jobs its pause held. BrokerUnavailable: resumed, the reconciler sends them."""
    jobs = in_transaction(sessions, lambda session: resume_batch(session=session, batch_id=batch_id))
    return sent_report(sessions, batch_id, "resume", jobs, micro_batch)


def retry(
    sessions: sessionmaker[Session], batch_id: str, micro_batch: int, *, failed: bool = True, refused: bool = False
) -> ControlReport:
    """New attempts of the batch's failed (and refused) jobs, sent now. BrokerUnavailable: stored, the reconciler
    sends them."""
    jobs = in_transaction(
        sessions, lambda session: retry_batch(session=session, batch_id=batch_id, failed=failed, refused=refused)
    )
    return sent_report(sessions, batch_id, "retry", jobs, micro_batch)


def sent_report(
    sessions: sessionmaker[Session], batch_id: str, action: str, jobs: list[QueuedJob], micro_batch: int
) -> ControlReport:
    return ControlReport(batch_id, action, len(jobs), dispatch(sessions, jobs, micro_batch) if jobs else 0)
