"""Metrics, bootstrap intervals and baselines on small hand-made data."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import EmbeddedPairs, QAPair, evaluate, paired_bootstrap
from pipeline.baselines import MeanAnswer, MeanShift, NearestQuestion, ResidualRidge, Ridge, normalise
from pipeline.evaluation import echo_rate, retrieval_metrics, retrieval_ranks


def test_bootstrap_interval_of_a_constant_is_that_constant() -> None:
    interval = paired_bootstrap(np.full(50, 0.25), resamples=200)
    assert interval.mean == pytest.approx(0.25)
    assert interval.low == pytest.approx(0.25) and interval.high == pytest.approx(0.25)
    assert interval.excludes_zero


def test_bootstrap_interval_of_centred_noise_includes_zero() -> None:
    noise = np.random.default_rng(0).normal(0, 1, 400)
    noise -= noise.mean()
    interval = paired_bootstrap(noise, resamples=500)
    assert interval.low < 0 < interval.high
    assert not interval.excludes_zero


def test_bootstrap_interval_shrinks_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    small = paired_bootstrap(rng.normal(0.1, 1, 100), resamples=500)
    large = paired_bootstrap(rng.normal(0.1, 1, 10000), resamples=500)
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_retrieval_ranks_and_metrics() -> None:
    bank = np.eye(4, dtype=np.float32)
    queries = normalise(np.array([[1, 0.1, 0, 0], [0.9, 1, 0, 0], [0, 0, 0.2, 1]], np.float32))
    ranks = retrieval_ranks(queries, bank, np.array([0, 0, 2]))
    assert ranks.tolist() == [1, 2, 2]
    tied = retrieval_ranks(np.array([[1.0, 0.0]], np.float32), np.array([[1.0, 0.0], [1.0, 0.0]], np.float32), np.array([1]))
    assert tied.tolist() == [2]  # a tie with another sentence counts against the target
    metrics = retrieval_metrics(ranks)
    assert metrics["R@1"] == pytest.approx(1 / 3)
    assert metrics["R@10"] == 1.0
    assert metrics["MRR"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_echo_rate_counts_answers_closer_to_the_question() -> None:
    q = np.array([[1, 0], [1, 0]], np.float32)
    ref = np.array([[0, 1], [0, 1]], np.float32)
    answers = normalise(np.array([[1, 0.2], [0.1, 1]], np.float32))
    assert echo_rate(answers, q, ref) == 0.5


def synthetic(n: int, seed: int, shift: np.ndarray, mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = normalise(rng.normal(size=(n, shift.shape[0])).astype(np.float32))
    a = normalise(q @ mix + shift + 0.05 * rng.normal(size=q.shape).astype(np.float32))
    return q, a


def test_mean_shift_and_ridge_beat_identity_when_answers_are_shifted() -> None:
    dim = 8
    rng = np.random.default_rng(2)
    shift, mix = rng.normal(size=dim).astype(np.float32) * 0.5, np.eye(dim, dtype=np.float32)
    q, a = synthetic(500, 3, shift, mix)
    vq, va = synthetic(200, 4, shift, mix)
    identity = (vq * va).sum(-1).mean()
    mean_shift = MeanShift.fit(q, a)
    assert mean_shift.beta > 0
    assert (mean_shift(vq) * va).sum(-1).mean() > identity + 0.02
    assert (Ridge.fit(q, a)(vq) * va).sum(-1).mean() > 0.95  # the true map is linear
    assert (ResidualRidge.fit(q, a, penalty=1.0)(vq) * va).sum(-1).mean() > 0.95
    mean_answer = MeanAnswer.fit(q, a)(vq)
    assert np.allclose(mean_answer, mean_answer[0])
    nearest = NearestQuestion.fit(q, a)(q[:5])
    assert np.array_equal(nearest, a[:5])  # each train question is its own nearest


def embedded(q: np.ndarray, a: np.ndarray, prefix: str) -> EmbeddedPairs:
    pairs = [QAPair(f"{prefix} q{i}", f"{prefix} a{i}", f"{prefix}{i}") for i in range(len(q))]
    return EmbeddedPairs(pairs=pairs, q=q, a=a, data_hash=prefix)


def test_evaluate_reports_every_metric_and_paired_differences() -> None:
    dim = 8
    rng = np.random.default_rng(5)
    shift, mix = rng.normal(size=dim).astype(np.float32) * 0.5, np.eye(dim, dtype=np.float32)
    train, val = embedded(*synthetic(300, 6, shift, mix), "t"), embedded(*synthetic(100, 7, shift, mix), "v")
    ridge = Ridge.fit(train.q, train.a)
    report = evaluate(ridge, train, val, resamples=200)
    assert report.cos["cube_cos"] == pytest.approx(report.cos["ridge_cos"])
    assert set(report.cos) == {f"{m}_cos" for m in ("cube", "identity", "mean_shift", "ridge", "residual_ridge", "mean_answer", "nearest_question")}
    assert report.differences["cube − identity: cos"].low > 0
    assert report.retrieval["cube"]["R@1"] >= report.retrieval["identity"]["R@1"]
    assert report.bank_sizes == {"open": 400, "closed": 300}
    assert report.e2e["echo_rate_closed"] < 0.5  # answers follow the shifted reference, not the question
    assert report.warnings == []
    leaky = evaluate(ridge, train, train, resamples=50)
    assert "not held-out" in leaky.warnings[0]
    assert report.e2e["e2e_cos_open"] >= report.e2e["e2e_cos_closed"] - 1e-6  # the open bank holds the true answers
