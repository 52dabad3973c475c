"""Phrase-bank decoder: the bank sentence nearest to an answer vector, by inner product (FAISS).

Below `min_score` the outcome is an explicit "no confident answer" carrying its
score, never a success-looking string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from pipeline.errors import InputError

if TYPE_CHECKING:
    import faiss

NO_CONFIDENT_ANSWER = "no confident answer"


@dataclass(frozen=True)
class PhraseBankConfig:
    """Index kind and confidence threshold of the bank."""

    index: Literal["flat", "hnsw"] = "flat"  # exact search by default; HNSW for large banks
    min_score: float = 0.3  # inner product (cosine) below which the bank does not answer
    hnsw_neighbours: int = 32
    hnsw_ef_search: int = 128


@dataclass(frozen=True)
class Candidate:
    """One bank sentence and its inner product with the query."""

    text: str
    score: float
    row: int


@dataclass(frozen=True)
class BankAnswer:
    """The decoded answer for one vector: best candidates, and whether the best one is confident."""

    candidates: tuple[Candidate, ...]
    confident: bool

    @property
    def score(self) -> float:
        return self.candidates[0].score if self.candidates else float("-inf")

    @property
    def text(self) -> str:
        """The best sentence, or the explicit no-answer marker below the threshold."""
        return self.candidates[0].text if self.confident else NO_CONFIDENT_ANSWER


class PhraseBankDecoder:
    """Searches a bank of sentences embedded with the same encoder as the queries."""

    path = "bank"

    def __init__(self, texts: list[str], vectors: np.ndarray, config: PhraseBankConfig | None = None) -> None:
        self.config = config or PhraseBankConfig()
        if len(texts) != len(vectors):
            raise ValueError(f"bank has {len(texts)} texts but {len(vectors)} vectors")
        if not texts:
            raise InputError("the phrase bank is empty")
        self.texts = list(texts)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = build_index(self.vectors, self.config)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores (N, k), rows (N, k)) for unit query vectors (N, D)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise InputError(f"queries must be (N, {self.vectors.shape[1]}), got {queries.shape}")
        return self.index.search(queries, min(k, len(self.texts)))

    def decode(self, queries: np.ndarray, k: int = 1) -> list[BankAnswer]:
        """Best k bank sentences per query; `confident` when the best clears `min_score`."""
        scores, rows = self.search(queries, k)
        return [
            BankAnswer(
                candidates=tuple(Candidate(self.texts[r], float(s), int(r)) for s, r in zip(srow, rrow) if r >= 0),
                confident=bool(srow[0] >= self.config.min_score),
            )
            for srow, rrow in zip(scores, rows)
        ]


def build_index(vectors: np.ndarray, config: PhraseBankConfig) -> faiss.Index:
    """An inner-product FAISS index over (N, D) float32 vectors."""
    import faiss  # here, not at the top: encode and cube workers import this module but never search

    dim = vectors.shape[1]
    if config.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_neighbours, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = config.hnsw_ef_search
    elif config.index == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        raise ValueError(f"index must be 'flat' or 'hnsw', got {config.index!r}")
    index.add(vectors)
    return index
