"""Sentence embeddings cached by text hash, per encoder, as safetensors chunk files (no pickle).

    cache_dir/enc-<weights hash>-<dim>/chunk-<hash of its digests>.safetensors
        digests (N, 32) uint8   sha256 of each sentence's UTF-8 text
        vectors (N, D) float32  its unit embedding

Each embedded batch is written as one chunk (a temporary file renamed into place), so a
build that is killed keeps what it embedded and a rerun or an `add` embeds only new sentences.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from pipeline.encoding import EncoderIdentity


def text_digest(text: str) -> bytes:
    """sha256 of a sentence's UTF-8 bytes: the cache key."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def encoder_dir(directory: Path, encoder: EncoderIdentity) -> Path:
    """The cache's sub-directory for one encoder's vectors."""
    return Path(directory) / f"enc-{encoder.weights_hash}-{encoder.dim}"


def chunk_name(digests: Sequence[bytes]) -> str:
    """The file name of the chunk holding exactly these digests, in this order (a distributed build waits for it)."""
    return f"chunk-{hashlib.sha256(b''.join(digests)).hexdigest()[:20]}.safetensors"


def write_chunk(directory: Path, digests: Sequence[bytes], vectors: np.ndarray) -> Path:
    """Writes one chunk file into an encoder's directory, atomically (any process on the volume may add chunks)."""
    directory.mkdir(parents=True, exist_ok=True)
    packed = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
    path = directory / chunk_name(digests)
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".chunk-", suffix=".tmp")
    os.close(handle)
    try:
        save_file({"digests": packed, "vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, temp)
        os.chmod(temp, 0o644)  # mkstemp makes it private; every worker on the shared volume reads it
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


class EmbeddingCache:
    """Vectors by text digest for one encoder; a None directory caches nothing."""

    def __init__(self, directory: Path | None, encoder: EncoderIdentity) -> None:
        self.dim = encoder.dim
        self.dir = encoder_dir(directory, encoder) if directory else None
        self._where: dict[bytes, tuple[Path, int]] = {}
        if self.dir is not None and self.dir.is_dir():
            for chunk in sorted(self.dir.glob("chunk-*.safetensors")):
                try:
                    with safe_open(str(chunk), "np") as handle:
                        digests = handle.get_tensor("digests")
                except (SafetensorError, OSError):
                    continue  # a damaged chunk is a miss; its sentences are embedded again
                for row, digest in enumerate(digests):
                    self._where.setdefault(digest.tobytes(), (chunk, row))

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._where

    def __len__(self) -> int:
        return len(self._where)

    def lookup(self, digests: Sequence[bytes]) -> dict[int, np.ndarray]:
        """{position in `digests`: vector (D,)} for the cached ones."""
        by_chunk: dict[Path, list[tuple[int, int]]] = defaultdict(list)
        for position, digest in enumerate(digests):
            hit = self._where.get(digest)
            if hit is not None:
                by_chunk[hit[0]].append((position, hit[1]))
        found: dict[int, np.ndarray] = {}
        for chunk, hits in by_chunk.items():
            try:
                with safe_open(str(chunk), "np") as handle:
                    vectors = handle.get_tensor("vectors")
            except (SafetensorError, OSError):
                continue
            if vectors.shape[1] != self.dim:
                continue
            for position, row in hits:
                found[position] = vectors[row]
        return found

    def put(self, digests: Sequence[bytes], vectors: np.ndarray) -> None:
        """Stores one batch as a chunk file, atomically."""
        if self.dir is None or not len(digests):
            return
        path = write_chunk(self.dir, digests, vectors)
        for row, digest in enumerate(digests):
            self._where.setdefault(digest, (path, row))
