"""The decode stage's candidates as plain arrays for the stage message, and back (the rerank stage's input)."""

from __future__ import annotations

import numpy as np

from pipeline.knowledge.fusion import Hits


def hits_to_arrays(hits: Hits) -> tuple[np.ndarray, np.ndarray]:
    """rows (N, k) int64 and scores (N, k, 4): fused, dense, lexical, overlap (NaN where the search had no lexical side)."""
    missing = np.full(hits.rows.shape, np.nan)
    parts = [hits.scores, hits.dense, missing if hits.lexical is None else hits.lexical,
             missing if hits.overlap is None else hits.overlap]
    return hits.rows.astype(np.int64), np.stack(parts, axis=-1).astype(np.float64)


def arrays_to_hits(rows: np.ndarray, scores: np.ndarray) -> Hits:
    """Inverse of hits_to_arrays (a dense-only search's lexical parts come back None)."""
    values = scores.astype(np.float64)
    lexical = None if np.isnan(values[..., 2]).all() else values[..., 2]
    overlap = None if np.isnan(values[..., 3]).all() else values[..., 3]
    return Hits(values[..., 0], rows.astype(np.int64), values[..., 1], lexical, overlap)
