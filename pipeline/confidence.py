"""Calibrated confidence on decoded answers, and the refusal below a threshold (evidence kept)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.calibration import Calibrator, needed_k
from pipeline.decoders.base import Answer
from pipeline.decoders.phrase_bank import NO_CONFIDENT_ANSWER


def with_confidence(answers: Sequence[Answer], calibrator: Calibrator | None, min_confidence: float | None) -> list[Answer]:
    """Each bank answer gets the calibrated probability that its sentence is right; below `min_confidence` it becomes
    the explicit "no confident answer", candidates still attached. Generated text gets no confidence."""
    if calibrator is None:
        return list(answers)
    k = needed_k(calibrator.feature_names)
    rows = [i for i, a in enumerate(answers) if a.path != "generative" and a.candidates and a.candidates[0].row is not None]
    if not rows:
        return list(answers)
    scores = np.full((len(rows), k), -1.0, dtype=np.float64)  # a bank with fewer than k sentences: missing scores are the floor
    parts = {name: np.zeros((len(rows), k), dtype=np.float64) for name in ("lexical", "overlap", "dense", "rerank")}
    for j, i in enumerate(rows):
        top = answers[i].candidates[:k]
        scores[j, : len(top)] = [c.score for c in top]
        parts["lexical"][j, : len(top)] = [c.lexical or 0.0 for c in top]  # a dense-only search: no lexical side
        parts["overlap"][j, : len(top)] = [c.overlap or 0.0 for c in top]
        parts["dense"][j, : len(top)] = [c.score if c.dense is None else c.dense for c in top]
        parts["rerank"][j, : len(top)] = [c.rerank or 0.0 for c in top]
    confidence = calibrator.predict(scores, parts)
    out = list(answers)
    for i, p in zip(rows, confidence):
        answer = replace(out[i], confidence=float(p), threshold=min_confidence)
        if answer.path == "bank" and min_confidence is not None and p < min_confidence:
            answer = replace(answer, text=NO_CONFIDENT_ANSWER, path="none")
        out[i] = answer
    return out


def evidence(answer: Answer) -> dict[str, Any] | None:
    """The answer's bank sentence with its document, position and neighbours, the alternatives with theirs and the
    confidence threshold it was judged against (when one was); None for generated text."""
    bank = [c for c in answer.candidates if c.row is not None]
    if not bank:
        return None

    def record(candidate: Any) -> dict[str, Any]:
        where = candidate.provenance.to_dict() if candidate.provenance is not None else {}
        parts = (("dense", candidate.dense), ("lexical", candidate.lexical), ("overlap", candidate.overlap),
                 ("rerank", candidate.rerank))
        scores = {name: round(float(value), 6) for name, value in parts if value is not None}
        return {"sentence": candidate.text, "score": round(float(candidate.score), 6), **scores, **where}

    reranked = bank[0].rerank is not None
    judged = {} if answer.threshold is None else {"threshold": answer.threshold}
    return {**record(bank[0]), "reranked": reranked, **judged, "alternatives": [record(c) for c in bank[1:]]}
