"""What a job's dashboard page shows, typed: the threshold a worker judged an answer's confidence against is kept
in its evidence, and a stored job reads back as its verdict, best match (refused or not) and alternatives."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from cubeqa.settings import default_bundle_dir
from pipeline.calibration import load_calibration
from pipeline.confidence import evidence, with_confidence
from pipeline.decoders.phrase_bank import PhraseBankConfig, PhraseBankDecoder
from storage.evidence import detail_of
from storage.models import Job

TEXTS = ["The pump runs on twelve volts.", "Close the valve before service.", "The valve is red."]


def answers():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(TEXTS), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    decoder = PhraseBankDecoder(TEXTS, vectors, PhraseBankConfig(min_score=-1.0), top_k=3)
    return decoder.decode(vectors[:1], ["What does the pump run on?"])


def test_the_evidence_keeps_the_threshold_the_confidence_was_judged_against() -> None:
    calibrator = load_calibration(default_bundle_dir())
    assert calibrator is not None
    [refused] = with_confidence(answers(), calibrator, 1.01)  # above any probability
    [kept] = with_confidence(answers(), calibrator, None)
    assert refused.path == "none" and refused.confidence is not None and refused.confidence <= 1
    shown = evidence(refused)
    assert shown is not None and shown["threshold"] == 1.01 and shown["sentence"] == TEXTS[0]
    assert len(shown["alternatives"]) == 2
    plain = evidence(kept)
    assert plain is not None and "threshold" not in plain and kept.path == "bank"


def job(**fields: object) -> Job:
    record = {"sentence": "The valve is red.", "score": 0.8, "dense": 0.7, "lexical": 0.2, "doc_id": "d",
              "title": "Valves", "source": "docs/valves.md", "position": 4, "before": ["A.", "B."], "after": ["C."],
              "section": ["Parts", "Valves"],
              "reranked": False, "threshold": 0.45,
              "alternatives": [{"sentence": "the valve is  RED.", "score": 0.5, "doc_id": "e", "position": 0}]}
    base = dict(id="j" * 32, batch_id="b" * 32, position=0, question="What colour is the valve?",
                reference="The valve is red.",
                status="done", attempts=1, dispatches=1, decoder_path="none", answer="no confident answer", score=0.8,
                confidence=0.2, evidence=record, created_at=datetime(2026, 1, 1, tzinfo=UTC), right_answer=None)
    return Job(**(base | fields))


def test_a_refused_job_reads_back_with_its_threshold_and_best_match() -> None:
    detail = detail_of(job())
    j = detail.judgement
    assert (j.verdict, j.confidence, j.threshold, j.threshold_from) == ("refused", 0.2, 0.45, "the worker's default")
    assert detail.evidence is not None
    best = detail.evidence.best
    assert best.text == "The valve is red." and best.is_reference and best.number == 5
    assert best.document == "docs/valves.md"
    assert best.section == ("Parts", "Valves") and best.before == ("A.", "B.") and best.after == ("C.",)
    [alt] = detail.evidence.alternatives
    assert alt.is_reference and alt.number == 1 and alt.document == "e" and alt.dense is None  # normalised text matches
    assert detail.right is None


def test_verdicts_name_where_the_threshold_came_from() -> None:
    older = job(evidence={"sentence": "X.", "score": 0.9}, min_confidence=None)  # stored before thresholds were kept
    assert (detail_of(older).judgement.threshold, detail_of(older).judgement.threshold_from) == (
        None, "the worker's default, not recorded for this job")
    submitted = detail_of(job(min_confidence=0.3, decoder_path="bank", answer="The valve is red.", confidence=0.6,
                              right_answer=1.0))
    assert submitted.judgement.verdict == "answered" and submitted.judgement.threshold_from == "set with the submission"
    assert submitted.right is True
    generated = detail_of(job(decoder_path="generative", confidence=None, evidence=None, answer="red"))
    assert generated.judgement.verdict == "unscored" and generated.evidence is None
    below = detail_of(job(confidence=None))  # the bank's minimum score refused it before any calibration
    assert below.judgement.verdict == "below_min_score"
    failed = detail_of(job(status="failed", error="bad input", decoder_path=None, evidence=None))
    assert failed.judgement.verdict == "failed"
    cancelled = detail_of(job(status="cancelled", decoder_path=None, evidence=None, answer=None, confidence=None))
    assert cancelled.judgement.verdict == "cancelled"
    queued = detail_of(job(status="queued", decoder_path=None, evidence=None, answer=None, confidence=None))
    assert queued.judgement.verdict == "open"
