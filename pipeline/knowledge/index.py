"""FAISS inner-product indexes for banks: the kind chosen by size, its parameters recorded.

Exact (flat) search below `EXACT_MAX` vectors, HNSW up to `HNSW_MAX`, IVF-PQ above.
Indexes are written with FAISS's own binary format (`faiss.write_index`), never pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import faiss

IndexKind = Literal["flat", "hnsw", "ivfpq"]
EXACT_MAX = 50_000  # below this, exact search is fast enough (about a millisecond a query)
HNSW_MAX = 5_000_000  # above this, HNSW's float vectors no longer fit a worker's memory
DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 128},
    "ivfpq": {"nlist": 4096, "m": 48, "nbits": 8, "nprobe": 32},
}


@dataclass(frozen=True)
class IndexSpec:
    """An index kind and its parameters (recorded in the bank manifest)."""

    kind: IndexKind
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        return cls(kind=data["kind"], params=dict(data.get("params", {})))


def choose_index(n: int, kind: IndexKind | None = None, overrides: dict[str, Any] | None = None) -> IndexSpec:
    """The index for `n` vectors: `kind` when given, else by size; `overrides` replace default parameters."""
    chosen: IndexKind = kind or ("flat" if n < EXACT_MAX else "hnsw" if n <= HNSW_MAX else "ivfpq")
    if chosen not in DEFAULTS:
        raise ValueError(f"index kind must be one of {', '.join(DEFAULTS)}, got {chosen!r}")
    unknown = set(overrides or {}) - set(DEFAULTS[chosen])
    if unknown:
        raise ValueError(f"unknown {chosen} index parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS[chosen])}")
    return IndexSpec(chosen, {**DEFAULTS[chosen], **(overrides or {})})


def build_index(vectors: np.ndarray, spec: IndexSpec, progress: Callable[[int], None] | None = None) -> faiss.Index:
    """An inner-product index over (N, D) float32 unit vectors; `progress(n)` after each added chunk."""
    import faiss  # here: encode and cube workers never search

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    p = spec.params
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["ef_construction"])
    elif spec.kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(dim)
        nlist = min(int(p["nlist"]), max(1, len(vectors) // 39))  # FAISS wants >= 39 training points per list
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(p["m"]), int(p["nbits"]), faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[: max(nlist * 39, min(len(vectors), 256 * nlist))])
    else:
        raise ValueError(f"unknown index kind {spec.kind!r}")
    step = 65_536
    for start in range(0, len(vectors), step):
        index.add(vectors[start : start + step])
        if progress:
            progress(min(step, len(vectors) - start))
    apply_search_params(index, spec)
    return index


def apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """Search-time knobs (efSearch, nprobe) are not stored by FAISS: set them after every load."""
    if spec.kind == "hnsw":
        index.hnsw.efSearch = int(spec.params["ef_search"])
    elif spec.kind == "ivfpq":
        index.nprobe = int(spec.params["nprobe"])


def save_index(index: faiss.Index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load_index(path: Path, spec: IndexSpec) -> faiss.Index:
    import faiss

    index = faiss.read_index(str(path))
    apply_search_params(index, spec)
    return index
