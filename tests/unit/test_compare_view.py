"""The compare view's outcome rates: coverage, refusal rate, right-answer rate and precision paired on the shared
questions with bootstrap intervals, metrics only where both sides answered, and the questions whose outcome differs."""

from __future__ import annotations

import numpy as np
import pytest

from cubeqa.dashboard.compare import comparison, paired_ratio
from storage.comparison import Outcome


def outcome(answered: bool, right: bool | None, e2e: float | None = None) -> Outcome:
    """One question asked once, with a reference."""
    return Outcome(jobs=1, answered=int(answered), with_reference=1, judged=int(answered), right=int(bool(right)),
                   confidence=0.5, answer="an answer" if answered else None,
                   metrics={"e2e_cos": e2e if answered else None})


def test_rates_pair_up_on_the_shared_questions() -> None:
    # A answers questions 0-49 (right: 0-29); B answers 0-79 (right: 0-19 and 50-69); question 100 only A has
    a = {f"q{i}": outcome(i < 50, i < 30, 0.5) for i in range(100)} | {"q100": outcome(True, True, 0.9)}
    b = {f"q{i}": outcome(i < 80, i < 20 or 50 <= i < 70, 0.6) for i in range(100)}
    result = comparison(a, b, ("e2e_cos",))
    rates = {d.name: d for d in result.rates}
    assert result.shared == 100 and result.both_answered == 50
    assert (rates["coverage"].mean_a, rates["coverage"].mean_b) == (0.5, 0.8)
    coverage = rates["coverage"]
    assert coverage.diff == pytest.approx(0.3) and coverage.low > 0.15 and coverage.significant
    assert rates["refusal"].diff == pytest.approx(-0.3) and rates["refusal"].high < 0
    assert (rates["right_rate"].mean_a, rates["right_rate"].mean_b) == (0.3, 0.4)
    precision = rates["precision"]
    assert (precision.mean_a, precision.mean_b) == (0.6, 0.5) and precision.diff == pytest.approx(-0.1)
    assert precision.low < precision.diff < precision.high
    [e2e] = result.metrics
    assert e2e.n == 50 and e2e.diff == pytest.approx(0.1)  # only where both answered
    changed = {c.question: (c.a.label, c.b.label) for c in result.changed}
    assert len(changed) == 30 + 10  # 50-79: refused by A, answered by B; 20-29: right on A, wrong on B
    assert changed["q55"] == ("refused", "right") and changed["q25"] == ("right", "wrong") and "q5" not in changed


def test_a_question_asked_several_times_has_one_word_when_its_jobs_agree() -> None:
    def asked(jobs: int, answered: int, right: int) -> str:
        return Outcome(jobs, answered, jobs, answered, right, None, None, {}).label

    assert (asked(2, 0, 0), asked(2, 2, 0), asked(2, 2, 2)) == ("refused", "wrong", "right")
    assert (asked(2, 1, 0), asked(2, 2, 1)) == ("1 of 2 answered, 0 right", "2 of 2 answered, 1 right")


def test_the_precision_interval_is_a_paired_bootstrap_of_the_ratio() -> None:
    rng = np.random.default_rng(3)
    n = 400
    answered_a = rng.random(n) < 0.5
    answered_b = answered_a | (rng.random(n) < 0.3)
    right = rng.random(n) < 0.6
    parts = np.array([right & answered_a, answered_a, right & answered_b, answered_b], np.float64)
    diff = paired_ratio(parts)
    assert diff is not None and diff.n == n
    assert diff.mean_a == pytest.approx(parts[0].sum() / parts[1].sum())
    assert diff.low < diff.diff < diff.high and diff.high - diff.low < 0.2
    assert paired_ratio(np.zeros((4, 10))) is None  # nothing answered: no precision
