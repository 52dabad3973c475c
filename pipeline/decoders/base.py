"""What every decoder gives: one `Answer` type, its `Candidate`s, the `Decoder` protocol and `DecoderKind`.

Cheap to import (NumPy only): settings validate the decoder kind without loading torch or FAISS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from pipeline.knowledge.provenance import Provenance


class DecoderKind(StrEnum):
    """Which decoder turns answer vectors into text; validated once, where a setting or option enters."""

    bank = "bank"
    generative = "generative"
    hybrid = "hybrid"

    @property
    def needs_teacher(self) -> bool:
        """Whether the decoder re-embeds what it writes (generative paths), so the stage must load the teacher."""
        return self is not DecoderKind.bank


@dataclass(frozen=True)
class Candidate:
    """One sentence a decoder considered: bank row and fused score, or (generative) its cosine to the target."""

    text: str
    score: float  # bank: the fused score it was ranked by (the cosine when the search had no lexical side)
    row: int | None = None  # the bank row; None for a generated sentence
    provenance: Provenance | None = None  # where a bank sentence comes from, when the bank records it
    dense: float | None = None  # bank: cosine of the answer vector and the sentence
    lexical: float | None = None  # bank: BM25 / the question's highest BM25 in the bank; None: no lexical search
    overlap: float | None = None  # bank: share of the question's distinct words (stemmed, no stop words) it holds
    rerank: float | None = None  # bank: the rerank stage's score, when it reordered the candidates

    def pair(self) -> tuple[str, float]:
        """(text, score): the shape results and the CLI show."""
        return (self.text, self.score)


@dataclass(frozen=True)
class Answer:
    """One decoded answer, whatever decoder produced it.

    `score` is the bank's fused score of the best sentence when the bank answered; for a generated answer it is
    cos(enc(text), answer vector): fidelity to the vector, not a confidence that the answer is right.
    `confidence` is a calibrated probability of being right, None until a calibrator gives one (never for generated text);
    `threshold` the confidence it was judged against (None: none was applied).
    """

    text: str
    path: str  # "bank", "generative", or "none" when the bank alone found nothing above its threshold
    score: float
    candidates: tuple[Candidate, ...]
    vector: np.ndarray  # teacher embedding of `text` (for the metrics; from the bank or re-encoded)
    bank_score: float  # the bank's best score, also when another path answered
    confidence: float | None = None
    threshold: float | None = None

    def candidate_pairs(self) -> tuple[tuple[str, float], ...]:
        """The candidates as (text, score) pairs, the shape results record."""
        return tuple(c.pair() for c in self.candidates)


class Decoder(Protocol):
    """Answer vectors (N, D), unit length, and their questions (for the lexical search) to one Answer each, in order."""

    def decode(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> list[Answer]: ...
