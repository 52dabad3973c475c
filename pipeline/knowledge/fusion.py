"""Hybrid search: FAISS (dense) and BM25 (lexical) candidates ranked by one fused score.

    fused = cosine + weight · BM25 / (the question's highest BM25 over the bank)

Candidates are the union of the dense top-`depth` and the lexical top-`depth`; a lexical-only candidate's cosine is
computed exactly from the stored vectors, a dense-only candidate's BM25 read from the question's BM25 of every
sentence. Weight 0.5 was chosen on validation (bench/fusion.py, docs/retrieval.md); the bundle records the fusion it
was calibrated with, since its confidence is fit on these scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pipeline.errors import InputError
from pipeline.knowledge.index import IndexSpec, build_index
from pipeline.knowledge.lexical import LexicalIndex, tokenize

DenseSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries (N, D), k) -> (scores, rows) (N, k)
Ranking = Literal["fused", "dense", "lexical"]
FORM = "cosine + weight * bm25 / max_bm25"


@dataclass(frozen=True)
class Fusion:
    """How dense and lexical scores combine; recorded in the bundle manifest (`retrieval.fusion`)."""

    weight: float = 0.5
    depth: int = 100  # candidates taken from each of the dense and lexical lists

    def to_dict(self) -> dict[str, Any]:
        return {"form": FORM, "weight": self.weight, "depth": self.depth}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fusion:
        if data.get("form", FORM) != FORM:
            raise ValueError(f"fusion form {data.get('form')!r} is unknown; this code computes {FORM!r}")
        return cls(float(data["weight"]), int(data.get("depth", 100)))


@dataclass(frozen=True)
class Hits:
    """Top-k of a search, best first; rows -1 (scores -inf) pad a bank smaller than k."""

    scores: np.ndarray  # (N, k) the ranking score: fused (dense cosine when there is no lexical side)
    rows: np.ndarray  # (N, k) int64
    dense: np.ndarray  # (N, k) cosine
    lexical: np.ndarray | None  # (N, k) BM25 / the question's max BM25, in [0, 1]; None for a dense-only search
    overlap: np.ndarray | None = None  # (N, k) share of the question's distinct words the sentence holds
    rerank: np.ndarray | None = None  # (N, k) the reranker's score when the rerank stage reordered the list

    def parts(self) -> dict[str, np.ndarray | None]:
        """The parts of the scores, as the calibrator reads them (pipeline.calibration.features)."""
        return {"dense": self.dense, "lexical": self.lexical, "overlap": self.overlap, "rerank": self.rerank}


def dense_hits(search: DenseSearch, queries: np.ndarray, k: int) -> Hits:
    """Hits of the dense search alone (no question text, or a bank without a lexical index)."""
    scores, rows = search(queries, k)
    return Hits(scores, rows.astype(np.int64), scores, None)


def fused_search(
    search: DenseSearch, vectors: np.ndarray, lexical: LexicalIndex, queries: np.ndarray, texts: Sequence[str], k: int,
    fusion: Fusion, ranking: Ranking = "fused",
) -> Hits:
    """Top-k of the union of dense and lexical candidates for (N, D) unit queries and their N question texts."""
    if len(texts) != len(queries):
        raise InputError(f"{len(queries)} query vectors but {len(texts)} question texts")
    n = lexical.sentences
    k, depth = min(k, n), min(max(fusion.depth, k), n)
    dense_scores, dense_rows = search(queries, depth)
    out = [np.empty((len(queries), k)) for _ in range(5)]
    for i, tokens in enumerate(tokenize(texts)):
        bm25, overlap = lexical.scores_and_overlap(tokens)
        top = float(bm25.max())
        norm = bm25 / top if top > 0 else bm25
        found = dense_rows[i] >= 0
        rows = dense_rows[i][found]
        cosine = dense_scores[i][found].astype(np.float64)
        lex_rows = np.argpartition(-norm, depth - 1)[:depth] if top > 0 else np.zeros(0, np.int64)
        extra = np.setdiff1d(lex_rows[norm[lex_rows] > 0], rows)
        rows = np.concatenate([rows, extra])
        cosine = np.concatenate([cosine, vectors[extra] @ queries[i]])
        lex = norm[rows].astype(np.float64)
        key = {"fused": cosine + fusion.weight * lex, "dense": cosine, "lexical": lex}[ranking]
        order = np.lexsort((-cosine, -key))[:k]  # ties (e.g. BM25 0) broken by cosine
        for target, values in zip(out, (key, rows, cosine, lex, overlap[rows])):
            target[i] = values[order]
    return Hits(out[0], out[1].astype(np.int64), out[2], out[3], out[4])


class MemoryBank:
    """A bank held in memory (texts, vectors, an exact index, a lexical index): for evaluation and ad-hoc banks."""

    def __init__(
        self, texts: Sequence[str], vectors: np.ndarray, *, lexical: bool = True, spec: IndexSpec | None = None
    ) -> None:
        self.texts = list(texts)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(self.texts) != len(self.vectors):
            raise ValueError(f"bank has {len(self.texts)} texts but {len(self.vectors)} vectors")
        self.index = build_index(self.vectors, spec or IndexSpec("flat")) if len(self.texts) else None
        self.lexical = LexicalIndex.build(self.texts) if lexical and self.texts else None

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Dense top-k (scores (N, k), rows (N, k)) by inner product."""
        assert self.index is not None
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), max(1, min(int(k), len(self.texts))))

    def hybrid(
        self, queries: np.ndarray, texts: Sequence[str] | None, k: int, fusion: Fusion, ranking: Ranking = "fused"
    ) -> Hits:
        """Fused top-k when question texts are given and the bank has a lexical index, else dense top-k."""
        return hybrid(self, queries, texts, k, fusion, ranking)

    def provenance(self, row: int) -> None:
        return None


def hybrid(
    bank: Any, queries: np.ndarray, texts: Sequence[str] | None, k: int, fusion: Fusion, ranking: Ranking = "fused"
) -> Hits:
    """`bank.search` fused with `bank.lexical` (any bank with texts, vectors, search and lexical)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if texts is None or bank.lexical is None:
        if ranking == "lexical":
            raise InputError("a lexical ranking needs the question texts and a bank with a lexical index")
        return dense_hits(bank.search, queries, k)
    return fused_search(bank.search, bank.vectors, bank.lexical, queries, texts, k, fusion, ranking)
