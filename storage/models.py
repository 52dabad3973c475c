"""SQLAlchemy 2.x tables: batch, job, model version and webhook delivery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.metrics import stored_metrics

QUEUED, RUNNING, PAUSED, DONE, FAILED, CANCELLED = "queued", "running", "paused", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, PAUSED, DONE, FAILED, CANCELLED)
FINAL = (DONE, FAILED, CANCELLED)
RESULT_STATES = (DONE, FAILED)  # the final states a stage chain writes (a cancel is a user's word, not a result)
UNFINISHED = (QUEUED, RUNNING, PAUSED)  # PAUSED: held by its paused batch, sent again on resume
ID_LENGTH = 32  # uuid4 hex (repository.new_id)
KEY_LENGTH = 200  # longest idempotency key
SOURCE_LENGTH = 500  # longest batch source label
INTERACTIVE = "api:job"  # source of the one-job batches of single questions (POST /v1/jobs): listings skip them unless asked
BANK_LENGTH = 64  # longest bank name (pipeline.knowledge.store.check_name) and version
URL_LENGTH = 2000  # longest callback URL
PENDING, DELIVERED = "pending", "delivered"  # a webhook delivery's states besides FAILED (given up)
# The registry's stored metrics (pipeline.metrics.item_metrics computes them), which a job row also keeps as plain
# columns beside its metrics JSON, so that SQL sums and bins them without parsing JSON (storage.figures).
METRIC_COLUMNS = tuple(metric.name for metric in stored_metrics())


def metric_columns(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    """The METRIC_COLUMNS values of a metrics dict (None where it has no such metric)."""
    metrics = metrics or {}
    return {name: None if metrics.get(name) is None else float(metrics[name]) for name in METRIC_COLUMNS}


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def is_id(value: str) -> bool:
    """Whether `value` has the shape of the ids this store issues; anything else names no row and is never
    sent to the database (PostgreSQL refuses NUL bytes, for one)."""
    return len(value) == ID_LENGTH and all(c in "0123456789abcdef" for c in value)


# Deterministic constraint names on every backend, so a migration can name what it alters or drops.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; Alembic autogenerates from its metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ModelVersion(Base):
    """A bundle version that produced results (bundle name @ weights id)."""

    __tablename__ = "model_version"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Batch(Base):
    """One submission; its counters move only when a job first reaches a final state (and back on a retry)."""

    __tablename__ = "batch"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    key: Mapped[str | None] = mapped_column(String(KEY_LENGTH), unique=True)  # client idempotency key
    source: Mapped[str | None] = mapped_column(String(SOURCE_LENGTH))
    total: Mapped[int] = mapped_column(Integer)
    done_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    cancelled_count: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_url: Mapped[str | None] = mapped_column(String(URL_LENGTH))  # POSTed the summary once every job is final
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # set: no new work of it is started
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # set: its jobs were cancelled


class Job(Base):
    """One question: its input, lifecycle and, once done, its answer with metrics, timings and hosts."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_batch_position", "batch_id", "position"),
        Index("ix_job_status_dispatched", "status", "dispatched_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # order within the batch (input line order)
    line: Mapped[int | None] = mapped_column(Integer)  # line number in the submitted file, when there was one
    question: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    # other sentences that count as right beside the reference (None: none given, rows before 0009)
    alt_references: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # deliveries to the encode stage
    dispatches: Mapped[int] = mapped_column(Integer, default=0)  # times sent to the queue (1 + reconciler re-sends)
    # attempts made before its last retry (cubeqa retry): the reconciler's max_attempts counts from here
    attempt_base: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    decoder_path: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # None is SQL NULL, not JSON 'null'
    timings_ms: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    hosts: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    model_version: Mapped[str | None] = mapped_column(ForeignKey("model_version.id"))
    # knowledge bank (None: the bundle's own, rows before 0003)
    bank: Mapped[str | None] = mapped_column(String(BANK_LENGTH))
    bank_version: Mapped[str | None] = mapped_column(String(BANK_LENGTH))  # pinned when the job was stored
    min_confidence: Mapped[float | None] = mapped_column(Float)  # the submission's threshold (None: the worker's)
    rerank: Mapped[bool | None] = mapped_column(Boolean)  # the rerank stage reorders its candidates (None: rows before 0006)
    confidence: Mapped[float | None] = mapped_column(Float)  # calibrated probability the answer sentence is right
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # pipeline.confidence.evidence
    callback_url: Mapped[str | None] = mapped_column(String(URL_LENGTH))  # POSTed the job once it is final
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One POST of a final batch's or job's summary to its callback URL, with every attempt's outcome (an outbox row:
    written in the transaction that made it final, sent by the hooks worker, re-sent by the reconciler if lost)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))  # None: the batch's hook
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)  # pending, delivered or failed (gave up)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)  # the receiver's last HTTP status (None: no answer)
    last_error: Mapped[str | None] = mapped_column(Text)  # why the last attempt failed (None after a success)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # an attempt is under way until then
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def add_metric_columns(job: type[Job]) -> None:
    """One nullable Float column per METRIC_COLUMNS name, the copy of its `metrics` value (metric_columns).

    Declarative maps a column set on the class after its body (SQLAlchemy: "appending additional columns")."""
    for name in METRIC_COLUMNS:
        setattr(job, name, mapped_column(name, Float, nullable=True))


add_metric_columns(Job)
