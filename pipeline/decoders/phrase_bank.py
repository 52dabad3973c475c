"""Phrase-bank decoder: the bank sentences ranked by the fused dense + lexical score (pipeline.knowledge.fusion).

Below `min_score` (the best sentence's cosine) the outcome is an explicit "no confident answer" carrying its
score, never a success-looking string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from pipeline.decoders.base import Answer, Candidate
from pipeline.errors import InputError
from pipeline.knowledge.fusion import Fusion, Hits, MemoryBank, Ranking
from pipeline.knowledge.index import choose_index
from pipeline.knowledge.provenance import Provenance

NO_CONFIDENT_ANSWER = "no confident answer"


@dataclass(frozen=True)
class PhraseBankConfig:
    """Index kind (of a bank built in memory) and confidence threshold of the bank."""

    index: Literal["flat", "hnsw"] = "flat"  # exact search by default; HNSW for large banks
    min_score: float = 0.3  # cosine of the best sentence below which the bank does not answer
    hnsw_neighbours: int = 32
    hnsw_ef_search: int = 128


class BankSource(Protocol):
    """A bank (a stored version's LoadedBank, or a MemoryBank): sentences, their vectors, dense and fused search."""

    @property
    def texts(self) -> list[str]: ...

    @property
    def vectors(self) -> np.ndarray: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def hybrid(
        self, queries: np.ndarray, texts: Sequence[str] | None, k: int, fusion: Fusion, ranking: Ranking = "fused"
    ) -> Hits: ...

    def provenance(self, row: int) -> Provenance | None: ...


class PhraseBankDecoder:
    """Searches a bank of sentences embedded with the same encoder as the queries."""

    path = "bank"

    def __init__(self, texts: list[str], vectors: np.ndarray, config: PhraseBankConfig | None = None, *, top_k: int = 1,
                 source: BankSource | None = None, fusion: Fusion | None = None) -> None:
        """Searches `source`, or a MemoryBank over `texts` and `vectors` (see from_source for a stored bank)."""
        self.config = config or PhraseBankConfig()
        if len(texts) != len(vectors):
            raise ValueError(f"bank has {len(texts)} texts but {len(vectors)} vectors")
        if not texts:
            raise InputError("the phrase bank is empty")
        self.top_k = top_k
        self.fusion = fusion or Fusion()
        if source is None:
            hnsw = self.config.index == "hnsw"
            params = {"m": self.config.hnsw_neighbours, "ef_search": self.config.hnsw_ef_search} if hnsw else {}
            source = MemoryBank(texts, vectors, spec=choose_index(len(texts), self.config.index, params))
        self.source = source
        self.texts = source.texts
        self.vectors = source.vectors

    @classmethod
    def from_source(cls, source: BankSource, config: PhraseBankConfig | None = None, *, top_k: int = 1,
                    fusion: Fusion | None = None) -> PhraseBankDecoder:
        """A decoder over a stored bank, searching with its indexes; candidates carry the bank's provenance."""
        return cls(source.texts, source.vectors, config, top_k=top_k, source=source, fusion=fusion)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Dense top-k (scores (N, k), rows (N, k)) for unit query vectors (N, D)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise InputError(f"queries must be (N, {self.vectors.shape[1]}), got {queries.shape}")
        return self.source.search(queries, min(k, len(self.texts)))

    def hits(self, queries: np.ndarray, texts: Sequence[str] | None = None, k: int | None = None) -> Hits:
        """Fused top-k for unit query vectors (N, D) and their question texts (None: dense search alone)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise InputError(f"queries must be (N, {self.vectors.shape[1]}), got {queries.shape}")
        return self.source.hybrid(queries, texts, k or self.top_k, self.fusion)

    def decode(self, queries: np.ndarray, texts: Sequence[str] | None = None, k: int | None = None) -> list[Answer]:
        """Best k (default top_k) bank sentences per query; the explicit no-answer when the best is below `min_score`."""
        return self.answers(self.hits(queries, texts, k))

    def answers(self, hits: Hits, *, routed: bool = False) -> list[Answer]:
        """Answers from search results; `routed`: the hybrid's threshold chose the bank, which then answers even below min_score."""
        out = []
        missing = np.full(hits.rows.shape, np.nan)
        lexical = missing if hits.lexical is None else hits.lexical
        overlap = missing if hits.overlap is None else hits.overlap
        reranked = missing if hits.rerank is None else hits.rerank
        for fused, rows, dense, lex, share, learned in zip(hits.scores, hits.rows, hits.dense, lexical, overlap, reranked):
            candidates = tuple(self.candidate(int(r), float(f), float(d), optional(x), optional(o), optional(z))
                               for f, r, d, x, o, z in zip(fused, rows, dense, lex, share, learned) if r >= 0)
            best = candidates[0]
            confident = routed or bool(dense[0] >= self.config.min_score)
            out.append(Answer(
                text=best.text if confident else NO_CONFIDENT_ANSWER, path=self.path if confident else "none", score=best.score,
                candidates=candidates, vector=self.vectors[best.row], bank_score=best.score,
            ))
        return out

    def candidate(self, row: int, score: float, dense: float | None = None, lexical: float | None = None,
                  overlap: float | None = None, rerank: float | None = None) -> Candidate:
        return Candidate(self.texts[row], score, row, self.source.provenance(row), dense, lexical, overlap, rerank)


def optional(value: float) -> float | None:
    """NaN (no lexical side in the search, no rerank) as None."""
    return None if np.isnan(value) else float(value)
