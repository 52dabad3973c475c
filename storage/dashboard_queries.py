"""Aggregates the quality dashboard shows, computed in SQL so a 100,000-job batch costs a few scans, not a
100,000-row transfer. Every function takes an open Session; SQLite and PostgreSQL both work."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, case, cast, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from storage.models import DONE, FAILED, QUEUED, RUNNING, STATUSES, Batch, Job
from storage.repository import as_utc, job_dict

STAGES = ("encode", "cube", "decode")
NO_ANSWER_PATH = "none"  # the decoder path of "no confident answer" (pipeline.decoders.phrase_bank)
# Metrics the compare view pairs, by the name DESIGN.md gives them; `cube_gain` is cube_cos − identity_cos.
COMPARED = ("score", "e2e_cos", "cube_gain", "cube_cos", "identity_cos", "decode_fidelity", "echo")


@dataclass(frozen=True)
class BatchRow:
    """One batch as the dashboard lists it."""

    id: str
    source: str | None
    total: int
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None
    first_started: datetime | None
    last_finished: datetime | None
    versions: list[str] = field(default_factory=list)
    banks: list[str] = field(default_factory=list)

    @property
    def final(self) -> int:
        return self.counts[DONE] + self.counts[FAILED]

    @property
    def running(self) -> bool:
        return self.final < self.total

    @property
    def success_rate(self) -> float | None:
        return self.counts[DONE] / self.final if self.final else None

    @property
    def jobs_per_second(self) -> float | None:
        """Final jobs over the time from submission to the last finished job."""
        if not self.last_finished or not self.final:
            return None
        seconds = (self.last_finished - self.created_at).total_seconds()
        return self.final / seconds if seconds > 0 else None

    def progress(self) -> dict[str, Any]:
        return {
            "id": self.id, "total": self.total, "counts": self.counts, "final": self.final, "running": self.running,
            "success_rate": self.success_rate, "jobs_per_second": self.jobs_per_second,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def json_number(session: Session, column: Any, key: str) -> ColumnElement[float]:
    """A float read from a JSON column; on PostgreSQL through jsonb, whose key lookup needs no re-parse."""
    source = cast(column, JSONB) if is_postgres(session) else column
    return source[key].as_float()


def json_text(session: Session, column: Any, key: str) -> ColumnElement[str]:
    source = cast(column, JSONB) if is_postgres(session) else column
    return source[key].as_string()


def floor_int(session: Session, value: ColumnElement[float]) -> ColumnElement[int]:
    """floor() for values >= 0 (SQLite's CAST truncates; PostgreSQL's CAST rounds)."""
    return cast(func.floor(value), Integer) if is_postgres(session) else cast(value, Integer)


def epoch_seconds(session: Session, column: Any) -> ColumnElement[float]:
    if is_postgres(session):
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def bank_column() -> Any | None:
    """The job's knowledge-bank column once the schema has one (older schemas do not)."""
    return getattr(Job, "bank", None)


def _counts(session: Session, batch_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = session.execute(
        select(Job.batch_id, Job.status, func.count()).where(Job.batch_id.in_(batch_ids)).group_by(Job.batch_id, Job.status)
    ).all()
    out = {batch_id: dict.fromkeys(STATUSES, 0) for batch_id in batch_ids}
    for batch_id, status, count in rows:
        out[batch_id][status] = count
    return out


def _labels(session: Session, column: Any, batch_ids: list[str]) -> dict[str, list[str]]:
    rows = session.execute(
        select(Job.batch_id, column).where(Job.batch_id.in_(batch_ids), column.is_not(None)).group_by(Job.batch_id, column)
    ).all()
    out: dict[str, list[str]] = {batch_id: [] for batch_id in batch_ids}
    for batch_id, label in rows:
        out[batch_id].append(str(label))
    return {k: sorted(v) for k, v in out.items()}


def batch_rows(session: Session, *, limit: int = 50, offset: int = 0, batch_id: str | None = None) -> list[BatchRow]:
    """Batches newest first (or the one named) with status counts, model versions and banks."""
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id).limit(limit).offset(offset)
    if batch_id is not None:
        query = select(Batch).where(Batch.id == batch_id)
    batches = session.scalars(query).all()
    ids = [b.id for b in batches]
    if not ids:
        return []
    counts = _counts(session, ids)
    times = {
        row[0]: row[1:]
        for row in session.execute(
            select(Job.batch_id, func.min(Job.started_at), func.max(Job.finished_at)).where(Job.batch_id.in_(ids)).group_by(Job.batch_id)
        ).all()
    }
    versions = _labels(session, Job.model_version, ids)
    bank = bank_column()
    banks = _labels(session, bank, ids) if bank is not None else {}
    rows = []
    for b in batches:
        started, last = times.get(b.id, (None, None))
        rows.append(
            BatchRow(
                id=b.id, source=b.source, total=b.total, counts=counts[b.id], created_at=as_utc(b.created_at),
                finished_at=as_utc(b.finished_at) if b.finished_at else None,
                first_started=as_utc(started) if started else None, last_finished=as_utc(last) if last else None,
                versions=versions[b.id], banks=banks.get(b.id, []),
            )
        )
    return rows


def batch_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Batch)) or 0


def batch_progress(session: Session, batch_id: str) -> dict[str, Any] | None:
    """Counts by status and throughput: the cheap figure the live page polls."""
    rows = batch_rows(session, batch_id=batch_id)
    return rows[0].progress() if rows else None


def histogram(session: Session, batch_id: str, value: ColumnElement[float], bins: int = 30) -> dict[str, Any]:
    """Equal-width bins over the value's range in the batch's done jobs: edges, counts, n and mean."""
    where = (Job.batch_id == batch_id, Job.status == DONE, value.is_not(None))
    lo, hi, n, mean = session.execute(select(func.min(value), func.max(value), func.count(value), func.avg(value)).where(*where)).one()
    if not n:
        return {"edges": [], "counts": [], "n": 0, "mean": None}
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    bins = bins if hi > lo else 1
    raw = floor_int(session, (value - lo) / width)
    bucket = case((raw >= bins, bins - 1), else_=raw)
    counts = [0] * bins
    for index, count in session.execute(select(bucket.label("b"), func.count()).where(*where).group_by("b")).all():
        counts[min(max(int(index), 0), bins - 1)] += count
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts, "n": int(n), "mean": float(mean)}


def quality(session: Session, batch_id: str) -> dict[str, Any]:
    """Distributions of the answer score and, where jobs carry references, e2e_cos, cube_cos − identity_cos;
    the echo share; the split of decoder paths ("none" is "no confident answer")."""
    e2e = json_number(session, Job.metrics, "e2e_cos")
    gain = json_number(session, Job.metrics, "cube_cos") - json_number(session, Job.metrics, "identity_cos")
    echo = json_number(session, Job.metrics, "echo")
    echo_mean, echo_n = session.execute(
        select(func.avg(echo), func.count(echo)).where(Job.batch_id == batch_id, Job.status == DONE)
    ).one()
    paths = session.execute(
        select(func.coalesce(Job.decoder_path, "-"), func.count()).where(Job.batch_id == batch_id, Job.status == DONE).group_by(Job.decoder_path)
    ).all()
    return {
        "score": histogram(session, batch_id, Job.score),
        "e2e_cos": histogram(session, batch_id, e2e),
        "cube_gain": histogram(session, batch_id, gain),
        "echo": {"share": float(echo_mean) if echo_n else None, "n": int(echo_n)},
        "paths": dict(sorted((str(p), int(c)) for p, c in paths)),
    }


def quantiles(session: Session, batch_id: str, value: ColumnElement[float], qs: tuple[float, ...] = (0.5, 0.9)) -> list[float | None]:
    """Linear-interpolated quantiles of a value over the batch's done jobs (PostgreSQL's percentile_cont;
    on SQLite the two order statistics around each quantile, one sort)."""
    where = (Job.batch_id == batch_id, Job.status == DONE, value.is_not(None))
    if is_postgres(session):
        row = session.execute(select(*(func.percentile_cont(q).within_group(value) for q in qs)).where(*where)).one()
        return [None if v is None else float(v) for v in row]
    n = session.scalar(select(func.count(value)).where(*where)) or 0
    if not n:
        return [None for _ in qs]
    wanted = {}
    for q in qs:
        position = (n - 1) * q
        wanted[q] = (int(position), min(int(position) + 1, n - 1), position - int(position))
    ranks = sorted({r for low, high, _ in wanted.values() for r in (low, high)})
    ranked = select(value.label("v"), (func.row_number().over(order_by=value) - 1).label("r")).where(*where).subquery()
    at = dict(session.execute(select(ranked.c.r, ranked.c.v).where(ranked.c.r.in_(ranks))).all())
    return [float(at[low]) + (float(at[high]) - float(at[low])) * frac for low, high, frac in wanted.values()]


def stage_times(session: Session, batch_id: str) -> dict[str, dict[str, float | None]]:
    """Per stage: compute time per job and wait time in the queue before it, median and p90, in ms."""
    out: dict[str, dict[str, float | None]] = {}
    for stage in STAGES:
        compute = quantiles(session, batch_id, json_number(session, Job.timings_ms, stage))
        wait = quantiles(session, batch_id, json_number(session, Job.timings_ms, f"wait_{stage}"))
        out[stage] = {"compute_p50": compute[0], "compute_p90": compute[1], "wait_p50": wait[0], "wait_p90": wait[1]}
    return out


def throughput(session: Session, batch_id: str, buckets: int = 40) -> dict[str, Any]:
    """Jobs finished per second in equal time buckets from submission to the last finished job."""
    batch = session.get(Batch, batch_id)
    finished = epoch_seconds(session, Job.finished_at)
    where = (Job.batch_id == batch_id, Job.status.in_((DONE, FAILED)), Job.finished_at.is_not(None))
    last = session.scalar(select(func.max(finished)).where(*where))
    if batch is None or last is None:
        return {"seconds": [], "jobs_per_second": [], "width": None}
    start = as_utc(batch.created_at).timestamp()
    span = max(float(last) - start, 1e-3)
    width = span / buckets
    # Clamped at the submission time so the bucket index is never negative (clocks of hosts differ).
    offset = (func.greatest(finished, start) if is_postgres(session) else func.max(finished, literal(start))) - start
    bucket = floor_int(session, offset / width)
    bucket = case((bucket >= buckets, buckets - 1), else_=bucket)
    counts = [0] * buckets
    for index, count in session.execute(select(bucket.label("b"), func.count()).where(*where).group_by("b")).all():
        counts[min(max(int(index), 0), buckets - 1)] += count
    return {
        "seconds": [round((i + 0.5) * width, 3) for i in range(buckets)],
        "jobs_per_second": [c / width for c in counts],
        "width": width,
    }


def workers(session: Session, batch_id: str) -> list[tuple[str, str, int]]:
    """(stage, worker host name, jobs served) for each worker that served the batch."""
    out = []
    for stage in STAGES:
        host = json_text(session, Job.hosts, stage)
        rows = session.execute(
            select(host, func.count()).where(Job.batch_id == batch_id, host.is_not(None)).group_by(host).order_by(host)
        ).all()
        out += [(stage, str(name), int(count)) for name, count in rows]
    return out


def job_page(
    session: Session, batch_id: str, *, status: str | None = None, text: str | None = None, page: int = 1, per_page: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """One page of a batch's jobs in input order, filtered by status and by text in question, answer or error;
    with the number of jobs that match."""
    where = [Job.batch_id == batch_id]
    if status in (QUEUED, RUNNING, DONE, FAILED):
        where.append(Job.status == status)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(*(column.ilike(pattern, escape="\\") for column in (Job.question, Job.answer, Job.error))))
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    rows = session.execute(
        select(Job.id, Job.position, Job.question, Job.answer, Job.score, Job.status, Job.error, Job.decoder_path)
        .where(*where).order_by(Job.position).limit(per_page).offset((max(page, 1) - 1) * per_page)
    ).all()
    return [row._asdict() for row in rows], total


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
    bank = bank_column()
    if bank is not None:
        record["bank"] = getattr(job, "bank", None)
    return record


def model_versions(session: Session) -> list[tuple[str, int]]:
    """Model versions with the number of done jobs each answered."""
    return [(str(v), int(n)) for v, n in session.execute(
        select(Job.model_version, func.count()).where(Job.model_version.is_not(None)).group_by(Job.model_version).order_by(Job.model_version)
    ).all()]


def per_question(session: Session, *, batch_id: str | None = None, version: str | None = None) -> dict[str, dict[str, float | None]]:
    """Mean of each compared metric per question text over the done jobs of a batch or of a model version."""
    metrics = {
        "score": Job.score,
        **{name: json_number(session, Job.metrics, name) for name in ("e2e_cos", "cube_cos", "identity_cos", "decode_fidelity", "echo")},
    }
    metrics["cube_gain"] = metrics["cube_cos"] - metrics["identity_cos"]
    where = [Job.status == DONE]
    where.append(Job.batch_id == batch_id if batch_id is not None else Job.model_version == version)
    columns = [func.avg(cast(metrics[name], Float)).label(name) for name in COMPARED]
    rows = session.execute(select(Job.question, *columns).where(*where).group_by(Job.question)).all()
    return {row[0]: {name: (None if v is None else float(v)) for name, v in zip(COMPARED, row[1:])} for row in rows}
