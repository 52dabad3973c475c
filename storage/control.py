"""Cancel, pause, resume and retry: writes to the batch and job rows, which every stage reads at its boundary.

SQL decides a job's fate:
- cancel: the unfinished jobs become `cancelled`, a final state. Stages drop cancelled jobs before they work
  (`stage_control`), and a result write after the cancel claims nothing (`record_outcomes` claims jobs not final).
- pause: the batch is marked paused; the producer and the encode stage hold its jobs that have not started
  (`park`: status `paused`) instead of sending or encoding them. Work past the encode stage finishes.
- resume: the held jobs go back to `queued`, returned to the caller to send.
- retry: failed (and, if asked, refused) jobs go back to `queued` with their ids and no result, returned to the
  caller to send; the next delivery counts one more attempt, and the reconciler's attempt budget starts again.

Every function works in the caller's transaction; a control that does not fit the state raises ControlError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from storage.hooks import hooks_on_final
from storage.models import CANCELLED, DONE, FAILED, PAUSED, QUEUED, RUNNING, UNFINISHED, Batch, Job
from storage.quality import REFUSED_PATH
from storage.repository import (
    OUTCOME_COLUMNS,
    QUEUED_COLUMNS,
    Counts,
    QueuedJob,
    Recorded,
    chunks,
    move_counters,
    now,
    queued_job,
)

NO_SYNC = {"synchronize_session": False}  # bulk updates: no ORM objects of these rows are held in the session


class ControlError(Exception):
    """A control that does not fit the batch's or job's present state (the API answers 409)."""


@dataclass(frozen=True)
class StageControl:
    """What a stage reads about its micro-batch before it works: the jobs cancelled, and whether the batch is paused."""

    cancelled: frozenset[str]
    paused: bool


def stage_control(*, session: Session, batch_id: str, job_ids: Sequence[str]) -> StageControl:
    """The cancelled jobs among `job_ids` and whether their batch is paused, in one round trip."""
    rows = session.execute(
        select(Job.id, Job.status, Batch.paused_at).join(Batch, Batch.id == Job.batch_id)
        .where(Job.id.in_(list(job_ids)), Batch.id == batch_id)
    ).all()
    cancelled = frozenset(job_id for job_id, status, _ in rows if status == CANCELLED)
    return StageControl(cancelled, any(paused_at is not None for _, _, paused_at in rows))


def batch_stopped(*, session: Session, batch_id: str) -> bool:
    """Whether the batch is paused or cancelled: the producer sends no more of its jobs then."""
    row = session.execute(select(Batch.paused_at, Batch.cancelled_at).where(Batch.id == batch_id)).one_or_none()
    return row is not None and (row.paused_at is not None or row.cancelled_at is not None)


def park(*, session: Session, job_ids: Sequence[str]) -> list[str]:
    """Holds those of these jobs whose batch is paused (status `paused`) until it resumes; returns their ids.

    Conditional in SQL: once the resume has committed, a park changes nothing and the jobs run.
    """
    paused_batches = select(Batch.id).where(Batch.paused_at.is_not(None))
    held: list[str] = []
    for chunk in chunks(job_ids, 500):
        held += session.scalars(
            update(Job)
            .where(Job.id.in_(chunk), Job.status.in_((QUEUED, RUNNING)), Job.batch_id.in_(paused_batches))
            .values(status=PAUSED)
            .returning(Job.id)
            .execution_options(**NO_SYNC)
        ).all()
    return held


def controlled_batch(session: Session, batch_id: str) -> Batch:
    """The batch row, locked for this transaction on PostgreSQL (controls of one batch take turns)."""
    batch = session.scalar(select(Batch).where(Batch.id == batch_id).with_for_update())
    if batch is None:
        raise LookupError(f"no batch {batch_id!r}")
    return batch


def set_batch(session: Session, batch_id: str, **values: object) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id).values(**values).execution_options(**NO_SYNC))


def cancel_batch(*, session: Session, batch_id: str) -> Recorded:
    """Cancels every unfinished job of the batch and marks it cancelled; returns the jobs cancelled (none when it
    already was) and the webhook deliveries to send. ControlError for a batch that finished without a cancel."""
    batch = controlled_batch(session, batch_id)
    if batch.cancelled_at is None and batch.finished_at is not None:
        raise ControlError(f"batch {batch_id} is finished: nothing to cancel")
    at = now()
    if batch.cancelled_at is None:
        set_batch(session, batch_id, cancelled_at=at, paused_at=None)
    return cancel_where(session, Job.batch_id == batch_id, at)


def cancel_job(*, session: Session, job_id: str) -> tuple[str, Recorded]:
    """Cancels one unfinished job; returns its batch id and what the cancel recorded (0 jobs: it was cancelled
    already). ControlError for a job that is done or failed."""
    row = session.execute(select(Job.batch_id, Job.status).where(Job.id == job_id)).one_or_none()
    if row is None:
        raise LookupError(f"no job {job_id!r}")
    if row.status in (DONE, FAILED):
        raise ControlError(f"job {job_id} is {row.status}: nothing to cancel")
    return str(row.batch_id), cancel_where(session, Job.id == job_id, now())


def cancel_where(session: Session, condition: ColumnElement[bool], at: datetime) -> Recorded:
    """Cancels the unfinished jobs matching `condition` and counts them in their batches' counters; returns how
    many and the webhook deliveries of the jobs and batches it made final (to send once this commits)."""
    cancelled = session.execute(
        update(Job)
        .where(condition, Job.status.in_(UNFINISHED))
        .values(status=CANCELLED, finished_at=at)
        .returning(Job.id, Job.batch_id, Job.callback_url)
        .execution_options(**NO_SYNC)
    ).tuples().all()
    deltas: dict[str, Counts] = {}
    for _, batch_id, _ in cancelled:
        deltas[batch_id] = deltas.get(batch_id, Counts()) + Counts(cancelled=1)
    settled = move_counters(session=session, deltas=deltas, at=at)
    return Recorded(len(cancelled), hooks_on_final(session=session, jobs=cancelled, batches=settled))


def pause_batch(*, session: Session, batch_id: str) -> int:
    """Marks the batch paused (again: a no-op); returns its jobs not yet started, which now wait.
    ControlError for a cancelled or finished batch."""
    batch = controlled_batch(session, batch_id)
    if batch.cancelled_at is not None or batch.finished_at is not None:
        raise ControlError(f"batch {batch_id} is {'cancelled' if batch.cancelled_at else 'finished'}: nothing to pause")
    if batch.paused_at is None:
        set_batch(session, batch_id, paused_at=now())
    waiting = select(func.count()).where(Job.batch_id == batch_id, Job.status.in_((QUEUED, PAUSED)))
    return session.scalar(waiting) or 0


def resume_batch(*, session: Session, batch_id: str) -> list[QueuedJob]:
    """Clears the batch's pause and returns its held jobs, queued again, for the caller to send.
    ControlError for a cancelled batch."""
    batch = controlled_batch(session, batch_id)
    if batch.cancelled_at is not None:
        raise ControlError(f"batch {batch_id} is cancelled: nothing to resume")
    if batch.paused_at is not None:
        set_batch(session, batch_id, paused_at=None)
    return unpark(session, Job.batch_id == batch_id)


def orphaned_parks(*, session: Session) -> list[QueuedJob]:
    """Held jobs whose batch is not paused (a park that raced a resume), queued again for the reconciler to send."""
    return unpark(session, Job.batch_id.in_(select(Batch.id).where(Batch.paused_at.is_(None))))


def unpark(session: Session, condition: ColumnElement[bool]) -> list[QueuedJob]:
    """Held jobs matching `condition` back to `queued`, as never sent (they hold no message)."""
    rows = session.execute(
        update(Job)
        .where(condition, Job.status == PAUSED)
        .values(status=QUEUED, dispatched_at=None)
        .returning(*QUEUED_COLUMNS)
        .execution_options(**NO_SYNC)
    ).all()
    return [queued_job(row) for row in rows]


def retry_batch(*, session: Session, batch_id: str, failed: bool = True, refused: bool = False) -> list[QueuedJob]:
    """Makes new attempts of the batch's failed jobs (and refused ones, if asked): same ids, results cleared, queued
    again and returned for the caller to send; answered jobs are never touched. ControlError for a cancelled batch."""
    if not (failed or refused):
        raise ControlError("nothing to retry: ask for failed jobs, refused jobs or both")
    batch = controlled_batch(session, batch_id)
    if batch.cancelled_at is not None:
        raise ControlError(f"batch {batch_id} is cancelled: nothing to retry")
    of_batch = Job.batch_id == batch_id
    again_failed = requeue(session, of_batch & (Job.status == FAILED)) if failed else []
    was_refused = (Job.status == DONE) & (Job.decoder_path == REFUSED_PATH)
    again_refused = requeue(session, of_batch & was_refused) if refused else []
    if again_failed or again_refused:
        set_batch(
            session, batch_id, finished_at=None, failed_count=Batch.failed_count - len(again_failed),
            done_count=Batch.done_count - len(again_refused),
        )
    return again_failed + again_refused


def requeue(session: Session, condition: ColumnElement[bool]) -> list[QueuedJob]:
    """Final jobs matching `condition` back to `queued` with no result and a fresh attempt budget."""
    cleared = {name: None for name in OUTCOME_COLUMNS if name != "status"}
    rows = session.execute(
        update(Job)
        .where(condition)
        .values(status=QUEUED, attempt_base=Job.attempts, dispatched_at=None, started_at=None, finished_at=None,
                **cleared)
        .returning(*QUEUED_COLUMNS)
        .execution_options(**NO_SYNC)
    ).all()
    return [queued_job(row) for row in rows]
