"""The store's operations: create batches, move jobs through their states, record results once, summarise."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.hooks import Callback, hooks_on_final
from storage.models import (
    DONE,
    FAILED,
    FINAL,
    METRIC_COLUMNS,
    QUEUED,
    RUNNING,
    STATUSES,
    UNFINISHED,
    Batch,
    Job,
    ModelVersion,
    metric_columns,
    new_id,
    now,
)
from storage.quality import RIGHT_COLUMN, right_answer
from storage.summary import BatchSummary, batch_summary, count_batches, list_batches

JOB_TABLE = cast(Table, Job.__table__)  # the Core table, for executemany inserts and updates


@dataclass(frozen=True)
class NewJob:
    """A validated input item."""

    question: str
    reference: str | None = None
    line: int | None = None
    alt_references: tuple[str, ...] | None = None  # other sentences that count as right beside the reference


@dataclass(frozen=True)
class Pin:
    """The knowledge bank a batch's jobs decode against, pinned to one version, and their confidence threshold.

    An empty pin (no bank) decodes against the bundle's own bank; a None threshold is the worker's.
    """

    bank: str | None = None
    bank_version: str | None = None
    min_confidence: float | None = None
    rerank: bool = False  # the chain ends with the rerank stage (resolved at submission: cubeqa.wiring.pin_bank)


@dataclass(frozen=True)
class QueuedJob:
    """What a stage chain needs to run one job."""

    id: str
    batch_id: str
    question: str
    reference: str | None
    pin: Pin = Pin()


@dataclass(frozen=True)
class JobOutcome:
    """A stage chain's final word on one job: an answer, or the error that failed it alone."""

    job_id: str
    answer: str | None = None
    decoder_path: str | None = None
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    confidence: float | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class CreatedBatch:
    """What `create_batch` wrote: the batch id, whether it is new, and its jobs in input order (to send, if new)."""

    id: str
    created: bool  # False: the key named an existing batch and nothing was written
    jobs: list[QueuedJob]

    @property
    def job_ids(self) -> list[str]:
        return [job.id for job in self.jobs]


def create_batch(
    *, session: Session, items: Sequence[NewJob], key: str | None = None, source: str | None = None, pin: Pin = Pin(),
    callback: Callback | None = None,
) -> CreatedBatch:
    """Adds a batch and its queued jobs, each recording `pin`, to the caller's transaction; returns its id and jobs.

    With a key that already names a batch, nothing is written and that batch comes back (created False). A concurrent insert of the same key makes the caller's commit raise IntegrityError.
    A `callback` URL goes on the batch, or on each job (`each_job`): its final summary is posted there (storage.hooks).
    """
    if key is not None:
        existing = find_batch_by_key(session=session, key=key)
        if existing:
            return CreatedBatch(existing, False, jobs_of(session=session, batch_id=existing))
    batch_id = new_id()
    created_at = now()
    jobs = [QueuedJob(new_id(), batch_id, item.question, item.reference, pin) for item in items]
    batch_url, job_url = (None, None) if callback is None else (None, callback.url) if callback.each_job else (callback.url, None)
    session.add(Batch(id=batch_id, key=key, source=source, total=len(items), done_count=0, failed_count=0, created_at=created_at,
                      callback_url=batch_url))
    session.flush()
    if items:  # one executemany, not an ORM object per job
        session.execute(
            insert(JOB_TABLE),
            [
                {
                    "id": job.id, "batch_id": batch_id, "position": i, "line": item.line, "question": item.question,
                    "reference": item.reference, "alt_references": list(item.alt_references or ()) or None,
                    "status": QUEUED, "attempts": 0, "dispatches": 0, "created_at": created_at,
                    "bank": pin.bank, "bank_version": pin.bank_version, "min_confidence": pin.min_confidence,
                    "rerank": pin.rerank, "callback_url": job_url,
                }
                for i, (job, item) in enumerate(zip(jobs, items))
            ],
        )
    return CreatedBatch(batch_id, True, jobs)


def find_batch_by_key(*, session: Session, key: str) -> str | None:
    return session.scalar(select(Batch.id).where(Batch.key == key))


def unfinished_jobs(*, session: Session, batch_id: str) -> list[QueuedJob]:
    """Jobs of a batch not yet in a final state, in input order."""
    return jobs_of(session=session, batch_id=batch_id, unfinished=True)


def jobs_of(*, session: Session, batch_id: str, unfinished: bool = False) -> list[QueuedJob]:
    """A batch's jobs (only those not yet final, if `unfinished`) in input order."""
    query = select(*QUEUED_COLUMNS).where(Job.batch_id == batch_id)
    if unfinished:
        query = query.where(Job.status.in_(UNFINISHED))
    return [queued_job(row) for row in session.execute(query.order_by(Job.position)).all()]


QUEUED_COLUMNS = (
    Job.id, Job.batch_id, Job.question, Job.reference, Job.bank, Job.bank_version, Job.min_confidence, Job.rerank,
)


def queued_job(row: Sequence[Any]) -> QueuedJob:
    """A QueuedJob from a row of QUEUED_COLUMNS: the pin stored with the job travels with every (re-)send."""
    return QueuedJob(row[0], row[1], row[2], row[3], Pin(row[4], row[5], row[6], bool(row[7])))


def mark_dispatched(*, session: Session, job_ids: Sequence[str]) -> None:
    """Records that these jobs were (re-)sent to the queue."""
    sent_at = now()
    for chunk in chunks(job_ids, 500):
        session.execute(update(Job).where(Job.id.in_(chunk)).values(dispatched_at=sent_at, dispatches=Job.dispatches + 1))


def mark_running(*, session: Session, job_ids: Sequence[str]) -> None:
    """The encode stage picked these jobs up: one more delivery attempt each (final jobs stay final)."""
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(UNFINISHED))
        .values(status=RUNNING, attempts=Job.attempts + 1, started_at=now())
    )


@dataclass(frozen=True)
class Recorded:
    """What `record_outcomes` changed: how many jobs it finished, and the webhook deliveries that queued (to send
    once the transaction commits: tasks.hooks.send)."""

    finished: int
    hooks: list[str] = field(default_factory=list)


def record_outcomes(*, session: Session, outcomes: Sequence[JobOutcome], model_version: str | None) -> Recorded:
    """Writes final results in the caller's transaction; returns how many jobs this call finished and the webhook
    deliveries of the jobs and batches it made final (storage.hooks.hooks_on_final).

    Idempotent: a job already done, failed or cancelled is left as it is and not counted again, so a
    redelivered or retried task never creates a second result or moves a batch counter twice, and no
    result lands on a job whose cancel committed first (the claim is conditional in SQL: a racing cancel
    and write serialise on the job's row). One UPDATE claims the jobs that are not final yet (and locks
    them), one executemany writes their values: a micro-batch of 64 costs three statements, not 64.
    """
    finished_at = now()
    by_id = {outcome.job_id: outcome for outcome in outcomes}
    if model_version:
        ensure_model_version(session, model_version)
    claimed = session.execute(
        update(Job)
        .where(Job.id.in_(list(by_id)), Job.status.notin_(FINAL))
        .values(finished_at=finished_at)
        .returning(Job.id, Job.batch_id, Job.reference, Job.alt_references, Job.callback_url)
    ).all()
    if not claimed:
        return Recorded(0)  # all already final: this is a redelivery
    session.execute(OUTCOME_UPDATE, [
        outcome_row(by_id[job_id], model_version, ref, alts or ()) for job_id, _, ref, alts, _ in claimed
    ])
    per_batch: dict[str, Counts] = {}
    for job_id, batch_id, *_ in claimed:
        per_batch[batch_id] = per_batch.get(batch_id, Counts()) + (
            Counts(done=1) if by_id[job_id].error is None else Counts(failed=1)
        )
    settled = move_counters(session=session, deltas=per_batch, at=finished_at)
    jobs = [(job_id, batch_id, url) for job_id, batch_id, *_, url in claimed]
    return Recorded(len(claimed), hooks_on_final(session=session, jobs=jobs, batches=settled))


@dataclass(frozen=True)
class Counts:
    """Changes to a batch's done, failed and cancelled counters."""

    done: int = 0
    failed: int = 0
    cancelled: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.done + other.done, self.failed + other.failed, self.cancelled + other.cancelled)


def move_counters(*, session: Session, deltas: dict[str, Counts], at: datetime) -> list[tuple[str, str | None]]:
    """Moves each batch's counters by its deltas, in one lock order for every writer, then settles them
    (`settle_batches`); returns the batches that reached their final state in this call, with their callback URLs."""
    for batch_id in sorted(deltas):
        delta = deltas[batch_id]
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                done_count=Batch.done_count + delta.done, failed_count=Batch.failed_count + delta.failed,
                cancelled_count=Batch.cancelled_count + delta.cancelled,
            )
        )
    return settle_batches(session=session, batch_ids=sorted(deltas), at=at)


def settle_batches(*, session: Session, batch_ids: Sequence[str], at: datetime) -> list[tuple[str, str | None]]:
    """The one place a batch reaches its final state: every job done, failed or cancelled (its counters say so).

    Sets `finished_at` once and returns the batches that became final in this call with their callback URLs, for
    the webhooks (storage.hooks.hooks_on_final); a retry (storage.control.retry_batch) reopens a batch, and it
    settles here again.
    """
    if not batch_ids:
        return []
    complete = Batch.done_count + Batch.failed_count + Batch.cancelled_count >= Batch.total
    settled = session.execute(
        update(Batch)
        .where(Batch.id.in_(list(batch_ids)), Batch.finished_at.is_(None), complete)
        .values(finished_at=at)
        .returning(Batch.id, Batch.callback_url)
    ).tuples().all()
    return sorted(settled)


OUTCOME_COLUMNS = (
    "status", "error", "answer", "decoder_path", "score", "metrics", "timings_ms", "hosts", "model_version", "confidence", "evidence",
    *METRIC_COLUMNS,
)
OUTCOME_UPDATE = (
    update(JOB_TABLE)
    .where(JOB_TABLE.c.id == bindparam("job_id"))
    .values({name: bindparam(f"new_{name}") for name in OUTCOME_COLUMNS})
)


def outcome_row(
    outcome: JobOutcome, model_version: str | None, reference: str | None = None, alternatives: Sequence[str] = (),
) -> dict[str, Any]:
    """The parameters of OUTCOME_UPDATE for one job: its answer and metrics (JSON and METRIC_COLUMNS), or its error.

    The metrics gain `right_answer` (storage.quality.right_answer: the reference or one of its `alternatives`) when
    the job was answered and has a reference."""
    done = outcome.error is None
    if done:
        right = right_answer(
            answer=outcome.answer, reference=reference, decoder_path=outcome.decoder_path, alternatives=alternatives,
        )
        if right is not None:
            outcome = replace(outcome, metrics={**(outcome.metrics or {}), RIGHT_COLUMN: right})
    values = {
        "status": DONE if done else FAILED,
        "error": outcome.error,
        "answer": outcome.answer if done else None,
        "decoder_path": outcome.decoder_path if done else None,
        "score": outcome.score if done else None,
        "metrics": outcome.metrics if done else None,
        "timings_ms": outcome.timings_ms if done else outcome.timings_ms or None,
        "hosts": outcome.hosts if done else outcome.hosts or None,
        "model_version": model_version if done else None,
        "confidence": outcome.confidence if done else None,
        "evidence": outcome.evidence if done else None,
        **metric_columns(outcome.metrics if done else None),
    }
    return {"job_id": outcome.job_id, **{f"new_{name}": value for name, value in values.items()}}


def ensure_model_version(session: Session, version: str) -> None:
    """Inserts the model version row unless it exists (safe under concurrent writers)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(ModelVersion).values(id=version, first_seen_at=now()).on_conflict_do_nothing())


def stale_jobs(
    *, session: Session, older_than: timedelta, queues_idle: bool, limit: int = 10_000
) -> list[tuple[QueuedJob, int]]:
    """Unfinished jobs that look lost, with their attempt counts (since their last retry).

    A job looks lost when nothing happened to it for `older_than` (last sent, or picked up by the encode
    stage) and its message cannot still be waiting: it was never sent, or the stage queues are idle, or it
    was overtaken (the queues are FIFO, so a job sent after it that finished `older_than` ago means its
    message is gone). A long but healthy backlog is therefore not re-sent.
    """
    cutoff = now() - older_than
    sent = func.coalesce(Job.dispatched_at, Job.created_at)
    seen = case((Job.started_at > sent, Job.started_at), else_=sent)
    conditions = [Job.status.in_((QUEUED, RUNNING)), seen < cutoff]
    if not queues_idle:
        frontier = session.scalar(select(func.max(Job.dispatched_at)).where(Job.finished_at < cutoff))
        never_sent = Job.dispatched_at.is_(None)
        conditions.append(never_sent if frontier is None else or_(never_sent, Job.dispatched_at < frontier))
    rows = session.execute(
        select(*QUEUED_COLUMNS, Job.attempts - Job.attempt_base)
        .where(*conditions)
        .order_by(Job.batch_id, Job.position)
        .limit(limit)
    ).all()
    return [(queued_job(row), row[-1]) for row in rows]


def waiting_jobs(
    *, session: Session, older_than: timedelta, batch_id: str | None = None
) -> tuple[int, datetime | None]:
    """Jobs still queued (no encode worker has taken them) more than `older_than` after they were last sent,
    and when the oldest of them was sent (None: there are none)."""
    sent = func.coalesce(Job.dispatched_at, Job.created_at)
    conditions = [Job.status == QUEUED, sent < now() - older_than]
    if batch_id is not None:
        conditions.append(Job.batch_id == batch_id)
    count, oldest = session.execute(select(func.count(), func.min(sent)).where(*conditions)).one()
    return int(count), oldest


def job_view(*, session: Session, job_id: str) -> dict[str, Any] | None:
    """One job as a plain dict (None if unknown)."""
    job = session.get(Job, job_id)
    return None if job is None else job_dict(job)


def iter_results(*, session: Session, batch_id: str, chunk: int = 500) -> Iterator[dict[str, Any]]:
    """A batch's jobs in input order, streamed from the database in chunks (while the session stays open)."""
    result = session.execute(select(Job).where(Job.batch_id == batch_id).order_by(Job.position).execution_options(yield_per=chunk))
    for job in result.scalars():
        yield job_dict(job)


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "batch_id": job.batch_id,
        "line": job.line,
        "question": job.question,
        "reference": job.reference,
        "alt_references": job.alt_references,
        "status": job.status,
        "answer": job.answer,
        "decoder_path": job.decoder_path,
        "score": job.score,
        "error": job.error,
        "attempts": job.attempts,
        "metrics": job.metrics or {},
        "timings_ms": job.timings_ms or {},
        "hosts": job.hosts or {},
        "model_version": job.model_version,
        "bank": job.bank,
        "bank_version": job.bank_version,
        "min_confidence": job.min_confidence,
        "rerank": job.rerank,
        "confidence": job.confidence,
        "evidence": job.evidence,
    }


def status_counts(*, session: Session) -> dict[str, int]:
    """Jobs by status across all batches (for /metrics)."""
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return counts


def recent_stage_timings(*, session: Session, limit: int = 1000) -> list[dict[str, float]]:
    """Per-stage timings of the most recently finished jobs (for latency gauges)."""
    rows = session.scalars(select(Job.timings_ms).where(Job.status == DONE).order_by(Job.finished_at.desc()).limit(limit)).all()
    return [row for row in rows if row]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = [
    "BatchSummary",
    "Counts",
    "CreatedBatch",
    "JobOutcome",
    "NewJob",
    "Pin",
    "QueuedJob",
    "Recorded",
    "batch_summary",
    "count_batches",
    "create_batch",
    "iter_results",
    "job_view",
    "jobs_of",
    "list_batches",
    "mark_dispatched",
    "mark_running",
    "move_counters",
    "record_outcomes",
    "settle_batches",
    "stale_jobs",
    "status_counts",
    "unfinished_jobs",
]
