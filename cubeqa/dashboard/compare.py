"""Paired comparison of two sets of answers on the questions they share: per metric the means, the mean
difference (B − A) and its 95% bootstrap interval over questions, as DESIGN.md defines it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.evaluation import paired_bootstrap


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
        interval = paired_bootstrap(ys - xs)  # its fixed seed: the same two batches always show the same interval
        means = float(xs.mean()), float(ys.mean())
        out.append(MetricDiff(name, len(pairs), *means, interval.mean, interval.low, interval.high))
    return len(shared), out
