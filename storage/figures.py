"""What a batch's charts draw, computed in SQL from the job's plain columns so a 100,000-job batch costs one or two
scans, not a 100,000-row transfer or a JSON parse per job: for each metric of the registry with a binning its
histogram, for each 0/1 metric its share, the decoder paths, per-stage times, throughput and the workers.
The page chooses how many bars and throughput buckets; SQLite and PostgreSQL both work."""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from sqlalchemy import (
    ARRAY,
    CompoundSelect,
    DateTime,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from storage import metrics as registry
from storage.dashboard_queries import STAGES, BatchRow, is_postgres
from storage.metrics import Metric
from storage.models import DONE, RESULT_STATES, Job

TIMINGS = tuple(key for stage in STAGES for key in (stage, f"wait_{stage}"))
EDGES = ARRAY(DateTime(timezone=True))
# A micro-batch's jobs become final at one instant: in a 30 ms slice they read as a thousand jobs a second, so no
# throughput slice is narrower than this many seconds.
MIN_SLICE = 1.0
SHIFT = 1_000_000  # SQLite's CAST truncates toward zero: shifted up first, a negative value floors too


@dataclass(frozen=True)
class Histogram:
    """Equal-width bars over the occupied range of a metric's values, with their number and mean."""

    edges: list[float]
    counts: list[int]
    n: int
    mean: float | None


@dataclass(frozen=True)
class Share:
    """The share of jobs with a 0/1 metric set, over the n jobs that have the metric."""

    share: float | None
    n: int


@dataclass(frozen=True)
class StageTimes:
    """One stage's compute time per job and queue wait before it, median and p90 (ms)."""

    compute_p50: float | None
    compute_p90: float | None
    wait_p50: float | None
    wait_p90: float | None


@dataclass(frozen=True)
class Throughput:
    """Final jobs per second in equal buckets from submission to the last finished job (`width` seconds each)."""

    seconds: list[float]  # bucket centres
    jobs_per_second: list[float]
    width: float | None  # None before a job finished


@dataclass(frozen=True)
class WorkerLoad:
    """A worker host that served a stage of the batch, and for how many jobs."""

    stage: str
    host: str
    jobs: int


@dataclass(frozen=True)
class BatchFigures:
    """Everything the batch page draws, by metric name where per metric."""

    histograms: dict[str, Histogram]
    shares: dict[str, Share]
    paths: dict[str | None, int]  # done jobs per decoder path (None: no path recorded)
    times: dict[str, StageTimes]
    throughput: Throughput
    workers: list[WorkerLoad]


@dataclass
class JobGroups:
    """A batch's jobs counted the ways its charts show them."""

    buckets: int
    bins: dict[str, dict[int, int]] = field(default_factory=dict)  # done jobs per SQL bin, by metric
    totals: dict[str, tuple[int, float]] = field(default_factory=dict)  # (count, sum) of each metric's values
    paths: dict[str | None, int] = field(default_factory=dict)
    finished: list[int] = field(default_factory=list)  # final jobs per throughput bucket
    stamps: list[tuple[tuple[Any, Any, Any], int]] = field(default_factory=list)  # ((done, timings, hosts), jobs)

    def __post_init__(self) -> None:
        self.finished = [0] * self.buckets

    def add_bin(self, name: str, key: int | None, count: int) -> None:
        """Jobs in one SQL bin of a metric; the NULL bin holds the jobs without the value."""
        if key is not None:
            self.bins.setdefault(name, {})[int(key)] = count

    def add_finished(self, bucket: int | None, count: int) -> None:
        """Final jobs in one throughput bucket (NULL: not final)."""
        if bucket is not None:
            self.finished[min(max(int(bucket), 0), self.buckets - 1)] += count


def page_metrics() -> tuple[Metric, ...]:
    """The registry's metrics the batch page draws: a histogram or a share each."""
    return tuple(m for m in registry.METRICS if m.per_unit is not None or m.share)


def grouping_value(keys: int, grouped: Sequence[int]) -> int:
    """PostgreSQL's GROUPING(k0, ..., kn) in a set grouping the keys at these positions (k0 is the top bit)."""
    return sum(1 << (keys - 1 - i) for i in range(keys) if i not in grouped)


def pg_statement(
    batch_id: str, metrics: Sequence[Metric], edges: list[datetime]
) -> tuple[Select[*tuple[Any, ...]], dict[int, str]]:
    """One scan of the batch's jobs under grouping sets: each metric's bins, the decoder paths of done jobs, final jobs
    per throughput bucket, the distinct (done, timings, hosts) stamps and the grand totals; with what each GROUPING
    value counts. OFFSET 0 keeps the binned values opaque to the planner's group estimates, so it hashes every set
    in the one pass (MixedAggregate) rather than sorting the rows once per set."""
    done = Job.status == DONE
    values = {m.name: case((done, m.column(Job))) for m in metrics}
    binned = [m for m in metrics if m.per_unit is not None]
    # Bucket i: the jobs finished in [edge i, edge i + 1); the first and last are open-ended (hosts' clocks differ).
    bucket = func.width_bucket(Job.finished_at, cast(bindparam("edges", edges, type_=EDGES), EDGES))
    v = select(
        done.label("done"), Job.decoder_path.label("path"), cast(Job.timings_ms, Text).label("timings"),
        cast(Job.hosts, Text).label("hosts"), case((Job.status.in_(RESULT_STATES), bucket)).label("bucket"),
        *(values[m.name].label(f"m_{m.name}") for m in metrics),
        *(cast(func.floor(values[m.name] * m.per_unit), Integer).label(f"b_{m.name}") for m in binned),
    ).where(Job.batch_id == batch_id).offset(0).subquery("v")
    # Row attributes, so no name of a Row method (t, count, index).
    plain = ("path", "bucket", "done", "timings", "hosts")
    keys = [v.c[f"b_{m.name}"] for m in binned] + [v.c[name] for name in plain]
    n, at = len(binned), {name: len(binned) + i for i, name in enumerate(plain)}
    sets = {f"b_{m.name}": [i] for i, m in enumerate(binned)} | {
        "path": [at["done"], at["path"]], "finished": [at["bucket"]], "stamp": [at["done"], at["timings"], at["hosts"]],
        "all": [],
    }
    values_of = [v.c[f"m_{m.name}"] for m in metrics]
    aggregates = [
        agg for m, value in zip(metrics, values_of)
        for agg in (func.count(value).label(f"n_{m.name}"), func.sum(value).label(f"s_{m.name}"))
    ]
    statement = select(func.grouping(*keys).label("g"), *keys, func.count().label("n"), *aggregates).group_by(
        func.grouping_sets(*(tuple_(*(keys[i] for i in grouped)) for grouped in sets.values()))
    )
    return statement, {grouping_value(n + 5, grouped): kind for kind, grouped in sets.items()}


def pg_groups(session: Session, row: BatchRow, metrics: Sequence[Metric], groups: JobGroups, width: float) -> None:
    """Counts the batch's jobs into `groups` in one scan (PostgreSQL)."""
    start = row.created_at.timestamp()
    edges = [datetime.fromtimestamp(start + i * width, UTC) for i in range(1, groups.buckets)]
    statement, kinds = pg_statement(row.id, metrics, edges)
    for found in session.execute(statement).all():
        kind, values = kinds[found.g], found._mapping
        if kind == "stamp":
            groups.stamps.append(((found.done, found.timings, found.hosts), found.n))
        elif kind == "path" and found.done:
            groups.paths[found.path] = found.n
        elif kind == "finished":
            groups.add_finished(found.bucket, found.n)
        elif kind == "all":
            for m in metrics:
                groups.totals[m.name] = (int(values[f"n_{m.name}"]), float(values[f"s_{m.name}"] or 0.0))
        elif kind.startswith("b_"):
            groups.add_bin(kind[2:], values[kind], found.n)


def sqlite_statement(batch_id: str, metrics: Sequence[Metric], start: float, width: float, last: int) -> CompoundSelect:
    """SQLite has no grouping sets: the batch's jobs are read once into a CTE that each set groups (SQLite 3.35
    and later materialise a CTE read more than once). Rows: (kind, metric or path, key, jobs, sum)."""
    done = Job.status == DONE
    seconds = (func.julianday(Job.finished_at) - 2440587.5) * 86400.0
    bucket = func.min(func.max(cast((seconds - start) / width, Integer), 0), last)
    v = select(
        done.label("done"), Job.decoder_path.label("path"),
        case((Job.status.in_(RESULT_STATES), bucket)).label("bucket"),
        *(case((done, m.column(Job))).label(f"m_{m.name}") for m in metrics),
    ).where(Job.batch_id == batch_id).cte("v")
    parts: list[Select[*tuple[Any, ...]]] = [
        select(literal("path"), v.c.path, null(), func.count(), null()).where(v.c.done).group_by(v.c.path),
        select(literal("finished"), null(), v.c.bucket, func.count(), null()).where(v.c.bucket.is_not(None))
        .group_by(v.c.bucket),
    ]
    for m in metrics:
        value = v.c[f"m_{m.name}"]
        parts.append(select(literal("all"), literal(m.name), null(), func.count(value), func.sum(value)))
        if m.per_unit is not None:
            key = cast(value * m.per_unit + SHIFT, Integer) - SHIFT
            counted = select(literal("bin"), literal(m.name), key, func.count(), null()).where(value.is_not(None))
            parts.append(counted.group_by(key))
    return union_all(*parts)


def sqlite_groups(session: Session, row: BatchRow, metrics: Sequence[Metric], groups: JobGroups, width: float) -> None:
    """Counts the batch's jobs into `groups` in two scans (SQLite): the sets, then the stamps, whose text read
    into the CTE would cost more than this second scan."""
    statement = sqlite_statement(row.id, metrics, row.created_at.timestamp(), width, groups.buckets - 1)
    for kind, name, key, count, total in session.execute(statement).all():
        if kind == "path":
            groups.paths[name] = count
        elif kind == "finished":
            groups.add_finished(key, count)
        elif kind == "all":
            groups.totals[name] = (int(count), float(total or 0.0))
        else:
            groups.add_bin(name, key, count)
    done = (Job.status == DONE).label("done")
    stamps = select(done, Job.timings_ms, Job.hosts, func.count()).where(Job.batch_id == row.id)
    for is_done, timings, hosts, count in session.execute(stamps.group_by(done, Job.timings_ms, Job.hosts)).all():
        groups.stamps.append(((is_done, timings, hosts), count))


def share(count: int, total: float) -> Share:
    """The share of a 0/1 metric from its count and sum."""
    return Share(total / count if count else None, count)


def histogram(fine: dict[int, int], per_unit: int, count: int, total: float, bars: int) -> Histogram:
    """Equal-width bars (at most `bars`) over the occupied range of fine bins: edges, counts, n and mean."""
    if not fine:
        return Histogram(edges=[], counts=[], n=0, mean=None)
    lo, hi = min(fine), max(fine) + 1
    step = max(1, -(-(hi - lo) // bars))  # fine bins per bar
    counts = [0] * (-(-(hi - lo) // step))
    for index, n in fine.items():
        counts[(index - lo) // step] += n
    edges = [(lo + i * step) / per_unit for i in range(len(counts) + 1)]
    return Histogram(edges=edges, counts=counts, n=count, mean=total / count if count else None)


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


def parsed(stamps: list[tuple[tuple[Any, Any, Any], int]]) -> list[tuple[bool, dict[str, Any], dict[str, Any], int]]:
    """The stamps with their JSON text parsed; a missing (or JSON null) object is empty. The stages stamp one
    timings and hosts object per micro-batch, so a 100,000-job batch has a few thousand to parse."""

    def obj(raw: Any) -> dict[str, Any]:
        value = json.loads(raw) if isinstance(raw, str) else raw
        return value if isinstance(value, dict) else {}

    return [(bool(done), obj(timings), obj(hosts), count) for (done, timings, hosts), count in stamps]


def stage_times(stamps: list[tuple[bool, dict[str, Any], dict[str, Any], int]]) -> dict[str, StageTimes]:
    """Per stage, the median and p90 of compute time and of queue wait over the done jobs (rerank only when some
    job went through it)."""
    quantile = {
        key: weighted_quantiles([(float(t[key]), n) for done, t, _, n in stamps if done and key in t])
        for key in TIMINGS
    }
    return {
        stage: StageTimes(*quantile[stage], *quantile[f"wait_{stage}"])
        for stage in STAGES if stage != "rerank" or quantile[stage][0] is not None
    }


def worker_loads(stamps: list[tuple[bool, dict[str, Any], dict[str, Any], int]]) -> list[WorkerLoad]:
    """(stage, worker host, jobs served) for each worker that served the batch, in stage order."""
    served: dict[tuple[str, str], int] = {}
    for _, _, hosts, count in stamps:
        for stage in STAGES:
            if hosts.get(stage):
                served[(stage, str(hosts[stage]))] = served.get((stage, str(hosts[stage])), 0) + count
    order = sorted(served, key=lambda k: (STAGES.index(k[0]), k[1]))
    return [WorkerLoad(stage, host, served[(stage, host)]) for stage, host in order]


def batch_figures(session: Session, row: BatchRow, *, bars: int, buckets: int) -> BatchFigures:
    """Everything the batch page draws, with histograms of at most `bars` bars and `buckets` throughput buckets (fewer
    when the batch took less than `buckets` × MIN_SLICE seconds):
    on PostgreSQL one scan of the batch's jobs, on SQLite two."""
    metrics = page_metrics()
    start = row.created_at.timestamp()
    span = max(row.last_finished.timestamp() - start, 1e-3) if row.last_finished else None
    if span is not None:  # slices of at least MIN_SLICE: fewer, wider ones for a short batch
        buckets = min(buckets, max(1, math.floor(span / MIN_SLICE)))
    width = None if span is None else span / buckets
    groups = JobGroups(buckets)
    (pg_groups if is_postgres(session) else sqlite_groups)(session, row, metrics, groups, width or 1.0)
    totals = {m.name: groups.totals.get(m.name, (0, 0.0)) for m in metrics}
    stamps = parsed(groups.stamps)
    return BatchFigures(
        histograms={
            m.name: histogram(groups.bins.get(m.name, {}), m.per_unit, *totals[m.name], bars=bars)
            for m in metrics if m.per_unit is not None
        },
        shares={m.name: share(*totals[m.name]) for m in metrics if m.share},
        paths=dict(sorted(groups.paths.items(), key=lambda item: (item[0] is None, item[0] or ""))),
        times=stage_times(stamps),
        throughput=Throughput([], [], None) if width is None else Throughput(
            seconds=[round((i + 0.5) * width, 3) for i in range(buckets)],
            jobs_per_second=[c / width for c in groups.finished], width=width,
        ),
        workers=worker_loads(stamps),
    )
