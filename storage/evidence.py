"""A job as its dashboard page shows it, typed: the verdict on its confidence (with the threshold it was judged
against), its evidence (the answer's sentence, or for a refusal the best match, with document, section path,
position and neighbours) and the alternatives with their scores, read from the job row and its `evidence` JSON
(written by pipeline.confidence.evidence)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from storage.models import CANCELLED, DONE, FAILED, Job
from storage.quality import REFUSED_PATH, RIGHT_COLUMN, same_sentence
from storage.summary import as_utc


def optional_float(value: Any) -> float | None:
    """A JSON number as a float, None when absent."""
    return None if value is None else float(value)


@dataclass(frozen=True)
class Sentence:
    """One bank sentence the answer was chosen among: its scores and where it comes from."""

    text: str
    score: float | None  # fused: cosine + 0.5 × BM25 share
    dense: float | None  # cosine of the answer vector and the sentence
    lexical: float | None  # BM25 / the question's best BM25 in the bank
    rerank: float | None  # the rerank stage's score, when it reordered the candidates
    doc_id: str | None
    title: str | None
    source: str | None
    position: int | None  # 0-based, as the JSON keeps it
    section: tuple[str, ...]
    before: tuple[str, ...]  # nearest last
    after: tuple[str, ...]  # nearest first
    is_reference: bool  # the job's reference sentence (normalised text)

    @classmethod
    def from_record(cls, data: dict[str, Any], reference: str | None) -> Sentence:
        """From one sentence record of the evidence JSON."""
        text = str(data.get("sentence", ""))
        position = data.get("position")
        return cls(
            text=text, score=optional_float(data.get("score")), dense=optional_float(data.get("dense")),
            lexical=optional_float(data.get("lexical")), rerank=optional_float(data.get("rerank")),
            doc_id=data.get("doc_id"), title=data.get("title"), source=data.get("source"),
            position=None if position is None else int(position), section=tuple(data.get("section") or ()),
            before=tuple(data.get("before") or ()), after=tuple(data.get("after") or ()),
            is_reference=reference is not None and same_sentence(text, reference),
        )

    @property
    def number(self) -> int | None:
        """Its place in the document counted from 1, as `cubeqa ask` prints it."""
        return None if self.position is None else self.position + 1

    @property
    def document(self) -> str:
        """The document as a reader knows it: its source file, else its title, else its id."""
        return self.source or self.title or self.doc_id or "–"


@dataclass(frozen=True)
class Evidence:
    """The chosen (or best refused) sentence and the other candidates, best first."""

    best: Sentence
    alternatives: tuple[Sentence, ...]
    reranked: bool
    threshold: float | None  # the threshold the worker judged the confidence against (None: not recorded)


def parse_evidence(data: dict[str, Any] | None, reference: str | None) -> Evidence | None:
    """The typed evidence of a job's JSON; None for a job without one (generated text, failed, older rows)."""
    if not data or "sentence" not in data:
        return None
    return Evidence(
        best=Sentence.from_record(data, reference),
        alternatives=tuple(Sentence.from_record(alt, reference) for alt in data.get("alternatives") or ()),
        reranked=bool(data.get("reranked")), threshold=optional_float(data.get("threshold")),
    )


@dataclass(frozen=True)
class Judgement:
    """How the job's answer was judged: its confidence against a threshold (the page words the verdict)."""

    confidence: float | None
    threshold: float | None
    threshold_from: str  # where the threshold came from, in words
    # answered; refused (confidence below the threshold); below_min_score (no sentence cleared the search's minimum
    # score); unscored (answered without a confidence: generated text, or no calibrator); open (not final); failed; cancelled
    verdict: str


def judgement(job: Job, evidence: Evidence | None) -> Judgement:
    """The confidence, the threshold it was judged against and the verdict of a job."""
    threshold = evidence.threshold if evidence and evidence.threshold is not None else job.min_confidence
    if job.min_confidence is not None:
        source = "set with the submission"
    elif threshold is not None:
        source = "the worker's default"
    else:
        source = "the worker's default, not recorded for this job"
    if job.status != DONE:
        verdict = {FAILED: "failed", CANCELLED: "cancelled"}.get(job.status, "open")
    elif job.decoder_path == REFUSED_PATH:
        verdict = "below_min_score" if job.confidence is None else "refused"
    else:
        verdict = "unscored" if job.confidence is None else "answered"
    return Judgement(job.confidence, threshold, source, verdict)


@dataclass(frozen=True)
class JobDetail:
    """Everything the job page shows, typed (the full record stays beside it as JSON)."""

    id: str
    batch_id: str
    status: str
    question: str
    reference: str | None
    answer: str | None
    decoder_path: str | None
    score: float | None
    right: bool | None  # the answer is the reference sentence (None: refused, failed or no reference)
    judgement: Judgement
    evidence: Evidence | None
    error: str | None
    model_version: str | None
    bank: str | None
    bank_version: str | None
    rerank: bool | None
    attempts: int
    dispatches: int
    moments: tuple[datetime | None, ...]  # created, started, finished (UTC)
    metrics: dict[str, float]
    timings_ms: dict[str, float]
    hosts: dict[str, str]


def job_detail(session: Session, job_id: str) -> JobDetail | None:
    """The job as its page shows it, None when there is no such job."""
    job = session.get(Job, job_id)
    return None if job is None else detail_of(job)


def detail_of(job: Job) -> JobDetail:
    """A job row as its page shows it."""
    evidence = parse_evidence(job.evidence, job.reference)
    right = getattr(job, RIGHT_COLUMN)
    return JobDetail(
        id=job.id, batch_id=job.batch_id, status=job.status, question=job.question, reference=job.reference,
        answer=job.answer, decoder_path=job.decoder_path, score=job.score, right=None if right is None else right == 1,
        judgement=judgement(job, evidence), evidence=evidence, error=job.error, model_version=job.model_version,
        bank=job.bank, bank_version=job.bank_version, rerank=job.rerank, attempts=job.attempts,
        dispatches=job.dispatches,
        moments=tuple(as_utc(m) if m else None for m in (job.created_at, job.started_at, job.finished_at)),
        metrics=dict(job.metrics or {}), timings_ms=dict(job.timings_ms or {}), hosts=dict(job.hosts or {}),
    )
