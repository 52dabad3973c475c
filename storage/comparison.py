"""What the compare view reads, in SQL: each question's outcome on one side (a batch or a model version) and what
the side's jobs were run with (banks, thresholds, rerank, decoder paths, model versions)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from storage import metrics as registry
from storage.models import DONE, Job
from storage.quality import REFUSED_PATH, RIGHT_COLUMN

# What a job was run with; batch_rows groups by these too, so a listed batch carries its Setup.
SETUP_COLUMNS = (Job.model_version, Job.bank, Job.bank_version, Job.min_confidence, Job.rerank, Job.decoder_path)
OWN_BANK = "the model's own"
DEFAULT_THRESHOLD = "worker default"


@dataclass(frozen=True)
class Setup:
    """What a set of jobs was run with, each as the distinct values its jobs have."""

    banks: tuple[str, ...] = ()  # "name@version", or OWN_BANK
    thresholds: tuple[float | None, ...] = ()  # min_confidence; None: the worker's default
    reranks: tuple[bool | None, ...] = ()  # None: rows from before the rerank stage
    paths: tuple[str, ...] = ()  # decoder paths of the done jobs ("none": refused)
    versions: tuple[str, ...] = ()
    defaults: tuple[float, ...] = ()  # the worker defaults its jobs recorded judging by (with_defaults), if read

    def texts(self) -> dict[str, str]:
        """Each part as a page prints it, by label."""
        default = DEFAULT_THRESHOLD + (f" ({', '.join(f'{t:.2f}' for t in self.defaults)})" if self.defaults else "")
        threshold = [default if t is None else f"{t:.2f}" for t in self.thresholds]
        rerank = ["–" if r is None else ("on" if r else "off") for r in self.reranks]
        return {
            "bank": ", ".join(self.banks) or "–", "threshold": ", ".join(threshold) or "–",
            "rerank": ", ".join(rerank) or "–", "decoder paths": ", ".join(self.paths) or "–",
            "model": ", ".join(self.versions) or "–",
        }

    def line(self) -> str:
        """The whole setup on one line (for a drop-down option)."""
        return " · ".join(f"{label} {value}" for label, value in self.texts().items())


def none_first(value: float | bool | None) -> tuple[bool, float]:
    """Sort key: None before every value."""
    return (value is not None, float(value or 0))


@dataclass
class SetupParts:
    """The distinct setup values met while reading grouped job rows."""

    banks: set[str] = field(default_factory=set)
    thresholds: set[float | None] = field(default_factory=set)
    reranks: set[bool | None] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)

    def add(self, row: tuple[Any, ...], done: bool) -> None:
        """One group's SETUP_COLUMNS values; decoder paths count for done jobs only."""
        version, bank, bank_version, threshold, rerank, path = row
        self.banks.add((f"{bank}@{bank_version}" if bank_version else bank) if bank else OWN_BANK)
        self.thresholds.add(None if threshold is None else float(threshold))
        self.reranks.add(None if rerank is None else bool(rerank))
        if done and path is not None:
            self.paths.add(str(path))
        if version is not None:
            self.versions.add(str(version))

    def setup(self) -> Setup:
        """The values met, sorted (None first)."""
        return Setup(
            banks=tuple(sorted(self.banks)), thresholds=tuple(sorted(self.thresholds, key=none_first)),
            reranks=tuple(sorted(self.reranks, key=none_first)), paths=tuple(sorted(self.paths)),
            versions=tuple(sorted(self.versions)),
        )


def with_defaults(session: Session, setup: Setup, where: ColumnElement[bool]) -> Setup:
    """The setup with the default thresholds the workers recorded in the evidence of the done jobs that had no
    threshold of their own (`where` picks the jobs)."""
    if None not in setup.thresholds:
        return setup
    recorded = Job.evidence["threshold"].as_float()
    values = session.scalars(
        select(recorded).where(where, Job.status == DONE, Job.min_confidence.is_(None), recorded.is_not(None))
        .group_by(recorded)
    ).all()
    return replace(setup, defaults=tuple(sorted(float(v) for v in values)))


def version_setup(session: Session, version: str) -> Setup:
    """What the jobs a model version answered were run with."""
    parts = SetupParts()
    rows = session.execute(
        select(*SETUP_COLUMNS).where(Job.model_version == version, Job.status == DONE).group_by(*SETUP_COLUMNS)
    ).all()
    for row in rows:
        parts.add(tuple(row), done=True)
    return parts.setup()


@dataclass(frozen=True)
class Outcome:
    """One question's done jobs on one side: answered, right, and metric means over its answered jobs."""

    jobs: int
    answered: int
    with_reference: int  # done jobs with a reference
    judged: int  # answered jobs with a reference
    right: int
    confidence: float | None  # mean over the jobs that have one
    answer: str | None  # an answer it got (the first in text order), for the table of changed outcomes
    metrics: dict[str, float | None]

    @property
    def label(self) -> str:
        """In words, when all its jobs agree: refused, right, wrong, answered (no reference); else the counts."""
        if not self.answered:
            return "refused"
        if self.answered == self.jobs and self.judged in (0, self.answered) and self.right in (0, self.judged):
            return "answered" if not self.judged else ("right" if self.right else "wrong")
        text = f"{self.answered} of {self.jobs} answered"
        return f"{text}, {self.right} right" if self.judged else text


def count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """SQL: the number of rows where `condition` holds."""
    return func.sum(case((condition, 1), else_=0))


def outcomes(session: Session, *, batch_id: str | None = None, version: str | None = None) -> dict[str, Outcome]:
    """Each question's Outcome over the done jobs of a batch or of a model version, by question text."""
    column, value = (Job.batch_id, batch_id) if batch_id is not None else (Job.model_version, version)
    answered = func.coalesce(Job.decoder_path, "") != REFUSED_PATH
    right = Job.__table__.c[RIGHT_COLUMN]
    means = [func.avg(case((answered, m.column(Job)))) for m in registry.METRICS]
    rows = session.execute(
        select(
            Job.question, func.count(), count(answered), count(Job.reference.is_not(None)), func.count(right),
            func.coalesce(func.sum(right), 0), func.avg(Job.confidence), func.min(case((answered, Job.answer))), *means,
        ).where(Job.status == DONE, column == value).group_by(Job.question)
    ).all()
    names = [m.name for m in registry.METRICS]
    return {
        row[0]: Outcome(
            jobs=int(row[1]), answered=int(row[2]), with_reference=int(row[3]), judged=int(row[4]), right=int(row[5]),
            confidence=None if row[6] is None else float(row[6]), answer=row[7],
            metrics={name: None if v is None else float(v) for name, v in zip(names, row[8:])},
        )
        for row in rows
    }
