"""FAISS inner-product indexes for banks: the kind chosen by size, its parameters recorded.

Exact (flat) search below `EXACT_MAX` vectors; HNSW over 8-bit scalar-quantised vectors
(`hnsw_sq8`: 626 MB at 1M vectors, against about 1.8 GB for float vectors) up to `HNSW_MAX`;
IVF-PQ above. `hnsw` (HNSW over float vectors) stays available by name. Figures from
bench/bank_scale.py in docs/bank-scale.md. Indexes are written with FAISS's own binary
format (`faiss.write_index`), never pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import faiss

IndexKind = Literal["flat", "hnsw", "hnsw_sq8", "ivfpq"]
EXACT_MAX = 50_000  # below this, exact search is fast enough (main's threshold; not re-measured in docs/bank-scale.md)
HNSW_MAX = 2_000_000  # above this, building the graph takes too long and its ~0.66 KB a vector too much memory
DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 128},
    # ef_construction 64 = 2m, the level-0 link budget. ef_search 128: recall@1 0.974 at 1M, median 0.41 ms a query;
    # 64 gave 0.958, within two standard errors of the 0.95 target (docs/bank-scale.md)
    "hnsw_sq8": {"m": 32, "ef_construction": 64, "ef_search": 128},
    "ivfpq": {"nlist": 4096, "m": 48, "nbits": 8, "nprobe": 32},
}
POSITIVE_INT_PARAMS = {"m", "ef_construction", "ef_search", "nlist", "nprobe"}
TRAIN_SAMPLE = 262_144  # vectors that train the scalar quantiser's per-dimension ranges
ADD_STEP = 65_536  # vectors per `add` call, so `progress` moves on large banks


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


def auto_kind(n: int) -> IndexKind:
    """The kind `choose_index` picks for `n` vectors when none is named."""
    return "flat" if n < EXACT_MAX else "hnsw_sq8" if n <= HNSW_MAX else "ivfpq"


def choose_index(n: int, kind: IndexKind | None = None, overrides: dict[str, Any] | None = None) -> IndexSpec:
    """The index for `n` vectors: `kind` when given, else by size; `overrides` replace default parameters."""
    chosen = kind or auto_kind(n)
    if chosen not in DEFAULTS:
        raise ValueError(f"index kind must be one of {', '.join(DEFAULTS)}, got {chosen!r}")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DEFAULTS[chosen])
    if unknown:
        raise ValueError(f"unknown {chosen} index parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS[chosen])}")
    for name, value in overrides.items():
        if name in POSITIVE_INT_PARAMS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{chosen} index parameter {name} must be a positive integer, got {value!r}")
        if name == "nbits" and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16):
            raise ValueError(f"{chosen} index parameter nbits must be an integer from 1 to 16, got {value!r}")
    return IndexSpec(chosen, {**DEFAULTS[chosen], **overrides})


def build_index(vectors: np.ndarray, spec: IndexSpec, progress: Callable[[int], None] | None = None) -> faiss.Index:
    """An inner-product index over (N, D) float32 unit vectors; `progress(n)` after each added chunk."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = empty_index(vectors.shape[1], spec, len(vectors))
    if not index.is_trained:
        index.train(training_sample(vectors, spec, index))
    for start in range(0, len(vectors), ADD_STEP):
        index.add(vectors[start : start + ADD_STEP])
        if progress:
            progress(min(ADD_STEP, len(vectors) - start))
    apply_search_params(index, spec)
    return index


def empty_index(dim: int, spec: IndexSpec, n: int) -> faiss.Index:
    """The untrained, empty index of `spec` for `n` vectors of `dim` dimensions."""
    import faiss  # here: encode and cube workers never search

    p = spec.params
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
    elif spec.kind == "hnsw_sq8":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
    elif spec.kind == "ivfpq":
        if dim % int(p["m"]):
            raise ValueError(f"ivfpq parameter m={p['m']} must divide the vector dimension {dim}")
        nlist = ivf_lists(int(p["nlist"]), n)
        quantizer = faiss.IndexFlatIP(dim)
        return faiss.IndexIVFPQ(quantizer, dim, nlist, int(p["m"]), int(p["nbits"]), faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {spec.kind!r}")
    index.hnsw.efConstruction = int(p["ef_construction"])
    return index


def ivf_lists(nlist: int, n: int) -> int:
    """`nlist` capped so that each list has the 39 training points FAISS asks for."""
    return min(nlist, max(1, n // 39))


def training_sample(vectors: np.ndarray, spec: IndexSpec, index: faiss.Index) -> np.ndarray:
    """An evenly strided sample: banks are often sorted by document, and the first rows are one topic."""
    if spec.kind == "ivfpq":
        size = 64 * index.nlist  # k-means sees at most this many anyway (FAISS subsamples above 256 a list)
    else:
        size = TRAIN_SAMPLE
    if size >= len(vectors):
        return vectors
    return np.ascontiguousarray(vectors[:: len(vectors) // size][:size])


def apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """Search-time knobs (efSearch, nprobe) are not stored by FAISS: set them after every load."""
    if spec.kind in ("hnsw", "hnsw_sq8"):
        index.hnsw.efSearch = int(spec.params["ef_search"])
    elif spec.kind == "ivfpq":
        index.nprobe = int(spec.params["nprobe"])


def save_index(index: faiss.Index, path: Path) -> None:
    """Writes `index` in FAISS's binary format."""
    import faiss

    faiss.write_index(index, str(path))


def load_index(path: Path, spec: IndexSpec) -> faiss.Index:
    """Reads an index written by `save_index` and sets `spec`'s search parameters on it."""
    import faiss

    index = faiss.read_index(str(path))
    apply_search_params(index, spec)
    return index
