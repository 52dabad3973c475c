"""The quality summary every surface shows, defined once: answered, refused, failed, right, precision, coverage.

Definitions (docs/user-guide.md, "Reading a batch's quality"):
- answered: done jobs whose decoder gave an answer (decoder path other than "none");
- refused: done jobs answered "no confident answer" (decoder path "none");
- failed: jobs that ended in an error;
- cancelled: jobs cancelled before they got a result;
- right: answered jobs whose answer is their reference sentence or one of its alternatives (the job's
  `alt_references`), compared as normalised text (`same_sentence`); decided once, when the result is stored, into
  the job's `right_answer` column (1, 0, or NULL: refused, failed, no reference);
- precision: right over answered jobs with a reference; coverage: answered over answered + refused;
  right rate: right over done jobs with a reference;
- mean confidence: over done jobs that have one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from storage.models import CANCELLED, DONE, FAILED, Job

RIGHT_COLUMN = "right_answer"  # the registry's metric (storage.metrics) and job column
REFUSED_PATH = "none"  # pipeline.decoders.base.Answer.path of a refusal


def normalised(text: str) -> str:
    """Lower case, runs of whitespace as one space (pipeline.data.answer_key's normalisation)."""
    return " ".join(text.lower().split())


def same_sentence(answer: str, reference: str) -> bool:
    """Whether an answer is the reference sentence, as normalised text."""
    return normalised(answer) == normalised(reference)


def right_answer(
    *, answer: str | None, reference: str | None, decoder_path: str | None, alternatives: Sequence[str] = (),
) -> float | None:
    """1.0 or 0.0 for an answered job with a reference (is it the reference or an alternative?); None otherwise."""
    if answer is None or reference is None or decoder_path == REFUSED_PATH:
        return None
    return 1.0 if any(same_sentence(answer, sentence) for sentence in (reference, *alternatives)) else 0.0


def ratio(part: int, whole: int) -> float | None:
    """part / whole, None when whole is 0."""
    return part / whole if whole else None


class Quality(BaseModel):
    """How good a batch's answers are; the counts are jobs, the rates are None where nothing is counted."""

    model_config = ConfigDict(frozen=True)

    answered: int = Field(0, description="done jobs with an answer")
    refused: int = Field(0, description="done jobs answered 'no confident answer'")
    failed: int = Field(0, description="jobs that ended in an error")
    cancelled: int = Field(0, description="jobs cancelled before they got a result")
    with_reference: int = Field(0, description="done jobs with a reference answer")
    judged: int = Field(0, description="answered jobs with a reference answer: precision's denominator")
    right: int = Field(
        0, description="answered jobs whose answer is the reference sentence or an alternative (normalised text)",
    )
    mean_confidence: float | None = Field(None, description="mean confidence over done jobs that have one")

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this stacking
    @property
    def precision(self) -> float | None:
        return ratio(self.right, self.judged)

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this stacking
    @property
    def coverage(self) -> float | None:
        return ratio(self.answered, self.answered + self.refused)

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this stacking
    @property
    def right_rate(self) -> float | None:
        return ratio(self.right, self.with_reference)


def batch_quality(*, session: Session, batch_ids: Sequence[str]) -> dict[str, Quality]:
    """The Quality of each batch named, from one aggregate over their jobs (a batch without jobs: all zero)."""
    if not batch_ids:
        return {}
    done = Job.status == DONE
    right = Job.__table__.c[RIGHT_COLUMN]  # a registry column (storage.models.add_metric_columns)
    refused = done & (Job.decoder_path == REFUSED_PATH)
    answered = done & (func.coalesce(Job.decoder_path, "") != REFUSED_PATH)

    def count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((condition, 1), else_=0))

    rows = session.execute(
        select(
            Job.batch_id, count(answered), count(refused), count(Job.status == FAILED), count(Job.status == CANCELLED),
            count(done & Job.reference.is_not(None)), func.count(right), func.sum(right),
            func.avg(case((done, Job.confidence))),
        ).where(Job.batch_id.in_(list(batch_ids))).group_by(Job.batch_id)
    ).all()
    out = {batch_id: Quality() for batch_id in batch_ids}
    for batch_id, n_answered, n_refused, n_failed, n_cancelled, n_reference, n_judged, n_right, confidence in rows:
        out[batch_id] = Quality(
            answered=int(n_answered or 0), refused=int(n_refused or 0), failed=int(n_failed or 0),
            cancelled=int(n_cancelled or 0),
            with_reference=int(n_reference or 0), judged=int(n_judged or 0), right=int(n_right or 0),
            mean_confidence=None if confidence is None else float(confidence),
        )
    return out


# (key, label, one-line help) of each figure every surface prints, in order; `quality_texts` formats them.
QUALITY_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("answered", "answered", "done jobs that got an answer"),
    ("refused", "refused", "done jobs answered 'no confident answer': no sentence cleared the confidence threshold"),
    ("failed", "failed", "jobs that ended in an error"),
    ("cancelled", "cancelled", "jobs cancelled before they got a result"),
    ("right", "right",
     "answered jobs whose answer is the reference or an alternative (same text, ignoring case and spaces)"),
    ("judged", "answered with a reference", "answered jobs that have a reference answer: what precision is over"),
    ("precision", "precision", "right answers over answered jobs with a reference"),
    ("coverage", "coverage", "answered jobs over answered and refused ones"),
    ("mean_confidence", "mean confidence", "the mean of the calibrated chance an answer is right, over done jobs"),
)


def percent(value: float | None) -> str:
    """A share as "46.0 %", or "–"."""
    return "–" if value is None else f"{100 * value:.1f} %"


def quality_texts(quality: Quality) -> dict[str, str]:
    """Each QUALITY_FIGURES value as printed; figures that need references are "–" when no job has one."""
    judged = quality.judged > 0
    confidence = quality.mean_confidence
    return {
        "answered": str(quality.answered), "refused": str(quality.refused), "failed": str(quality.failed),
        "cancelled": str(quality.cancelled),
        "right": str(quality.right) if judged else "–", "judged": str(quality.judged),
        "precision": percent(quality.precision), "coverage": percent(quality.coverage),
        "mean_confidence": "–" if confidence is None else f"{confidence:.2f}",
    }
