"""The per-item metrics and the hybrid routing rule of pipeline.metrics."""

from __future__ import annotations

import numpy as np

from pipeline.metrics import item_metrics, routes_to_generative


def test_item_metrics_score_only_what_each_item_has() -> None:
    eye = np.eye(3, dtype=np.float32)
    questions, outputs, decoded = eye[[0, 0, 0]], eye[[1, 1, 1]], eye[[0, 1, 2]]
    metrics = item_metrics(questions, outputs, decoded, [True, True, False], [eye[1], None, eye[1]])
    assert [m["decode_fidelity"] for m in metrics] == [0.0, 1.0, 0.0]
    assert metrics[0] == {"decode_fidelity": 0.0, "cube_cos": 1.0, "identity_cos": 0.0, "e2e_cos": 0.0, "echo": 1.0}
    assert metrics[1] == {"decode_fidelity": 1.0}  # no reference
    assert set(metrics[2]) == {"decode_fidelity", "cube_cos", "identity_cos"}  # no decoder answered


def test_routing_sends_only_scores_below_the_threshold_to_the_generative_path() -> None:
    scores = np.array([0.2, 0.5, 0.7], dtype=np.float32)
    assert routes_to_generative(scores, 0.5).tolist() == [True, False, False]
    assert not routes_to_generative(scores, -1.0).any()
