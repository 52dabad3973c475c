"""Paired comparison of two sets of answers on the questions they share: per metric the means, the mean
difference (B − A) and its 95% bootstrap interval over questions, as DESIGN.md defines it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0  # fixed: the same two batches always show the same interval


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


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """Mean of b − a and the 2.5th/97.5th percentiles of that mean over question resamples; a, b: (N,) paired."""
    diffs = b - a
    rng = np.random.default_rng(seed)
    n = len(diffs)
    step = max(1, 4_000_000 // n)  # resamples drawn at a time: memory stays near 32 MB for any n
    means = np.concatenate(
        [diffs[rng.integers(0, n, size=(min(step, resamples - start), n))].mean(axis=1) for start in range(0, resamples, step)]
    )
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(low), float(high)


def compare(
    side_a: dict[str, dict[str, float | None]], side_b: dict[str, dict[str, float | None]], names: tuple[str, ...]
) -> tuple[int, list[MetricDiff]]:
    """The number of shared questions and, per metric both sides have on at least two of them, its paired difference."""
    shared = sorted(set(side_a) & set(side_b))
    out = []
    for name in names:
        pairs = [(side_a[q][name], side_b[q][name]) for q in shared if side_a[q][name] is not None and side_b[q][name] is not None]
        if len(pairs) < 2:
            continue
        a = np.array([p[0] for p in pairs], dtype=np.float64)
        b = np.array([p[1] for p in pairs], dtype=np.float64)
        diff, low, high = paired_bootstrap(a, b)
        out.append(MetricDiff(name=name, n=len(pairs), mean_a=float(a.mean()), mean_b=float(b.mean()), diff=diff, low=low, high=high))
    return len(shared), out
