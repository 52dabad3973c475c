"""A tiny deterministic `embed` for bank tests: each text hashed to a unit vector."""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.encoder import EncoderIdentity

DIM = 16
IDENTITY = EncoderIdentity(model_id="hash-embed", dim=DIM, weights_hash="hash0000")
OTHER = EncoderIdentity(model_id="other-embed", dim=DIM, weights_hash="other000")


def hash_embed(texts: list[str]) -> np.ndarray:
    """(N, DIM) float32 unit vectors, a pure function of each text."""
    out = np.empty((len(texts), DIM), np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(DIM)
        out[i] = v / np.linalg.norm(v)
    return out


def test_hash_embed_is_a_pure_function_to_unit_vectors() -> None:
    a, b = hash_embed(["one", "two"]), hash_embed(["one"])
    assert a.shape == (2, DIM) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)
    assert np.array_equal(a[0], b[0]) and not np.allclose(a[0], a[1])
