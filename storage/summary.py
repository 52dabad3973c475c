"""Reading a batch back: progress counts, quality aggregates and throughput, one batch or a page of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, computed_field
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from storage.metrics import stored_metrics
from storage.models import DONE, INTERACTIVE, RESULT_STATES, STATUSES, Batch, Job
from storage.quality import Quality, batch_quality

# "+00:00", not pydantic's "Z"
IsoDatetime = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")]


class BatchSummary(BaseModel):
    """Progress and quality of one batch; `to_dict` is its JSON, the fields the CLI prints and the API serves."""

    model_config = ConfigDict(frozen=True)

    id: str
    key: str | None
    source: str | None
    total: int
    counts: dict[str, int]
    done: int
    failed: int
    cancelled: int = Field(0, description="jobs cancelled before they got a result (a final state of its own)")
    state: str = Field("running", description="running, paused, finished or cancelled")
    created_at: IsoDatetime
    finished_at: IsoDatetime | None
    metrics: dict[str, dict[str, float | int]]  # name -> mean, p50, p90, n
    jobs_per_second: float | None
    banks: list[str] = Field(description="the knowledge bank versions its jobs are pinned to, as name@version")
    quality: Quality = Field(description="answered, refused, failed, right, precision, coverage (storage.quality)")

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this stacking
    @property
    def finished(self) -> bool:
        """Whether every job is final: done, failed or cancelled."""
        return self.done + self.failed + self.cancelled >= self.total

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this stacking
    @property
    def no_error_rate(self) -> float | None:
        """Jobs finished without an error over final jobs: a refusal counts as no error (quality says how good)."""
        final = self.done + self.failed
        return self.done / final if final else None

    def to_dict(self) -> dict[str, Any]:
        """Its JSON, as a dict."""
        return self.model_dump(mode="json")


def batch_summary(*, session: Session, batch_id: str) -> BatchSummary | None:
    """Counts by status, quality, metric mean/p50/p90 and throughput of one batch; None if unknown."""
    batch = session.get(Batch, batch_id)
    if batch is None:
        return None
    counts = dict.fromkeys(STATUSES, 0)
    of_batch = Job.batch_id == batch_id
    counts.update(session.execute(select(Job.status, func.count()).where(of_batch).group_by(Job.status)).all())
    metric_rows = session.scalars(select(Job.metrics).where(Job.batch_id == batch_id, Job.status == DONE)).all()
    last = session.scalar(select(func.max(Job.finished_at)).where(of_batch, Job.status.in_(RESULT_STATES)))
    pins = session.execute(select(Job.bank, Job.bank_version).where(of_batch, Job.bank.is_not(None)).distinct()).all()
    metrics = summarise_metrics(metric_rows)
    final = batch.done_count + batch.failed_count
    elapsed = (as_utc(last) - as_utc(batch.created_at)).total_seconds() if last else 0.0
    return BatchSummary(
        id=batch.id, key=batch.key, source=batch.source, total=batch.total, counts=counts, done=batch.done_count,
        failed=batch.failed_count, cancelled=batch.cancelled_count, state=batch_state(batch),
        created_at=as_utc(batch.created_at),
        finished_at=as_utc(batch.finished_at) if batch.finished_at else None, metrics=metrics,
        jobs_per_second=final / elapsed if elapsed > 0 else None,
        banks=sorted(f"{bank}@{version}" for bank, version in pins),
        quality=batch_quality(session=session, batch_ids=[batch_id])[batch_id],
    )


def batch_state(batch: Batch) -> str:
    """cancelled (by a user), finished (every job final), paused (no new work starts), or running."""
    if batch.cancelled_at is not None:
        return "cancelled"
    if batch.finished_at is not None:
        return "finished"
    return "paused" if batch.paused_at is not None else "running"


def summarise_metrics(rows: Sequence[dict[str, Any] | None]) -> dict[str, dict[str, float]]:
    """Mean, p50, p90 and count of each stored metric of the registry over the rows that have it."""
    out: dict[str, dict[str, float]] = {}
    for name in (metric.name for metric in stored_metrics()):
        values = sorted(float(r[name]) for r in rows if r and name in r)
        if values:
            out[name] = {
                "mean": sum(values) / len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
                "n": len(values),
            }
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list."""
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def listed(query: Select[Any], interactive: bool) -> Select[Any]:
    """`query` over batches without the one-job batches of single questions, unless `interactive`."""
    return query if interactive else query.where(or_(Batch.source.is_(None), Batch.source != INTERACTIVE))


def list_batches(*, session: Session, offset: int = 0, limit: int = 50, interactive: bool = False) -> list[BatchSummary]:
    """Batches newest first (a page of them; single questions' batches only if `interactive`), summarised as
    `batch_summary` does."""
    newest = listed(select(Batch.id), interactive).order_by(Batch.created_at.desc(), Batch.id)
    ids = session.scalars(newest.offset(offset).limit(limit)).all()
    return [summary for batch_id in ids if (summary := batch_summary(session=session, batch_id=batch_id)) is not None]


def count_batches(*, session: Session, interactive: bool = False) -> int:
    """The number of batches in the store (single questions' batches only if `interactive`)."""
    return session.scalar(listed(select(func.count()).select_from(Batch), interactive)) or 0


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
