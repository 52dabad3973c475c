"""The shipped calibration on the real encoder, tower, cube and default bank: off-topic questions are refused,
questions the bank holds the answers of mostly are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.calibration import default_min_confidence, load_calibration, needed_k
from pipeline.checkpoint import load_bundle
from pipeline.decoders.phrase_bank import PhraseBankDecoder
from pipeline.stages import answer_vectors

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "cubeqa" / "bundles" / "default"
OFFTOPIC = ROOT / "tests" / "data" / "offtopic_questions.txt"


def confidences(encoder, questions: list[str]) -> np.ndarray:
    """Confidence of the shipped bundle's bank answer to each question."""
    bundle = load_bundle(BUNDLE, encoder.identity)
    calibrator = load_calibration(BUNDLE)
    assert calibrator is not None, "the default bundle ships calibration.json"
    bank = PhraseBankDecoder(bundle.bank_texts, bundle.bank_vectors)
    assert len(bank) == 11861
    scores, _ = bank.search(answer_vectors(bundle, encoder, questions), needed_k(calibrator.feature_names))
    return calibrator.predict(scores)


def test_every_offtopic_question_is_below_the_default_min_confidence(encoder) -> None:
    questions = [line.strip() for line in OFFTOPIC.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(questions) >= 50
    threshold = default_min_confidence(BUNDLE)
    assert threshold is not None and 0 < threshold < 1
    conf = confidences(encoder, questions)
    above = {q: round(float(c), 3) for q, c in zip(questions, conf) if c >= threshold}
    assert not above, f"answered with confidence >= {threshold}: {above}"


def test_questions_whose_answers_the_bank_holds_are_mostly_answered(encoder) -> None:
    lines = (ROOT / "data" / "squad_sent_train.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines[::200]]  # 101 spread over the training articles
    conf = confidences(encoder, questions)
    assert (conf >= default_min_confidence(BUNDLE)).mean() > 0.5
