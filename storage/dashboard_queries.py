"""Aggregates the quality dashboard shows, computed in SQL so a 100,000-job batch costs a few scans, not a
100,000-row transfer. Every function takes an open Session; SQLite and PostgreSQL both work."""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import Any

from sqlalchemy import Float, Integer, Text, case, cast, func, literal, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from storage.models import DONE, FAILED, QUEUED, RUNNING, STATUSES, Batch, Job
from storage.repository import job_dict
from storage.summary import as_utc

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


def batch_rows(
    session: Session, *, limit: int = 50, offset: int = 0, batch_id: str | None = None, known: Mapping[str, BatchRow] | None = None
) -> list[BatchRow]:
    """Batches newest first (or the one named) with status counts, model versions and banks, from one scan of
    their jobs. `known` holds rows read before by batch id; a finished batch among them (same finish time)
    cannot have changed and is not scanned again."""
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id).limit(limit).offset(offset)
    if batch_id is not None:
        query = select(Batch).where(Batch.id == batch_id)
    batches = session.scalars(query).all()
    known = known or {}

    def unchanged(b: Batch) -> bool:
        row = known.get(b.id)
        return row is not None and b.finished_at is not None and row.finished_at == as_utc(b.finished_at)

    ids = [b.id for b in batches if not unchanged(b)]
    counts = {i: dict.fromkeys(STATUSES, 0) for i in ids}
    versions: dict[str, set[str]] = {i: set() for i in ids}
    banks: dict[str, set[str]] = {i: set() for i in ids}
    last: dict[str, datetime] = {}
    if ids:
        bank = bank_column()
        labels = [Job.model_version, bank if bank is not None else literal(None)]
        grouped = session.execute(
            select(Job.batch_id, Job.status, *labels, func.count(), func.max(Job.finished_at))
            .where(Job.batch_id.in_(ids)).group_by(Job.batch_id, Job.status, *labels[: 1 + (bank is not None)])
        ).all()
        for batch, status, version, bank_name, count, finished in grouped:
            counts[batch][status] += count
            if version is not None:
                versions[batch].add(str(version))
            if bank_name is not None:
                banks[batch].add(str(bank_name))
            if finished is not None and (batch not in last or as_utc(finished) > last[batch]):
                last[batch] = as_utc(finished)
    return [
        known[b.id] if unchanged(b) else BatchRow(
            id=b.id, source=b.source, total=b.total, counts=counts[b.id], created_at=as_utc(b.created_at),
            finished_at=as_utc(b.finished_at) if b.finished_at else None, last_finished=last.get(b.id),
            versions=sorted(versions[b.id]), banks=sorted(banks[b.id]),
        )
        for b in batches
    ]


def batch_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Batch)) or 0


TIMINGS = tuple(key for stage in STAGES for key in (stage, f"wait_{stage}"))
# Fine bins per unit of each histogram (0.01 of a cosine, 0.001 of the cube's gain): SQL counts jobs in these
# in one pass, without first finding the range; the page merges them into at most `bins` bars.
FINE = {"score": 100, "e2e_cos": 100, "cube_gain": 1000}

PG_QUALITY = text("""
SELECT GROUPING(sb, eb, gb) AS g, sb, eb, gb, count(score), sum(score), count(e2e_cos), sum(e2e_cos),
       count(gain), sum(gain), count(echo), sum(echo)
FROM (
    SELECT floor(j.score * 100)::int AS sb, floor(m.e2e_cos * 100)::int AS eb,
           floor((m.cube_cos - m.identity_cos) * 1000)::int AS gb,
           j.score, m.e2e_cos, m.cube_cos - m.identity_cos AS gain, m.echo
    FROM job AS j, json_to_record(j.metrics) AS m(e2e_cos float8, cube_cos float8, identity_cos float8, echo float8)
    WHERE j.batch_id = :batch_id AND j.status = 'done'
) AS v
GROUP BY GROUPING SETS ((sb), (eb), (gb), ())
""")

SQLITE_QUALITY = text("""
WITH v AS (
    SELECT score, json_extract(metrics, '$.e2e_cos') AS e2e_cos,
           json_extract(metrics, '$.cube_cos') - json_extract(metrics, '$.identity_cos') AS gain,
           json_extract(metrics, '$.echo') AS echo
    FROM job WHERE batch_id = :batch_id AND status = 'done'
)
SELECT 'score', CAST(score * 100 + 1000000 AS INTEGER) - 1000000 AS b, count(*), sum(score) FROM v WHERE score IS NOT NULL GROUP BY b
UNION ALL
SELECT 'e2e_cos', CAST(e2e_cos * 100 + 1000000 AS INTEGER) - 1000000 AS b, count(*), sum(e2e_cos) FROM v WHERE e2e_cos IS NOT NULL GROUP BY b
UNION ALL
SELECT 'cube_gain', CAST(gain * 1000 + 1000000 AS INTEGER) - 1000000 AS b, count(*), sum(gain) FROM v WHERE gain IS NOT NULL GROUP BY b
UNION ALL
SELECT 'echo', 0, count(echo), sum(echo) FROM v
""")


def quality_bins(session: Session, batch_id: str) -> tuple[dict[str, dict[int, int]], dict[str, tuple[int, float]]]:
    """Jobs per fine bin of each histogram, and (count, sum) of each value, over the batch's done jobs; on
    PostgreSQL one pass that parses each job's metrics once (json_to_record) under grouping sets."""
    bins: dict[str, dict[int, int]] = {name: {} for name in FINE}
    totals: dict[str, tuple[int, float]] = {}
    if is_postgres(session):
        for g, sb, eb, gb, *sums in session.execute(PG_QUALITY, {"batch_id": batch_id}).all():
            if g == 7:  # the () set: every job
                for i, name in enumerate(("score", "e2e_cos", "cube_gain", "echo")):
                    totals[name] = (int(sums[2 * i]), float(sums[2 * i + 1] or 0.0))
                continue
            name, index, count = {3: ("score", sb, sums[0]), 5: ("e2e_cos", eb, sums[2]), 6: ("cube_gain", gb, sums[4])}[g]
            if index is not None:
                bins[name][int(index)] = int(count)
        return bins, totals
    sums: dict[str, list[float]] = {name: [0, 0.0] for name in (*FINE, "echo")}
    for name, index, count, total in session.execute(SQLITE_QUALITY, {"batch_id": batch_id}).all():
        sums[name][0] += count
        sums[name][1] += float(total or 0.0)
        if name in bins:
            bins[name][int(index)] = int(count)
    return bins, {name: (int(n), total) for name, (n, total) in sums.items()}


def histogram(fine: dict[int, int], per_unit: int, count: int, total: float, bars: int = 30) -> dict[str, Any]:
    """Equal-width bars (at most `bars`) over the occupied range of fine bins: edges, counts, n and mean."""
    if not fine:
        return {"edges": [], "counts": [], "n": 0, "mean": None}
    lo, hi = min(fine), max(fine) + 1
    step = max(1, -(-(hi - lo) // bars))  # fine bins per bar
    counts = [0] * (-(-(hi - lo) // step))
    for index, n in fine.items():
        counts[(index - lo) // step] += n
    edges = [(lo + i * step) / per_unit for i in range(len(counts) + 1)]
    return {"edges": edges, "counts": counts, "n": count, "mean": total / count if count else None}


def weighted_quantiles(pairs: list[tuple[float, int]], qs: tuple[float, ...] = (0.5, 0.9)) -> list[float | None]:
    """Linear-interpolated quantiles of values given with their multiplicities (value, count)."""
    pairs = sorted(pairs)
    cumulative = list(accumulate(count for _, count in pairs))
    if not cumulative or not cumulative[-1]:
        return [None for _ in qs]
    n = cumulative[-1]

    def at(rank: int) -> float:  # the value of the rank-th smallest job (0-based)
        return pairs[bisect_right(cumulative, rank)][0]

    out = []
    for q in qs:
        position = (n - 1) * q
        low = int(position)
        out.append(at(low) + (at(min(low + 1, n - 1)) - at(low)) * (position - low))
    return out


def grouped_json(session: Session, column: Any, batch_id: str, *, done_only: bool) -> list[tuple[dict[str, Any], int]]:
    """Distinct values of a JSON column over the batch's jobs with their counts. The stages stamp one timings
    and hosts object per micro-batch, so a 100,000-job batch has a few thousand distinct ones: SQL groups
    their text and only those are parsed."""
    as_text = cast(column, Text) if is_postgres(session) else column
    where = [Job.batch_id == batch_id, column.is_not(None)] + ([Job.status == DONE] if done_only else [])
    rows = session.execute(select(as_text, func.count()).where(*where).group_by(as_text)).all()
    return [(json.loads(raw) if isinstance(raw, str) else raw, int(count)) for raw, count in rows if raw]


def batch_stats(session: Session, batch_id: str) -> dict[str, Any]:
    """Histograms of the score, e2e_cos and cube_cos − identity_cos, the echo share, and per-stage compute
    and wait time (median, p90, ms per job) of the batch's done jobs."""
    fine, totals = quality_bins(session, batch_id)
    out: dict[str, Any] = {name: histogram(fine[name], FINE[name], *totals.get(name, (0, 0.0))) for name in FINE}
    echo_n, echo_sum = totals.get("echo", (0, 0.0))
    out["echo"] = {"share": echo_sum / echo_n if echo_n else None, "n": echo_n}
    timings = grouped_json(session, Job.timings_ms, batch_id, done_only=True)
    quantile = {key: weighted_quantiles([(float(t[key]), n) for t, n in timings if key in t]) for key in TIMINGS}
    out["times"] = {
        stage: {"compute_p50": quantile[stage][0], "compute_p90": quantile[stage][1],
                "wait_p50": quantile[f"wait_{stage}"][0], "wait_p90": quantile[f"wait_{stage}"][1]}
        for stage in STAGES
    }
    return out


def decoder_paths(session: Session, batch_id: str) -> dict[str, int]:
    """Done jobs per decoder path ("none" is "no confident answer")."""
    rows = session.execute(
        select(func.coalesce(Job.decoder_path, "-"), func.count()).where(Job.batch_id == batch_id, Job.status == DONE).group_by(Job.decoder_path)
    ).all()
    return dict(sorted((str(p), int(c)) for p, c in rows))


def throughput(session: Session, batch_id: str, buckets: int = 40) -> dict[str, Any]:
    """Jobs finished per second in equal time buckets from submission to the last finished job."""
    batch = session.get(Batch, batch_id)
    finished = epoch_seconds(session, Job.finished_at)
    where = (Job.batch_id == batch_id, Job.status.in_((DONE, FAILED)), Job.finished_at.is_not(None))
    last = session.scalar(select(func.max(finished)).where(*where))
    if batch is None or last is None:
        return {"seconds": [], "jobs_per_second": [], "width": None}
    start = as_utc(batch.created_at).timestamp()
    width = max(float(last) - start, 1e-3) / buckets
    # Clamped at the submission time so the bucket index is never negative (clocks of hosts differ).
    offset = (func.greatest(finished, start) if is_postgres(session) else func.max(finished, literal(start))) - start
    bucket = floor_int(session, offset / width)
    bucket = case((bucket >= buckets, buckets - 1), else_=bucket)
    counts = [0] * buckets
    for index, count in session.execute(select(bucket.label("b"), func.count()).where(*where).group_by("b")).all():
        counts[min(max(int(index), 0), buckets - 1)] += count
    return {"seconds": [round((i + 0.5) * width, 3) for i in range(buckets)], "jobs_per_second": [c / width for c in counts], "width": width}


def workers(session: Session, batch_id: str) -> list[tuple[str, str, int]]:
    """(stage, worker host name, jobs served) for each worker that served the batch."""
    served: dict[tuple[str, str], int] = {}
    for hosts, count in grouped_json(session, Job.hosts, batch_id, done_only=False):
        for stage in STAGES:
            if hosts.get(stage):
                served[(stage, str(hosts[stage]))] = served.get((stage, str(hosts[stage])), 0) + count
    return [(stage, host, served[(stage, host)]) for stage, host in sorted(served, key=lambda k: (STAGES.index(k[0]), k[1]))]


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


# One statement per side kind (batch or model version): each job's metrics parsed once.
PG_PER_QUESTION = {
    "batch_id": text("""
SELECT j.question, avg(j.score), avg(m.e2e_cos), avg(m.cube_cos - m.identity_cos), avg(m.cube_cos), avg(m.identity_cos),
       avg(m.decode_fidelity), avg(m.echo)
FROM job AS j, json_to_record(j.metrics) AS m(e2e_cos float8, cube_cos float8, identity_cos float8, decode_fidelity float8, echo float8)
WHERE j.status = 'done' AND j.batch_id = :value
GROUP BY j.question
"""),
    "model_version": text("""
SELECT j.question, avg(j.score), avg(m.e2e_cos), avg(m.cube_cos - m.identity_cos), avg(m.cube_cos), avg(m.identity_cos),
       avg(m.decode_fidelity), avg(m.echo)
FROM job AS j, json_to_record(j.metrics) AS m(e2e_cos float8, cube_cos float8, identity_cos float8, decode_fidelity float8, echo float8)
WHERE j.status = 'done' AND j.model_version = :value
GROUP BY j.question
"""),
}


def per_question(session: Session, *, batch_id: str | None = None, version: str | None = None) -> dict[str, dict[str, float | None]]:
    """Mean of each compared metric per question text over the done jobs of a batch or of a model version
    (on PostgreSQL each job's metrics parsed once)."""
    column, value = ("batch_id", batch_id) if batch_id is not None else ("model_version", version)
    if is_postgres(session):
        rows = session.execute(PG_PER_QUESTION[column], {"value": value}).all()
    else:
        metrics = {
            "score": Job.score,
            **{name: json_number(session, Job.metrics, name) for name in ("e2e_cos", "cube_cos", "identity_cos", "decode_fidelity", "echo")},
        }
        metrics["cube_gain"] = metrics["cube_cos"] - metrics["identity_cos"]
        columns = [func.avg(cast(metrics[name], Float)).label(name) for name in COMPARED]
        rows = session.execute(select(Job.question, *columns).where(Job.status == DONE, getattr(Job, column) == value).group_by(Job.question)).all()
    return {row[0]: {name: (None if v is None else float(v)) for name, v in zip(COMPARED, row[1:])} for row in rows}
