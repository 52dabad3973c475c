"""Vectors on the wire: raw little-endian float32 bytes (msgpack binary), not JSON float lists."""

from __future__ import annotations

import numpy as np


def pack(vectors: np.ndarray) -> bytes:
    """(N, D) float array -> N*D*4 bytes."""
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


def unpack(data: bytes, dim: int) -> np.ndarray:
    """Inverse of `pack`: bytes -> (N, dim) float32 (a writable copy)."""
    if dim <= 0 or len(data) % (4 * dim):
        raise ValueError(f"{len(data)} bytes are not a whole number of {dim}-D float32 vectors")
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim).astype(np.float32)
