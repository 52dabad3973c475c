"""Aggregates the quality dashboard shows, computed in SQL from the job's plain columns (its metrics among them,
storage.models.METRIC_COLUMNS) so a 100,000-job batch's charts cost one or two scans, not a 100,000-row transfer
or a JSON parse per job. Every function takes an open Session; SQLite and PostgreSQL both work."""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from sqlalchemy import func, literal, or_, select, text
from sqlalchemy.orm import Session

from storage.models import DONE, FAILED, METRIC_COLUMNS, QUEUED, RUNNING, STATUSES, Batch, Job
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
# in one pass, without first finding the range; the page merges them into at most 30 bars (`histogram`).
FINE = {"score": 100, "e2e_cos": 100, "cube_gain": 1000}
BUCKETS = 40  # throughput buckets from submission to the last finished job

# The values the sets group are NULL but for done jobs: decoder path, score, e2e_cos, cube gain and echo flag.
# One scan of the batch's jobs under grouping sets: the fine bins and sums of the metric columns and the decoder
# paths of its done jobs, its final jobs per throughput bucket, and its distinct (done, timings, hosts) stamps.
# OFFSET 0 keeps the binned values opaque to the planner's group estimates, so it hashes every set in the one
# pass (MixedAggregate) rather than sorting the rows once per set.
PG_FIGURES = text("""
SELECT GROUPING(sb, eb, gb, p, tb, done, t, h) AS g, coalesce(sb, eb, gb, tb) AS bin, p, done, t, h, count(*),
       sum(score), sum(e2e_cos), sum(gain), count(echo), sum(echo)
FROM (
    SELECT u.*, floor(score * 100)::int AS sb, floor(e2e_cos * 100)::int AS eb, floor(gain * 1000)::int AS gb
    FROM (
        SELECT status = 'done' AS done, timings_ms::text AS t, hosts::text AS h,
               CASE WHEN status IN ('done', 'failed') THEN width_bucket(finished_at, CAST(:edges AS timestamptz[])) END AS tb,
               CASE WHEN status = 'done' THEN coalesce(decoder_path, '-') END AS p,
               CASE WHEN status = 'done' THEN score END AS score, CASE WHEN status = 'done' THEN e2e_cos END AS e2e_cos,
               CASE WHEN status = 'done' THEN cube_cos - identity_cos END AS gain, CASE WHEN status = 'done' THEN echo END AS echo
        FROM job WHERE batch_id = :batch_id
    ) AS u
    OFFSET 0
) AS v
GROUP BY GROUPING SETS ((sb), (eb), (gb), (p), (tb), (done, t, h), ())
""")
# GROUPING(sb, eb, gb, p, tb, done, t, h) of each set (its own columns are its 0 bits) -> what it counts.
PG_SETS = {0b01111111: "score", 0b10111111: "e2e_cos", 0b11011111: "cube_gain", 0b11101111: "path", 0b11110111: "finished",
           0b11111000: "stamp", 0b11111111: "echo"}

# SQLite has no grouping sets: the batch's jobs are read once into a CTE that each set groups (SQLite 3.35 and
# later materialise a CTE read more than once).
SQLITE_FIGURES = text("""
WITH v AS (
    SELECT CASE WHEN status IN ('done', 'failed')
                THEN min(max(CAST(((julianday(finished_at) - 2440587.5) * 86400.0 - :start) / :width AS INTEGER), 0), :last) END AS tb,
           CASE WHEN status = 'done' THEN coalesce(decoder_path, '-') END AS p,
           CASE WHEN status = 'done' THEN score END AS score, CASE WHEN status = 'done' THEN e2e_cos END AS e2e_cos,
           CASE WHEN status = 'done' THEN cube_cos - identity_cos END AS gain, CASE WHEN status = 'done' THEN echo END AS echo
    FROM job WHERE batch_id = :batch_id
)
SELECT 'score', CAST(score * 100 + 1000000 AS INTEGER) - 1000000 AS b, count(*), sum(score) FROM v WHERE score IS NOT NULL GROUP BY b
UNION ALL
SELECT 'e2e_cos', CAST(e2e_cos * 100 + 1000000 AS INTEGER) - 1000000 AS b, count(*), sum(e2e_cos) FROM v WHERE e2e_cos IS NOT NULL GROUP BY b
UNION ALL
SELECT 'cube_gain', CAST(gain * 1000 + 1000000 AS INTEGER) - 1000000 AS b, count(*), sum(gain) FROM v WHERE gain IS NOT NULL GROUP BY b
UNION ALL
SELECT 'echo', 0, count(echo), sum(echo) FROM v
UNION ALL
SELECT 'path', p, count(*), NULL FROM v WHERE p IS NOT NULL GROUP BY p
UNION ALL
SELECT 'finished', tb, count(*), NULL FROM v WHERE tb IS NOT NULL GROUP BY tb
""")
# The stamps grouped apart: read into the CTE above, their text would cost more than this second scan.
SQLITE_STAMPS = text("SELECT status = 'done', timings_ms, hosts, count(*) FROM job WHERE batch_id = :batch_id GROUP BY 1, 2, 3")


@dataclass
class JobGroups:
    """A batch's jobs counted the ways its charts show them."""

    bins: dict[str, dict[int, int]] = field(default_factory=lambda: {name: {} for name in FINE})  # done jobs per fine bin
    totals: dict[str, tuple[int, float]] = field(default_factory=dict)  # (count, sum) of each histogram's values and of echo
    paths: dict[str, int] = field(default_factory=dict)  # done jobs per decoder path
    finished: list[int] = field(default_factory=lambda: [0] * BUCKETS)  # final jobs per throughput bucket
    stamps: list[tuple[tuple[bool, Any, Any], int]] = field(default_factory=list)  # ((done, timings, hosts), jobs)

    def add(self, kind: str, key: Any, count: int, total: float | None = None) -> None:
        """Counts the `count` jobs of one group: a fine bin (with the sum of its values), the echo flags (count and
        sum), a decoder path, a throughput bucket or a stamp."""
        if kind in FINE:
            n, s = self.totals.get(kind, (0, 0.0))
            self.totals[kind] = (n + count, s + float(total or 0.0))
            self.bins[kind][int(key)] = count
        elif kind == "echo":
            self.totals[kind] = (count, float(total or 0.0))
        elif kind == "path":
            self.paths[str(key)] = count
        elif kind == "finished":
            self.finished[min(max(int(key), 0), BUCKETS - 1)] += count
        else:
            self.stamps.append((key, count))


def job_groups(session: Session, row: BatchRow) -> tuple[JobGroups, float | None]:
    """The batch's jobs grouped for its charts, and the width in seconds of its throughput buckets (None before a
    job finished): on PostgreSQL one scan, on SQLite two."""
    start = row.created_at.timestamp()
    width = max(row.last_finished.timestamp() - start, 1e-3) / BUCKETS if row.last_finished else None
    groups = JobGroups()
    if is_postgres(session):
        # Bucket i holds the jobs finished in [edge i, edge i + 1); the first and the last are open-ended (clocks of hosts differ).
        edges = [datetime.fromtimestamp(start + i * (width or 1.0), UTC) for i in range(1, BUCKETS)]
        rows = session.execute(PG_FIGURES, {"batch_id": row.id, "edges": edges}).all()
        for g, key, path, done, timings, hosts, count, score, e2e_cos, gain, echo_count, echo_sum in rows:
            kind = PG_SETS[g]
            if kind == "stamp":
                groups.add(kind, (done, timings, hosts), count)
            elif kind == "echo":
                groups.add(kind, None, echo_count, echo_sum)
            elif kind == "path":
                if path is not None:
                    groups.add(kind, path, count)
            elif key is not None:  # the NULL bin holds the jobs without that value
                groups.add(kind, key, count, {"score": score, "e2e_cos": e2e_cos, "cube_gain": gain}.get(kind))
        return groups, width
    values = {"batch_id": row.id, "start": start, "width": width or 1.0, "last": BUCKETS - 1}
    for kind, key, count, total in session.execute(SQLITE_FIGURES, values).all():
        groups.add(kind, key, count, total)
    for done, timings, hosts, count in session.execute(SQLITE_STAMPS, values).all():
        groups.add("stamp", (done, timings, hosts), count)
    return groups, width


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

    out: list[float | None] = []
    for q in qs:
        position = (n - 1) * q
        low = int(position)
        out.append(at(low) + (at(min(low + 1, n - 1)) - at(low)) * (position - low))
    return out


def parsed(stamps: list[tuple[tuple[bool, Any, Any], int]]) -> list[tuple[bool, dict[str, Any], dict[str, Any], int]]:
    """The stamps with their JSON text parsed; a missing (or JSON null) object is empty. The stages stamp one
    timings and hosts object per micro-batch, so a 100,000-job batch has a few thousand to parse."""

    def obj(raw: Any) -> dict[str, Any]:
        value = json.loads(raw) if isinstance(raw, str) else raw
        return value if isinstance(value, dict) else {}

    return [(bool(done), obj(timings), obj(hosts), count) for (done, timings, hosts), count in stamps]


def batch_figures(session: Session, row: BatchRow) -> dict[str, Any]:
    """Everything the batch page draws: histograms of the score, e2e_cos and cube_cos − identity_cos, the echo
    share, per-stage compute and wait time (median, p90, ms per job) and decoder paths of the done jobs, final jobs
    per second over time, and (stage, worker host, jobs served) for each worker that served the batch."""
    groups, width = job_groups(session, row)
    out: dict[str, Any] = {name: histogram(groups.bins[name], FINE[name], *groups.totals.get(name, (0, 0.0))) for name in FINE}
    echo_n, echo_sum = groups.totals.get("echo", (0, 0.0))
    out["echo"] = {"share": echo_sum / echo_n if echo_n else None, "n": echo_n}
    stamps = parsed(groups.stamps)
    quantile = {key: weighted_quantiles([(float(t[key]), n) for done, t, _, n in stamps if done and key in t]) for key in TIMINGS}
    out["times"] = {
        stage: {"compute_p50": quantile[stage][0], "compute_p90": quantile[stage][1],
                "wait_p50": quantile[f"wait_{stage}"][0], "wait_p90": quantile[f"wait_{stage}"][1]}
        for stage in STAGES
    }
    out["paths"] = dict(sorted(groups.paths.items()))
    out["throughput"] = (
        {"seconds": [], "jobs_per_second": [], "width": None} if width is None else
        {"seconds": [round((i + 0.5) * width, 3) for i in range(BUCKETS)], "jobs_per_second": [c / width for c in groups.finished], "width": width}
    )
    served: dict[tuple[str, str], int] = {}
    for _, _, hosts, count in stamps:
        for stage in STAGES:
            if hosts.get(stage):
                served[(stage, str(hosts[stage]))] = served.get((stage, str(hosts[stage])), 0) + count
    out["workers"] = [(stage, host, served[(stage, host)]) for stage, host in sorted(served, key=lambda k: (STAGES.index(k[0]), k[1]))]
    return out


def job_page(
    session: Session, batch_id: str, *, status: str | None = None, text: str | None = None, page: int = 1, per_page: int = 50,
    counts: Mapping[str, int] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a batch's jobs in input order, filtered by status and by text in question, answer or error;
    with the number of jobs that match. `counts` (the batch's jobs per status, BatchRow.counts) spares counting
    them again when no text filters the jobs."""
    where = [Job.batch_id == batch_id]
    if status in (QUEUED, RUNNING, DONE, FAILED):
        where.append(Job.status == status)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(*(column.ilike(pattern, escape="\\") for column in (Job.question, Job.answer, Job.error))))
    if counts is not None and not text:
        total = counts[status] if status in (QUEUED, RUNNING, DONE, FAILED) else sum(counts.values())
    else:
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
    column, value = (Job.batch_id, batch_id) if batch_id is not None else (Job.model_version, version)
    metrics = {"score": Job.score, "cube_gain": Job.cube_cos - Job.identity_cos, **{name: getattr(Job, name) for name in METRIC_COLUMNS}}
    means = [func.avg(metrics[name]) for name in COMPARED]
    rows = session.execute(select(Job.question, *means).where(Job.status == DONE, column == value).group_by(Job.question)).all()
    return {row[0]: {name: (None if v is None else float(v)) for name, v in zip(COMPARED, row[1:])} for row in rows}
