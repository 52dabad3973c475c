"""Paired comparison of two sets of answers on the questions they share, as DESIGN.md defines it: the outcome rates
(coverage, refusal rate, right-answer rate, precision) on every shared question, each with the difference B − A and
its 95% bootstrap interval over questions; the metric means on the questions both sides answered, likewise; and the
questions whose outcome differs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.evaluation import paired_bootstrap
from storage.comparison import Outcome, Setup

RESAMPLES, SEED = 2000, 0  # paired_bootstrap's: the same two sides always show the same intervals


@dataclass(frozen=True)
class MetricDiff:
    """One metric compared on n shared questions."""

    name: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """The interval excludes zero (the DESIGN.md rule for calling a difference real)."""
        return self.low > 0 or self.high < 0


def compare(
    side_a: dict[str, dict[str, float | None]], side_b: dict[str, dict[str, float | None]], names: tuple[str, ...]
) -> tuple[int, list[MetricDiff]]:
    """The number of shared questions and, per metric both sides have on at least two of them, its paired difference."""
    shared = sorted(set(side_a) & set(side_b))
    out = []
    for name in names:
        pairs = [(a, b) for q in shared if (a := side_a[q][name]) is not None and (b := side_b[q][name]) is not None]
        if len(pairs) < 2:
            continue
        xs = np.array([p[0] for p in pairs], dtype=np.float64)
        ys = np.array([p[1] for p in pairs], dtype=np.float64)
        interval = paired_bootstrap(ys - xs, RESAMPLES, SEED)
        means = float(xs.mean()), float(ys.mean())
        out.append(MetricDiff(name, len(pairs), *means, interval.mean, interval.low, interval.high))
    return len(shared), out


def paired_ratio(parts: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> MetricDiff | None:
    """The difference of two ratios of sums over the same questions, B − A, with its percentile 95% interval over
    resampled questions. `parts` (4, n): numerator and denominator of A, then of B, per question."""
    n = parts.shape[1]
    if n < 2 or not parts[1].sum() or not parts[3].sum():
        return None
    rng = np.random.default_rng(seed)
    step = max(1, 1_000_000 // n)  # resamples drawn at a time: (4, step, n) float64 stays near 32 MB
    diffs = []
    for start in range(0, resamples, step):
        sums = parts[:, rng.integers(0, n, (min(step, resamples - start), n))].sum(-1)  # (4, step)
        with np.errstate(invalid="ignore", divide="ignore"):
            diffs.append(sums[2] / sums[3] - sums[0] / sums[1])
    drawn = np.concatenate(diffs)
    low, high = np.nanpercentile(drawn, [2.5, 97.5])  # a resample without any answered question on a side: no ratio
    mean_a, mean_b = parts[0].sum() / parts[1].sum(), parts[2].sum() / parts[3].sum()
    return MetricDiff("precision", n, float(mean_a), float(mean_b), float(mean_b - mean_a), float(low), float(high))


@dataclass(frozen=True)
class Rate:
    """An outcome rate: its name, label and help, and each question's value (None: the question does not count)."""

    name: str
    label: str
    help: str
    value: Callable[[Outcome], float | None]


RATES = (
    Rate("coverage", "coverage", "share of questions answered rather than refused",
         lambda o: o.answered / o.jobs),
    Rate("refusal", "refusal rate", "share of questions answered 'no confident answer' (1 − coverage)",
         lambda o: 1 - o.answered / o.jobs),
    Rate("right_rate", "right-answer rate", "share of questions with a reference whose answer is the reference "
         "sentence (a refusal counts as not right)",
         lambda o: o.right / o.with_reference if o.with_reference else None),
)
PRECISION_HELP = "right answers over answered questions with a reference (each side over the questions it answered)"
RATE_TEXTS = {r.name: (r.label, r.help) for r in RATES} | {"precision": ("precision", PRECISION_HELP)}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: what it is, what its jobs were run with, and its questions' outcomes."""

    title: str
    setup: Setup
    outcomes: dict[str, Outcome]


@dataclass(frozen=True)
class Changed:
    """A shared question whose outcome differs between the sides."""

    question: str
    a: Outcome
    b: Outcome


@dataclass(frozen=True)
class Comparison:
    """Everything the compare view shows about two sides."""

    shared: int  # questions both sides have done jobs for
    rates: list[MetricDiff]  # on the shared questions
    both_answered: int  # shared questions both sides answered: what the metric differences are over
    metrics: list[MetricDiff]
    changed: list[Changed]  # sorted by the pair of outcomes, then question


def rate_diffs(a: dict[str, Outcome], b: dict[str, Outcome], shared: list[str]) -> list[MetricDiff]:
    """Coverage, refusal rate, right-answer rate and precision on the shared questions, B − A with intervals."""
    names = tuple(rate.name for rate in RATES)
    _, out = compare({q: {r.name: r.value(a[q]) for r in RATES} for q in shared},
                     {q: {r.name: r.value(b[q]) for r in RATES} for q in shared}, names)
    referenced = [q for q in shared if a[q].with_reference and b[q].with_reference]

    def shares(side: dict[str, Outcome]) -> list[list[float]]:
        # right and answered-with-reference as shares of a question's jobs with a reference: each question counts
        # once on either side, also when a model version was asked it several times
        return [[side[q].right / side[q].with_reference for q in referenced],
                [side[q].judged / side[q].with_reference for q in referenced]]

    precision = paired_ratio(np.array(shares(a) + shares(b), np.float64)) if referenced else None
    return out + ([precision] if precision is not None else [])


def comparison(a: dict[str, Outcome], b: dict[str, Outcome], metric_names: tuple[str, ...]) -> Comparison:
    """The two sides on their shared questions: outcome rates, metrics where both answered, changed outcomes."""
    shared = sorted(set(a) & set(b))
    both = [q for q in shared if a[q].answered and b[q].answered]
    _, metrics = compare({q: a[q].metrics for q in both}, {q: b[q].metrics for q in both}, metric_names)
    changed = [Changed(q, a[q], b[q]) for q in shared if a[q].label != b[q].label]
    changed.sort(key=lambda c: (c.a.label, c.b.label, c.question))
    return Comparison(len(shared), rate_diffs(a, b, shared), len(both), metrics, changed)
