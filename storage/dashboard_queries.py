"""What the dashboard lists, read in SQL: batches with their counts, a page of a batch's jobs, one job's record,
model versions (the compare view reads storage.comparison, the charts storage.figures).
Every function takes an open Session; SQLite and PostgreSQL both work."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from storage.comparison import OWN_BANK, SETUP_COLUMNS, Setup, SetupParts
from storage.models import CANCELLED, DONE, FAILED, RESULT_STATES, STATUSES, Batch, Job
from storage.quality import Quality, batch_quality, quality_texts
from storage.repository import job_dict
from storage.summary import as_utc, listed

STAGES = ("encode", "cube", "decode", "rerank")  # rerank: only jobs submitted with it went through it


@dataclass(frozen=True)
class BatchRow:
    """One batch as the dashboard lists it."""

    id: str
    source: str | None
    total: int
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None
    last_finished: datetime | None
    versions: list[str] = field(default_factory=list)
    banks: list[str] = field(default_factory=list)
    quality: Quality = field(default_factory=Quality)
    setup: Setup = field(default_factory=Setup)  # banks with versions, thresholds, rerank, decoder paths

    @property
    def final(self) -> int:
        """Jobs done, failed or cancelled."""
        return self.counts[DONE] + self.counts[FAILED] + self.counts[CANCELLED]

    @property
    def running(self) -> bool:
        """Whether a job of the batch is not final yet."""
        return self.final < self.total

    @property
    def no_error_rate(self) -> float | None:
        """Done jobs over done and failed ones (a refusal is done: `quality` says how good the answers are)."""
        ended = self.counts[DONE] + self.counts[FAILED]
        return self.counts[DONE] / ended if ended else None

    @property
    def jobs_per_second(self) -> float | None:
        """Done and failed jobs over the time from submission to the last of them (cancelled jobs did no work)."""
        ended = self.counts[DONE] + self.counts[FAILED]
        if not self.last_finished or not ended:
            return None
        seconds = (self.last_finished - self.created_at).total_seconds()
        return ended / seconds if seconds > 0 else None

    def progress(self) -> dict[str, Any]:
        """The JSON a running batch's page polls."""
        return {
            "id": self.id, "total": self.total, "counts": self.counts, "final": self.final, "running": self.running,
            "no_error_rate": self.no_error_rate, "jobs_per_second": self.jobs_per_second,
            "quality": self.quality.model_dump(mode="json"), "quality_texts": quality_texts(self.quality),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def is_postgres(session: Session) -> bool:
    """Whether the session's database is PostgreSQL (else SQLite)."""
    return session.get_bind().dialect.name == "postgresql"


def batch_rows(
    session: Session, *, limit: int = 50, offset: int = 0, batch_id: str | None = None,
    known: Mapping[str, BatchRow] | None = None, interactive: bool = False,
) -> list[BatchRow]:
    """Batches newest first (or the one named) with status counts, model versions and banks, from one scan of
    their jobs. `known` holds rows read before by batch id; a finished batch among them (same finish time)
    cannot have changed and is not scanned again."""
    query = listed(select(Batch), interactive).order_by(Batch.created_at.desc(), Batch.id).limit(limit).offset(offset)
    if batch_id is not None:
        query = select(Batch).where(Batch.id == batch_id)
    batches = session.scalars(query).all()
    known = known or {}

    def unchanged(b: Batch) -> bool:
        row = known.get(b.id)
        return row is not None and b.finished_at is not None and row.finished_at == as_utc(b.finished_at)

    ids = [b.id for b in batches if not unchanged(b)]
    counts = {i: dict.fromkeys(STATUSES, 0) for i in ids}
    setups = {i: SetupParts() for i in ids}
    last: dict[str, datetime] = {}
    quality = batch_quality(session=session, batch_ids=ids)
    if ids:
        grouped = session.execute(
            select(Job.batch_id, Job.status, func.count(), func.max(Job.finished_at), *SETUP_COLUMNS)
            .where(Job.batch_id.in_(ids)).group_by(Job.batch_id, Job.status, *SETUP_COLUMNS)
        ).all()
        for batch, status, count, finished, *setup in grouped:
            counts[batch][status] += count
            setups[batch].add(tuple(setup), done=status == DONE)
            if status not in RESULT_STATES:  # a cancel is no work done: throughput counts to the last result
                continue
            if finished is not None and (batch not in last or as_utc(finished) > last[batch]):
                last[batch] = as_utc(finished)
    return [known[b.id] if unchanged(b) else new_row(b, counts[b.id], last.get(b.id), setups[b.id], quality[b.id])
            for b in batches]


def new_row(batch: Batch, counts: dict[str, int], last: datetime | None, parts: SetupParts, quality: Quality) -> BatchRow:
    """A batch's row from what batch_rows read of its jobs."""
    setup = parts.setup()
    return BatchRow(
        id=batch.id, source=batch.source, total=batch.total, counts=counts, created_at=as_utc(batch.created_at),
        finished_at=as_utc(batch.finished_at) if batch.finished_at else None, last_finished=last,
        versions=list(setup.versions), banks=sorted({b.split("@")[0] for b in setup.banks if b != OWN_BANK}),
        quality=quality, setup=setup,
    )


@dataclass(frozen=True)
class JobLine:
    """One job as a batch's job table lists it."""

    id: str
    position: int
    question: str
    answer: str | None
    score: float | None
    confidence: float | None
    status: str
    error: str | None
    decoder_path: str | None


def job_page(
    session: Session, batch_id: str, *, status: str | None = None, text: str | None = None, page: int = 1,
    per_page: int = 50, counts: Mapping[str, int] | None = None,
) -> tuple[list[JobLine], int]:
    """One page of a batch's jobs in input order, filtered by status and by text in question, answer or error;
    with the number of jobs that match. `counts` (the batch's jobs per status, BatchRow.counts) spares counting
    them again when no text filters the jobs."""
    where = [Job.batch_id == batch_id]
    if status in STATUSES:
        where.append(Job.status == status)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(*(column.ilike(pattern, escape="\\") for column in (Job.question, Job.answer, Job.error))))
    if counts is not None and not text:
        total = counts[status] if status in STATUSES else sum(counts.values())
    else:
        total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    rows = session.execute(
        select(Job.id, Job.position, Job.question, Job.answer, Job.score, Job.confidence, Job.status, Job.error,
               Job.decoder_path)
        .where(*where).order_by(Job.position).limit(per_page).offset((max(page, 1) - 1) * per_page)
    ).all()
    return [JobLine(**row._asdict()) for row in rows], total


def job_record(session: Session, job_id: str) -> dict[str, Any] | None:
    """A job's full record, times included."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    record = job_dict(job)
    for name in ("created_at", "dispatched_at", "started_at", "finished_at"):
        moment = getattr(job, name)
        record[name] = as_utc(moment).isoformat() if moment else None
    record["dispatches"] = job.dispatches
    return record


def model_versions(session: Session) -> list[tuple[str, int]]:
    """Model versions with the number of done jobs each answered."""
    return [(str(v), int(n)) for v, n in session.execute(
        select(Job.model_version, func.count()).where(Job.model_version.is_not(None))
        .group_by(Job.model_version).order_by(Job.model_version)
    ).all()]
