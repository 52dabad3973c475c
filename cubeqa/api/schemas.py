"""Request and response bodies of the API (the JSON fields clients rely on)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from cubeqa.intake import MAX_ALT_ANSWERS, MAX_MICRO_BATCH, check_key
from storage.models import KEY_LENGTH
from storage.summary import BatchSummary


class QuestionIn(BaseModel):
    """One question, optionally with a reference answer to score against (checked by `cubeqa.intake`)."""

    question: str = Field(description="the question text")
    reference: str | None = Field(None, description="a reference answer; adds quality metrics to the result")
    alt_answers: list[str] | None = Field(
        None,
        description=f"other sentences that count as right beside the reference (at most {MAX_ALT_ANSWERS}; needs a reference)",
    )


BANK = Field(None, description="knowledge bank to answer from (default: CUBEQA_BANK); its current version is pinned for every job")
MIN_CONFIDENCE = Field(None, ge=0.0, le=1.0, description="answers less likely right than this become 'no confident answer'")
RERANK = Field(None, description="rerank the candidates in the rerank stage (default: CUBEQA_RERANK, when the bundle has a reranker)")
CALLBACK = Field(None, description="POST the final summary here (the body GET returns), signed with HMAC-SHA256; "
                 "https to a public address unless the server allows more (docs/user-guide.md, Webhooks)")


class JobIn(QuestionIn):
    """One question, with the bank to answer it from and the confidence threshold."""

    bank: str | None = BANK
    min_confidence: float | None = MIN_CONFIDENCE
    rerank: bool | None = RERANK
    callback_url: str | None = CALLBACK


class BatchIn(BaseModel):
    items: list[QuestionIn] = Field(min_length=1, description="the questions")
    bank: str | None = BANK
    min_confidence: float | None = MIN_CONFIDENCE
    rerank: bool | None = RERANK
    callback_url: str | None = CALLBACK
    key: str | None = Field(None, max_length=KEY_LENGTH, description="idempotency key: resubmitting with it is a no-op")
    micro_batch: int | None = Field(None, ge=1, le=MAX_MICRO_BATCH, description="jobs per stage task")

    @field_validator("key")
    @classmethod
    def storable_key(cls, value: str | None) -> str | None:
        return None if value is None else check_key(value)


class Accepted(BaseModel):
    """A stored batch: its id, its jobs' ids in input order, whether this request created it."""

    batch_id: str
    job_ids: list[str] = Field(default_factory=list)
    created: bool
    jobs: int


class JobPublic(BaseModel):
    """One job: status, answer with its confidence and evidence, decoder path, score, metrics, per-stage timings and hosts."""

    id: str
    batch_id: str
    line: int | None
    question: str
    reference: str | None
    alt_references: list[str] | None = Field(
        None, description="the submission's alt_answers: other sentences that count as right beside the reference",
    )
    status: str
    answer: str | None
    decoder_path: str | None
    score: float | None
    error: str | None
    attempts: int
    metrics: dict[str, bool | int | float | None]  # as the stage stored them (an int stays an int in the JSON)
    timings_ms: dict[str, float]
    hosts: dict[str, str]
    model_version: str | None
    bank: str | None  # None: the bundle's own bank (jobs stored before banks)
    bank_version: str | None
    min_confidence: float | None
    rerank: bool | None = Field(None, description="whether the rerank stage answers this job (None: jobs stored before it existed)")
    confidence: float | None = Field(description="calibrated probability that the answer sentence is right; None for generated text")
    evidence: dict[str, Any] | None = Field(
        description="the answer sentence, its document (doc_id, title, source), position, neighbours (before, after), score "
        "and the alternatives with theirs"
    )


class BatchPublic(BatchSummary):
    """Progress (counts by status) and quality aggregates of a batch."""

    @classmethod
    def of(cls, summary: BatchSummary) -> BatchPublic:
        return cls.model_validate(summary.model_dump())


class BatchList(BaseModel):
    """A page of batches, newest first."""

    batches: list[BatchPublic]
    total: int
    offset: int
    limit: int


class WebhookDeliveryPublic(BaseModel):
    """One webhook delivery of a batch (event batch.final) or of one of its jobs (job.final), with its attempts."""

    id: str = Field(description="the X-Cubeqa-Delivery header: the same on every attempt")
    event: str
    batch_id: str
    job_id: str | None
    url: str
    status: str = Field(description="pending, delivered, or failed (every attempt spent, or the URL refused)")
    attempts: int
    last_status_code: int | None = Field(description="the receiver's HTTP status at the last attempt (None: no answer)")
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
class Controlled(BaseModel):
    """What a cancel, pause, resume or retry did, and the batch after it."""

    action: str = Field(description="cancel, pause, resume or retry")
    jobs: int = Field(description="jobs cancelled, waiting (pause), resumed or retried")
    sent: int = Field(0, description="of them, sent to the queues now (resume, retry)")
    batch: BatchPublic
