"""The metric registry: each quality metric a job row keeps and the dashboard shows, defined once.

The job table's metric columns (storage.models), the batch summary (storage.summary), the dashboard's SQL
(storage.dashboard_queries, storage.figures) and its pages all read METRICS. Adding a metric is one entry here,
its value in `pipeline.metrics.item_metrics` and a migration adding its column (docs/architecture.md,
"Adding a metric to the dashboard"). The values themselves are computed in pipeline/metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement


@dataclass(frozen=True)
class Metric:
    """One quality metric of a job: where its value lives in SQL and how pages name, bin and print it."""

    name: str  # its key in a job's metrics JSON (and its column on the job row, when stored)
    label: str  # plain words for page headings, axes and tables
    help: str  # one line: what it measures
    unit: str = "cosine"  # of its value, on chart axes
    per_unit: int | None = None  # histogram resolution (SQL bins per unit of the value); None: no histogram
    share: bool = False  # a 0/1 flag: the batch page shows the share of jobs that have it
    fmt: str = ".3f"  # format spec of its mean on the batch page
    # SQL of a value computed from other job columns, given the job table; None: a column of its own, `name`,
    # copied from the job's metrics JSON when its result is stored (a stored metric).
    sql: Callable[[Any], ColumnElement[Any]] | None = None
    # True: the store decides its value when it writes the result (storage.repository.outcome_row), not
    # pipeline.metrics; it still lands in the metrics JSON and its column like any stored metric.
    by_store: bool = False
    over: str = "done jobs"  # which jobs have a value, in words (pages say how many did)

    def __post_init__(self) -> None:
        if self.per_unit is not None and self.share:
            raise ValueError(f"metric {self.name}: a histogram or a share, not both")

    @property
    def stored(self) -> bool:
        """Whether the job row keeps it in a column of its own."""
        return self.sql is None

    def column(self, job: Any) -> ColumnElement[Any]:
        """Its value as SQL over `job` (the Job class or a table with the same columns)."""
        return self.sql(job) if self.sql is not None else getattr(job, self.name)


METRICS: tuple[Metric, ...] = (
    Metric("score", "answer score", "the search score of the sentence chosen: cosine + 0.5 × its BM25 share, "
           "from 0 to 1.5 (not the confidence)", unit="fused score", per_unit=100, sql=lambda job: job.score,
           over="done jobs with a score"),
    Metric("e2e_cos", "answer vs reference (e2e_cos)", "cosine of the answer's embedding to the reference answer's: "
           "how close the answer's meaning is to the right one, end to end", per_unit=100,
           over="answered jobs with a reference"),
    Metric("cube_gain", "the cube's gain", "cube_cos − identity_cos: how much closer the cube's output is to the "
           "reference than the question itself; above 0 the cube helped", unit="cosine difference", per_unit=1000,
           fmt="+.4f", sql=lambda job: job.cube_cos - job.identity_cos, over="done jobs with a reference"),
    Metric("cube_cos", "cube output vs reference (cube_cos)", "cosine of the cube's output to the reference answer",
           over="done jobs with a reference"),
    Metric("identity_cos", "question vs reference (identity_cos)", "cosine of the question to the reference answer: "
           "the baseline the cube must beat", over="done jobs with a reference"),
    Metric("decode_fidelity", "answer vs cube output (decode_fidelity)", "cosine of the answer's embedding to the "
           "cube output it was decoded from: how faithfully the decoder put the vector into words (needs no "
           "reference)"),
    Metric("echo", "echoes", "answers closer to their question than to the reference answer: a decoder that "
           "paraphrases the question can score a fair e2e_cos while answering nothing", unit="share", share=True,
           over="answered jobs with a reference"),
    # 1/0 for an answered job with a reference (storage.quality.right_answer)
    Metric("right_answer", "right answers", "answered jobs whose answer is the reference sentence (precision)",
           unit="share", share=True, by_store=True, over="answered jobs with a reference"),
)


def stored_metrics() -> tuple[Metric, ...]:
    """The metrics the job row keeps as columns of their own, in registry order."""
    return tuple(metric for metric in METRICS if metric.stored)

