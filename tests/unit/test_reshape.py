"""Vector <-> lattice face: exact, invertible, documented element order."""

from __future__ import annotations

import pytest
import torch

from pipeline.reshape import face_channels, face_to_vector, vector_to_face


def test_round_trip_is_exact() -> None:
    vectors = torch.randn(4, 384)
    face = vector_to_face(vectors, 8, 8)
    assert face.shape == (4, 6, 8, 8)
    assert torch.equal(face_to_vector(face), vectors)


def test_element_order_is_cell_major() -> None:
    vectors = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(1, -1)  # X=2, Y=3, C=2
    face = vector_to_face(vectors, 2, 3)
    # element i = (x·Y + y)·C + c
    assert face[0, 1, 1, 2].item() == (1 * 3 + 2) * 2 + 1
    assert face[0, 0, 0, 1].item() == 2


def test_face_that_does_not_tile_is_refused() -> None:
    assert face_channels(384, 8, 8) == 6
    with pytest.raises(ValueError, match="does not tile"):
        vector_to_face(torch.randn(1, 100), 8, 8)
