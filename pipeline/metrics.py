"""Every quality metric and the hybrid routing rule, defined once (names as in DESIGN.md).

All vectors are L2-normalised teacher embeddings, rows of (N, D) arrays: the per-item
metrics of a job (`item_metrics`), the evaluation and the decoder evaluation all call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors (N, D), (N, D) -> (N,)."""
    return (x * y).sum(-1)


def decode_fidelity(decoded: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """How close the decoded answer's embedding is to the cube output it was decoded from."""
    return cosines(decoded, outputs)


def cube_cos(outputs: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The cube output against the reference answer's embedding."""
    return cosines(outputs, references)


def identity_cos(questions: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The question itself against the reference answer: what answering with the question would score."""
    return cosines(questions, references)


def e2e_cos(decoded: np.ndarray, references: np.ndarray) -> np.ndarray:
    """End to end: the decoded answer's embedding against the reference answer's."""
    return cosines(decoded, references)


def echo(decoded: np.ndarray, questions: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per item, whether the decoded answer is closer to its question than to its reference answer (it echoes)."""
    return cosines(decoded, questions) > e2e_cos(decoded, references)


def echo_rate(decoded: np.ndarray, questions: np.ndarray, references: np.ndarray) -> float:
    """Share of answers that echo their question."""
    return float(echo(decoded, questions, references).mean())


def routes_to_generative(bank_scores: np.ndarray, threshold: float) -> np.ndarray:
    """The hybrid's rule: the generative path answers where the bank's best score is below the threshold."""
    return np.asarray(bank_scores, dtype=np.float64) < threshold  # in float64, as a recorded threshold is


def item_metrics(
    questions: np.ndarray,
    outputs: np.ndarray,
    decoded: np.ndarray,
    answered: Sequence[bool],
    references: Sequence[np.ndarray | None] | None = None,
) -> list[dict[str, float]]:
    """Per-item metrics of a batch: decode_fidelity always; for items with a reference vector also cube_cos and
    identity_cos, and e2e_cos and echo where a decoder answered (`answered`)."""
    fidelity = decode_fidelity(decoded, outputs)
    metrics: list[dict[str, float]] = [{"decode_fidelity": float(f)} for f in fidelity]
    if references is None:
        return metrics
    have = [i for i, ref in enumerate(references) if ref is not None]
    if not have:
        return metrics
    refs = np.stack([ref for ref in references if ref is not None])
    cube, identity = cube_cos(outputs[have], refs), identity_cos(questions[have], refs)
    e2e, echoes = e2e_cos(decoded[have], refs), echo(decoded[have], questions[have], refs)
    for j, i in enumerate(have):
        metrics[i].update(cube_cos=float(cube[j]), identity_cos=float(identity[j]))
        if answered[i]:
            metrics[i].update(e2e_cos=float(e2e[j]), echo=float(echoes[j]))
    return metrics
