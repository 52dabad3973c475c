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
from pipeline.stages import answer_vectors, bundle_fusion

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "cubeqa" / "bundles" / "default"
OFFTOPIC = ROOT / "tests" / "data" / "offtopic_questions.txt"


def answers(encoder, questions: list[str]) -> tuple[np.ndarray, list[str]]:
    """Confidence of the shipped bundle's bank answer (fused search) to each question, and that answer."""
    bundle = load_bundle(BUNDLE, encoder.identity)
    calibrator = load_calibration(BUNDLE)
    assert calibrator is not None, "the default bundle ships calibration.json"
    bank = PhraseBankDecoder(bundle.bank_texts, bundle.bank_vectors, fusion=bundle_fusion(bundle.manifest))
    assert len(bank) == 11861
    hits = bank.hits(answer_vectors(bundle, encoder, questions), questions, needed_k(calibrator.feature_names))
    return calibrator.predict(hits.scores, hits.parts()), [bank.texts[row] for row in hits.rows[:, 0]]


def confidences(encoder, questions: list[str]) -> np.ndarray:
    return answers(encoder, questions)[0]


def test_every_offtopic_question_is_below_the_default_min_confidence(encoder) -> None:
    questions = [line.strip() for line in OFFTOPIC.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(questions) >= 50
    threshold = default_min_confidence(BUNDLE)
    assert threshold is not None and 0 < threshold < 1
    conf = confidences(encoder, questions)
    above = {q: round(float(c), 3) for q, c in zip(questions, conf) if c >= threshold}
    # docs/confidence.md: with fused search, one of the 55 (a rare word shared with one sentence) clears the threshold
    known = {"How do I reverse a linked list in Python?"}
    assert set(above) <= known, f"answered with confidence >= {threshold}: {above}"


def test_questions_whose_answers_the_bank_holds_are_answered_often_and_then_rightly(encoder) -> None:
    records = [json.loads(line) for line in (ROOT / "data" / "squad_sent_train.jsonl").read_text(encoding="utf-8").splitlines()[::200]]
    conf, best = answers(encoder, [r["question"] for r in records])  # 101 questions spread over the training articles
    answered = conf >= default_min_confidence(BUNDLE)
    assert answered.mean() > 0.5  # validation coverage at the default threshold is 0.68 (docs/confidence.md)
    right = np.array([b == r["answer"] for b, r in zip(best, records)])
    assert right[answered].mean() > 0.8 > right[~answered].mean()


def test_reranked_answers_refuse_offtopic_questions_and_answer_held_ones_rightly(in_process) -> None:
    """The served path (the rerank stage and its own calibrator, rerank-calibration.json): off-topic questions are
    refused but for the two docs/confidence.md names; questions the bank answers are answered often and then rightly."""
    assert in_process.rerank_stage is not None and in_process.rerank_stage.calibrator is not None
    questions = [line.strip() for line in OFFTOPIC.read_text(encoding="utf-8").splitlines() if line.strip()]
    answered = {r.question: round(float(r.confidence), 3) for r in in_process.process_batch(questions) if r.path != "none"}
    assert set(answered) <= {"How do I reverse a linked list in Python?", "Is it okay to eat cereal for dinner?"}, answered
    records = [json.loads(line) for line in (ROOT / "data" / "squad_sent_train.jsonl").read_text(encoding="utf-8").splitlines()[::200]]
    results = in_process.process_batch([r["question"] for r in records])
    given = np.array([r.path == "bank" for r in results])
    right = np.array([r.evidence["sentence"] == rec["answer"] for r, rec in zip(results, records)])
    assert all(r.evidence["reranked"] for r in results)
    assert given.mean() > 0.5 and right[given].mean() > 0.85 > right[~given].mean()
