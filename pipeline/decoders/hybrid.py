"""HybridDecoder: the phrase bank when its best score clears a threshold, the generative decoder otherwise.

The threshold is chosen on the validation split (`choose_threshold`): the highest mean
end-to-end cosine among thresholds whose echo rate is no higher than the bank's alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.decoders.generative import Generated, GenerativeDecoder
from pipeline.decoders.phrase_bank import BankAnswer, PhraseBankDecoder


@dataclass(frozen=True)
class HybridAnswer:
    """Which path answered, its text, and the bank's answer (always computed, for its score)."""

    path: str  # "bank" or "generative"
    text: str
    bank: BankAnswer
    generated: Generated | None


class HybridDecoder:
    path = "hybrid"

    def __init__(self, bank: PhraseBankDecoder, generative: GenerativeDecoder, threshold: float, top_k: int = 3) -> None:
        self.bank = bank
        self.generative = generative
        self.threshold = threshold
        self.top_k = top_k

    def decode(self, vectors: np.ndarray) -> list[HybridAnswer]:
        bank_answers = self.bank.decode(vectors, k=self.top_k)
        low = [i for i, a in enumerate(bank_answers) if a.score < self.threshold]
        generated = dict(zip(low, self.generative.decode(vectors[low]))) if low else {}
        return [
            HybridAnswer("generative", generated[i].text, a, generated[i]) if i in generated else HybridAnswer("bank", a.candidates[0].text, a, None)
            for i, a in enumerate(bank_answers)
        ]


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
        generative = bank_scores < t
        e2e = float(np.where(generative, gen_e2e, bank_e2e).mean())
        echo = float(np.where(generative, gen_echo, bank_echo).mean())
        table.append({"threshold": float(t), "e2e_cos": e2e, "echo_rate": echo, "generative_share": float(generative.mean())})
        if echo <= limit + 1e-12 and (best is None or e2e > best.e2e_cos):
            best = ThresholdChoice(float(t), e2e, echo, float(generative.mean()), table)
    assert best is not None
    return ThresholdChoice(best.threshold, best.e2e_cos, best.echo_rate, best.generative_share, table)
