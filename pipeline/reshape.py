"""Exact, invertible mapping between a flat vector and a lattice face.

A D-vector is laid out as X×Y cells of C channels (D = X·Y·C): element
`i = (x·Y + y)·C + c` goes to channel c of cell (x, y). No learned parameters;
`face_to_vector(vector_to_face(v)) == v` bit for bit.
"""

from __future__ import annotations

import torch

from pipeline.config import face_channels


def vector_to_face(vectors: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """(B, D) -> (B, C, X, Y) with C = D / (X·Y)."""
    batch, dim = vectors.shape
    channels = face_channels(dim, x, y)
    return vectors.reshape(batch, x, y, channels).permute(0, 3, 1, 2)  # (B, C, X, Y)


def face_to_vector(face: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y) -> (B, C·X·Y), the inverse of `vector_to_face`."""
    batch = face.shape[0]
    return face.permute(0, 2, 3, 1).reshape(batch, -1)  # (B, X·Y·C)
