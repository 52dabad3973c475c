"""Calibrator fits, their JSON round trip, ECE, grouped folds and the bank evaluation figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.bank_eval import (
    bank_evaluation,
    calibration_report,
    flat_bank,
    gold_ranks,
    precision_coverage,
    unique_bank,
)
from pipeline.calibration import (
    Calibrator,
    cross_validate,
    expected_calibration_error,
    features,
    fit,
    grouped_folds,
    load_calibration,
    save_calibration,
)
from pipeline.errors import BundleError


def synthetic(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Descending top-10 scores where a higher top score and margin make a right answer likelier."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.2, 0.95, n)
    margin = rng.uniform(0.0, 0.2, n) * top
    rest = top[:, None] - margin[:, None] - np.sort(rng.uniform(0, 0.1, (n, 9)), axis=1)
    scores = np.concatenate([top[:, None], rest], axis=1)
    p = 1 / (1 + np.exp(-(12 * (top - 0.55) + 15 * margin)))
    return scores, (rng.uniform(size=n) < p).astype(float)


@pytest.mark.parametrize("kind", ["isotonic", "logistic"])
def test_fit_is_monotone_in_top_score(kind: str) -> None:
    scores, correct = synthetic()
    cal = fit(scores, correct, kind)
    top = np.linspace(0.0, 1.0, 201)
    grid = np.stack([top, top - 0.05], axis=1)  # fixed margin 0.05
    p = cal.predict(grid)
    assert np.all(np.diff(p) >= -1e-12)
    assert p[-1] > p[0] + 0.5  # and not flat
    assert np.all((p >= 0) & (p <= 1))


@pytest.mark.parametrize("kind", ["isotonic", "logistic"])
def test_json_round_trip_gives_the_same_predictions(kind: str, tmp_path) -> None:
    scores, correct = synthetic()
    cal = fit(scores, correct, kind)
    save_calibration(tmp_path, cal, {"min_confidence": 0.4})
    record = json.loads((tmp_path / "calibration.json").read_text())
    assert record["min_confidence"] == 0.4 and record["calibrator"]["kind"] == kind
    loaded = load_calibration(tmp_path)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.predict(scores), cal.predict(scores))


def test_no_calibration_file_is_none_and_a_bad_one_is_a_bundle_error(tmp_path) -> None:
    assert load_calibration(tmp_path) is None
    (tmp_path / "calibration.json").write_text('{"calibrator": {"kind": "forest", "features": [], "intercept": 0}}')
    with pytest.raises(BundleError, match="forest"):
        load_calibration(tmp_path)
    (tmp_path / "calibration.json").write_text("not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_calibration(tmp_path)


def test_ece_is_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(size=200_000)
    correct = (rng.uniform(size=confidence.size) < confidence).astype(float)
    assert expected_calibration_error(confidence, correct) < 0.01
    assert expected_calibration_error(confidence, correct, equal_mass=True) < 0.01
    overconfident = np.clip(confidence + 0.3, 0, 1)
    assert expected_calibration_error(overconfident, correct) > 0.2
    assert expected_calibration_error(np.full(10, 0.9), np.zeros(10)) == pytest.approx(0.9)


def test_cross_validated_calibrator_is_well_calibrated_on_synthetic_data() -> None:
    scores, correct = synthetic(4000)
    groups = np.arange(len(correct)) // 500
    for kind in ("isotonic", "logistic"):
        result = cross_validate(scores, correct, groups, kind, folds=4)
        assert result.ece < 0.05
        assert result.confidence.shape == correct.shape


def test_grouped_folds_keep_groups_whole_and_cover_every_row() -> None:
    groups = np.repeat(np.arange(10), [5, 1, 7, 3, 3, 9, 2, 4, 6, 1])
    folds = grouped_folds(groups, 3)
    assert len(folds) == 3
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    held = [set(groups[f].tolist()) for f in folds]
    assert all(not (a & b) for i, a in enumerate(held) for b in held[i + 1 :])
    with pytest.raises(ValueError, match="cannot make"):
        grouped_folds(np.zeros(5), 2)


def test_features_and_their_errors() -> None:
    scores = np.array([[0.9, 0.5, 0.4], [0.6, 0.55, 0.1]])
    np.testing.assert_allclose(features(scores), [[0.9, 0.4], [0.6, 0.05]])
    with pytest.raises(ValueError, match="k >= 2"):
        features(scores[:, :1])
    with pytest.raises(ValueError, match="unknown"):
        features(scores, ("top", "entropy"))
    with pytest.raises(ValueError, match="both correct and wrong"):
        fit(scores, np.ones(2), "logistic")
    with pytest.raises(ValueError, match="kind"):
        Calibrator.from_dict({"kind": "tree", "features": ["top"], "intercept": 0.0})


def test_gold_ranks_match_by_normalised_text_and_alt_answers() -> None:
    bank = ["The cat sat.", "A dog ran.", "Birds fly."]
    rows = np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0]])
    golds = [["the  CAT sat."], ["Nothing here.", "a dog ran."], ["Missing."]]
    assert gold_ranks(rows, bank, golds).tolist() == [1, 3, 0]


def test_unique_bank_keeps_the_first_of_equal_sentences() -> None:
    texts, vectors = unique_bank(["A b.", "c d.", "a  B."], np.eye(3))
    assert texts == ["A b.", "c d."]
    np.testing.assert_array_equal(vectors, np.eye(3)[:2])


def test_bank_evaluation_figures_on_a_tiny_bank() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = ["apple", "river", "copper", "violin", "glacier", "saffron", "lantern", "harbour", "meadow", "falcon"] * 2
    texts = [f"The {w} number {i} is here." for i, w in enumerate(words)]
    bank = flat_bank(texts, vectors)
    golds = [[texts[i]] for i in range(10)]
    exact = vectors[:10]  # the cube lands on the gold sentence every time
    noisy = exact + 2.0 * rng.normal(size=exact.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    scores, correct = synthetic(500)
    cal = fit(scores, correct, "logistic")
    questions = [f"Where is the {w}?" for w in words[:10]]  # each word is in two sentences: BM25 alone ties them
    report = bank_evaluation(bank, noisy, exact, golds, cal, 0.0, texts=questions, resamples=200)
    assert report["dense"]["P@1"] == 1.0 and report["dense"]["MRR@10"] == 1.0 and report["fused"]["P@1"] == 1.0
    assert report["identity"]["P@1"] < 1.0 and report["lexical"]["R@20"] == 1.0
    assert report["fused"]["coverage"] == 1.0
    diff = report["differences"]["dense − identity: P@1"]
    assert diff["mean"] == pytest.approx(1.0 - report["identity"]["P@1"])
    assert report["differences"]["fused − dense: P@1"]["mean"] == 0.0


def test_precision_coverage_answers_the_most_confident_first() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], float)
    table = precision_coverage(confidence, correct)
    assert [r["precision"] for r in table[:4]] == [1.0, 1.0, 1.0, 1.0]
    assert table[4]["precision"] == pytest.approx(0.8) and table[4]["threshold"] == 0.5
    assert table[-1]["precision"] == pytest.approx(0.5)
    report = calibration_report(confidence, correct)
    assert len(report["precision_coverage"]) == 10 and sum(r["count"] for r in report["reliability"]) == 10


def test_questions_the_bank_does_not_answer_count_as_refused_or_as_wrong_answers() -> None:
    from pipeline.bank_eval import unanswerable_report
    from pipeline.knowledge.fusion import Fusion

    vectors = np.eye(4, dtype=np.float32)
    bank = flat_bank(["Pumps need a fuse.", "The valve is red.", "Close the valve.", "Twelve volts."], vectors)
    scores, correct = synthetic(500)
    cal = fit(scores, correct, "logistic")
    near = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]], np.float32)  # a sure-looking match, and no match at all
    answerable = {"questions": 10.0, "precision": 0.8, "coverage": 0.5}  # 4 right of 5 answered
    confidence = cal.predict(np.array([[1.0, 0.0], [0.5, 0.5]]))
    threshold = float(confidence.mean())  # between the two: the first is answered, the second refused
    report = unanswerable_report(bank, near, ["Which pump?", "What is love?"], cal, Fusion(), threshold, answerable)
    assert report["questions"] == 2 and report["refused"] == 0.5
    assert report["precision_all_answered"] == pytest.approx(4 / 6)  # one wrong answer joins the five answered


def test_the_threshold_is_the_jobs_else_the_settings_else_the_bundles() -> None:
    from pipeline import resolve_min_confidence

    assert resolve_min_confidence(0.3, 0.5, 0.72) == 0.3
    assert resolve_min_confidence(0.0, 0.5, 0.72) == 0.0  # a job's 0 answers everything: zero is a choice, not unset
    assert resolve_min_confidence(None, 0.5, 0.72) == 0.5
    assert resolve_min_confidence(None, None, 0.72) == 0.72
    assert resolve_min_confidence(None, None, None) is None
