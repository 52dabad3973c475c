"""The store's operations: create batches, move jobs through their states, record results once, summarise."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.models import DONE, FAILED, FINAL, QUEUED, RUNNING, STATUSES, Batch, Job, ModelVersion

METRIC_NAMES = ("cube_cos", "identity_cos", "e2e_cos", "decode_fidelity", "echo")


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class NewJob:
    """A validated input item."""

    question: str
    reference: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class QueuedJob:
    """What a stage chain needs to run one job."""

    id: str
    batch_id: str
    question: str
    reference: str | None


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


@dataclass(frozen=True)
class BatchSummary:
    """Progress and quality of one batch."""

    id: str
    key: str | None
    source: str | None
    total: int
    counts: dict[str, int]
    done: int
    failed: int
    created_at: datetime
    finished_at: datetime | None
    metrics: dict[str, dict[str, float]]  # name -> mean, p50, p90, n
    jobs_per_second: float | None

    @property
    def finished(self) -> bool:
        return self.done + self.failed >= self.total

    @property
    def success_rate(self) -> float | None:
        final = self.done + self.failed
        return self.done / final if final else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "source": self.source,
            "total": self.total,
            "counts": self.counts,
            "done": self.done,
            "failed": self.failed,
            "finished": self.finished,
            "success_rate": self.success_rate,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "jobs_per_second": self.jobs_per_second,
            "metrics": self.metrics,
        }


def create_batch(
    sessions: sessionmaker[Session], items: Sequence[NewJob], *, key: str | None = None, source: str | None = None
) -> tuple[str, bool]:
    """Writes a batch and its queued jobs in one transaction; returns (batch id, created).

    With a key that already names a batch, nothing is written and that batch's id comes back (created False).
    """
    if key is not None:
        existing = find_batch_by_key(sessions, key)
        if existing:
            return existing, False
    batch_id = new_id()
    created_at = now()
    try:
        with sessions.begin() as session:
            session.add(Batch(id=batch_id, key=key, source=source, total=len(items), done_count=0, failed_count=0, created_at=created_at))
            session.flush()
            if items:  # one executemany, not an ORM object per job
                session.execute(
                    insert(Job.__table__),
                    [
                        {
                            "id": new_id(), "batch_id": batch_id, "position": i, "line": item.line, "question": item.question,
                            "reference": item.reference, "status": QUEUED, "attempts": 0, "dispatches": 0, "created_at": created_at,
                        }
                        for i, item in enumerate(items)
                    ],
                )
    except IntegrityError:
        existing = find_batch_by_key(sessions, key) if key is not None else None
        if existing:  # a concurrent submission with the same key won the race
            return existing, False
        raise
    return batch_id, True


def find_batch_by_key(sessions: sessionmaker[Session], key: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Batch.id).where(Batch.key == key))


def unfinished_jobs(sessions: sessionmaker[Session], batch_id: str) -> list[QueuedJob]:
    """Jobs of a batch not yet in a final state, in input order."""
    with sessions() as session:
        rows = session.execute(
            select(Job.id, Job.batch_id, Job.question, Job.reference)
            .where(Job.batch_id == batch_id, Job.status.in_((QUEUED, RUNNING)))
            .order_by(Job.position)
        ).all()
    return [QueuedJob(*row) for row in rows]


def mark_dispatched(sessions: sessionmaker[Session], job_ids: Sequence[str]) -> None:
    """Records that these jobs were (re-)sent to the queue."""
    with sessions.begin() as session:
        for chunk in chunks(job_ids, 500):
            session.execute(
                update(Job).where(Job.id.in_(chunk)).values(dispatched_at=now(), dispatches=Job.dispatches + 1)
            )


def mark_running(sessions: sessionmaker[Session], job_ids: Sequence[str]) -> None:
    """The encode stage picked these jobs up: one more delivery attempt each (final jobs stay final)."""
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status.in_((QUEUED, RUNNING)))
            .values(status=RUNNING, attempts=Job.attempts + 1, started_at=now())
        )


def record_outcomes(sessions: sessionmaker[Session], outcomes: Sequence[JobOutcome], model_version: str | None) -> int:
    """Writes final results in one transaction; returns how many jobs this call finished.

    Idempotent: a job already done or failed is left as it is and not counted again, so a redelivered
    or retried task never creates a second result or moves a batch counter twice. One UPDATE claims
    the jobs that are not final yet (and locks them), one executemany writes their values: a
    micro-batch of 64 costs three statements, not 64.
    """
    finished_at = now()
    by_id = {outcome.job_id: outcome for outcome in outcomes}
    with sessions.begin() as session:
        if model_version:
            ensure_model_version(session, model_version)
        claimed = session.execute(
            update(Job)
            .where(Job.id.in_(list(by_id)), Job.status.notin_(FINAL))
            .values(finished_at=finished_at)
            .returning(Job.id, Job.batch_id)
        ).all()
        if not claimed:
            return 0  # all already final: this is a redelivery
        session.execute(OUTCOME_UPDATE, [outcome_row(by_id[job_id], model_version) for job_id, _ in claimed])
        per_batch: dict[str, list[int]] = {}
        for job_id, batch_id in claimed:
            counts = per_batch.setdefault(batch_id, [0, 0])
            counts[0 if by_id[job_id].error is None else 1] += 1
        for batch_id in sorted(per_batch):  # one lock order for every writer
            done, failed = per_batch[batch_id]
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(done_count=Batch.done_count + done, failed_count=Batch.failed_count + failed)
            )
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.finished_at.is_(None), Batch.done_count + Batch.failed_count >= Batch.total)
                .values(finished_at=finished_at)
            )
    return len(claimed)


OUTCOME_COLUMNS = ("status", "error", "answer", "decoder_path", "score", "metrics", "timings_ms", "hosts", "model_version")
OUTCOME_UPDATE = (
    update(Job.__table__)
    .where(Job.__table__.c.id == bindparam("job_id"))
    .values({name: bindparam(f"new_{name}") for name in OUTCOME_COLUMNS})
)


def outcome_row(outcome: JobOutcome, model_version: str | None) -> dict[str, Any]:
    """The parameters of OUTCOME_UPDATE for one job: its answer and metrics, or its error."""
    done = outcome.error is None
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
    }
    return {"job_id": outcome.job_id, **{f"new_{name}": value for name, value in values.items()}}


def ensure_model_version(session: Session, version: str) -> None:
    """Inserts the model version row unless it exists (safe under concurrent writers)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(ModelVersion).values(id=version, first_seen_at=now()).on_conflict_do_nothing())


def stale_jobs(
    sessions: sessionmaker[Session], older_than: timedelta, *, queues_idle: bool, limit: int = 10_000
) -> list[tuple[QueuedJob, int]]:
    """Unfinished jobs that look lost, with their attempt counts.

    A job looks lost when nothing happened to it for `older_than` (last sent, or picked up by the encode
    stage) and its message cannot still be waiting: it was never sent, or the stage queues are idle, or it
    was overtaken (the queues are FIFO, so a job sent after it that finished `older_than` ago means its
    message is gone). A long but healthy backlog is therefore not re-sent.
    """
    cutoff = now() - older_than
    sent = func.coalesce(Job.dispatched_at, Job.created_at)
    seen = case((Job.started_at > sent, Job.started_at), else_=sent)
    with sessions() as session:
        conditions = [Job.status.in_((QUEUED, RUNNING)), seen < cutoff]
        if not queues_idle:
            frontier = session.scalar(select(func.max(Job.dispatched_at)).where(Job.finished_at < cutoff))
            never_sent = Job.dispatched_at.is_(None)
            conditions.append(never_sent if frontier is None else or_(never_sent, Job.dispatched_at < frontier))
        rows = session.execute(
            select(Job.id, Job.batch_id, Job.question, Job.reference, Job.attempts)
            .where(*conditions)
            .order_by(Job.batch_id, Job.position)
            .limit(limit)
        ).all()
    return [(QueuedJob(*row[:4]), row[4]) for row in rows]


def batch_summary(sessions: sessionmaker[Session], batch_id: str) -> BatchSummary | None:
    """Counts by status, success rate, metric mean/p50/p90 and throughput of one batch; None if unknown."""
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return None
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)).all())
        metric_rows = session.scalars(select(Job.metrics).where(Job.batch_id == batch_id, Job.status == DONE)).all()
        last = session.scalar(select(func.max(Job.finished_at)).where(Job.batch_id == batch_id))
    metrics = summarise_metrics(metric_rows)
    final = batch.done_count + batch.failed_count
    elapsed = (as_utc(last) - as_utc(batch.created_at)).total_seconds() if last else 0.0
    return BatchSummary(
        id=batch.id, key=batch.key, source=batch.source, total=batch.total, counts=counts, done=batch.done_count,
        failed=batch.failed_count, created_at=as_utc(batch.created_at), finished_at=as_utc(batch.finished_at) if batch.finished_at else None,
        metrics=metrics, jobs_per_second=final / elapsed if elapsed > 0 else None,
    )


def summarise_metrics(rows: Sequence[dict[str, Any] | None]) -> dict[str, dict[str, float]]:
    """Mean, p50, p90 and count of each quality metric over the rows that have it."""
    out: dict[str, dict[str, float]] = {}
    for name in METRIC_NAMES:
        values = sorted(float(r[name]) for r in rows if r and name in r)
        if values:
            out[name] = {"mean": sum(values) / len(values), "p50": percentile(values, 50), "p90": percentile(values, 90), "n": len(values)}
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list."""
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def job_view(sessions: sessionmaker[Session], job_id: str) -> dict[str, Any] | None:
    """One job as a plain dict (None if unknown)."""
    with sessions() as session:
        job = session.get(Job, job_id)
        return None if job is None else job_dict(job)


def iter_results(sessions: sessionmaker[Session], batch_id: str, chunk: int = 500) -> Iterator[dict[str, Any]]:
    """A batch's jobs in input order, streamed from the database in chunks."""
    with sessions() as session:
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
    }


def status_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Jobs by status across all batches (for /metrics)."""
    with sessions() as session:
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return counts


def recent_stage_timings(sessions: sessionmaker[Session], limit: int = 1000) -> list[dict[str, float]]:
    """Per-stage timings of the most recently finished jobs (for latency gauges)."""
    with sessions() as session:
        rows = session.scalars(
            select(Job.timings_ms).where(Job.status == DONE).order_by(Job.finished_at.desc()).limit(limit)
        ).all()
    return [row for row in rows if row]


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = [
    "BatchSummary",
    "JobOutcome",
    "NewJob",
    "QueuedJob",
    "batch_summary",
    "create_batch",
    "iter_results",
    "job_view",
    "mark_dispatched",
    "mark_running",
    "record_outcomes",
    "stale_jobs",
    "status_counts",
    "unfinished_jobs",
]
