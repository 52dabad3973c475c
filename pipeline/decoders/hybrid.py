"""HybridDecoder: the phrase bank when its best score clears a threshold, the generative decoder otherwise.

The threshold is chosen on the validation split (`choose_threshold`): the highest mean
end-to-end cosine among thresholds whose echo rate is no higher than the bank's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.decoders.base import Answer, Candidate
from pipeline.decoders.generative import Generated, GenerativeDecoder
from pipeline.decoders.phrase_bank import PhraseBankDecoder
from pipeline.metrics import routes_to_generative


class GenerativePath:
    """The generative decoder as a Decoder: its text re-embedded by the teacher (for the metrics), the bank's best score beside it."""

    path = "generative"

    def __init__(self, generative: GenerativeDecoder, bank: PhraseBankDecoder, encode_generated: Callable[[list[str]], np.ndarray]) -> None:
        self.generative = generative
        self.bank = bank
        self.encode_generated = encode_generated

    def decode(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> list[Answer]:
        bank_scores = [float(s) for s in self.bank.hits(vectors, texts, 1).scores[:, 0]]
        return self.answers(self.generative.decode(vectors), vectors, bank_scores)

    def answers(self, generated: list[Generated], targets: np.ndarray, bank_scores: list[float]) -> list[Answer]:
        """`score` is cos(enc(text), target): fidelity to the answer vector, not confidence (which stays None)."""
        vectors = self.encode_generated([g.text for g in generated])
        return [
            Answer(text=g.text, path=self.path, score=float(v @ t), candidates=tuple(Candidate(text, cos) for text, cos in g.candidates),
                   vector=v, bank_score=b)
            for g, v, t, b in zip(generated, vectors, targets, bank_scores)
        ]


class HybridDecoder:
    """The bank's answer when its best score clears `threshold`, the generative path's otherwise."""

    path = "hybrid"

    def __init__(self, bank: PhraseBankDecoder, generative: GenerativePath, threshold: float, top_k: int = 3) -> None:
        self.bank = bank
        self.generative = generative
        self.threshold = threshold
        self.top_k = top_k

    def decode(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> list[Answer]:
        hits = self.bank.hits(vectors, texts, self.top_k)
        answers = self.bank.answers(hits, routed=True)
        low = np.flatnonzero(routes_to_generative(hits.dense[:, 0], self.threshold)).tolist()
        if low:
            for i, made in zip(low, self.generative.answers(self.generative.generative.decode(vectors[low]), vectors[low], [answers[i].score for i in low])):
                answers[i] = made
        return answers


BANK_ONLY = -1.0


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    e2e_cos: float
    echo_rate: float
    generative_share: float
    table: list[dict[str, float]]  # every threshold tried


def choose_threshold(
    bank_scores: np.ndarray, bank_e2e: np.ndarray, bank_echo: np.ndarray, gen_e2e: np.ndarray, gen_echo: np.ndarray, grid: np.ndarray
) -> ThresholdChoice:
    """Per-question figures of both paths -> the threshold with the best mean e2e_cos whose echo rate
    stays at or below the bank's alone. Threshold -1 (no inner product of unit vectors is below it)
    means the bank answers everything, and is always allowed."""
    limit = float(bank_echo.mean())
    table = []
    best: ThresholdChoice | None = None
    for t in [BANK_ONLY, *grid]:
        generative = routes_to_generative(bank_scores, t)
        e2e = float(np.where(generative, gen_e2e, bank_e2e).mean())
        echo = float(np.where(generative, gen_echo, bank_echo).mean())
        table.append({"threshold": float(t), "e2e_cos": e2e, "echo_rate": echo, "generative_share": float(generative.mean())})
        if echo <= limit + 1e-12 and (best is None or e2e > best.e2e_cos):
            best = ThresholdChoice(float(t), e2e, echo, float(generative.mean()), table)
    assert best is not None
    return ThresholdChoice(best.threshold, best.e2e_cos, best.echo_rate, best.generative_share, table)
