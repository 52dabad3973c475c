"""Phrase-bank decoder: the bank sentence nearest to an answer vector, by inner product (FAISS).

Below `min_score` the outcome is an explicit "no confident answer" carrying its
score, never a success-looking string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from pipeline.decoders.base import Answer, Candidate
from pipeline.errors import InputError
from pipeline.knowledge.provenance import Provenance

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


class BankSource(Protocol):
    """A stored bank (e.g. pipeline.knowledge.store's LoadedBank): sentences, their vectors, its own index and provenance."""

    texts: list[str]
    vectors: np.ndarray

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def provenance(self, row: int) -> Provenance | None: ...


class PhraseBankDecoder:
    """Searches a bank of sentences embedded with the same encoder as the queries."""

    path = "bank"

    def __init__(self, texts: list[str], vectors: np.ndarray, config: PhraseBankConfig | None = None, *, top_k: int = 1,
                 source: BankSource | None = None) -> None:
        """Builds its own index over `vectors`, unless `source` (see from_source) searches and names provenance."""
        self.config = config or PhraseBankConfig()
        if len(texts) != len(vectors):
            raise ValueError(f"bank has {len(texts)} texts but {len(vectors)} vectors")
        if not texts:
            raise InputError("the phrase bank is empty")
        self.texts = list(texts)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.top_k = top_k
        self.source = source
        self.index = build_index(self.vectors, self.config) if source is None else None

    @classmethod
    def from_source(cls, source: BankSource, config: PhraseBankConfig | None = None, *, top_k: int = 1) -> PhraseBankDecoder:
        """A decoder over a stored bank, searching with its index; candidates carry the bank's provenance."""
        return cls(source.texts, source.vectors, config, top_k=top_k, source=source)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores (N, k), rows (N, k)) for unit query vectors (N, D)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise InputError(f"queries must be (N, {self.vectors.shape[1]}), got {queries.shape}")
        searcher = self.source if self.source is not None else self.index
        return searcher.search(queries, min(k, len(self.texts)))

    def decode(self, queries: np.ndarray, k: int | None = None) -> list[Answer]:
        """Best k (default top_k) bank sentences per query; the explicit no-answer when the best is below `min_score`."""
        scores, rows = self.search(queries, k or self.top_k)
        return self.answers(scores, rows)

    def answers(self, scores: np.ndarray, rows: np.ndarray, *, routed: bool = False) -> list[Answer]:
        """Answers from search results; `routed`: the hybrid's threshold chose the bank, which then answers even below min_score."""
        out = []
        for srow, rrow in zip(scores, rows):
            candidates = tuple(self.candidate(int(r), float(s)) for s, r in zip(srow, rrow) if r >= 0)
            best = candidates[0]
            confident = routed or bool(srow[0] >= self.config.min_score)
            out.append(Answer(
                text=best.text if confident else NO_CONFIDENT_ANSWER, path=self.path if confident else "none", score=best.score,
                candidates=candidates, vector=self.vectors[best.row], bank_score=best.score,
            ))
        return out

    def candidate(self, row: int, score: float) -> Candidate:
        return Candidate(self.texts[row], score, row, self.source.provenance(row) if self.source is not None else None)


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
