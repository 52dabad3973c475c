"""Baseline question→answer vector maps the cube is measured against.

Each baseline is fit on the training split only and maps unit question vectors
(N, D) to unit answer vectors (N, D).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of (N, D)."""
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


@dataclass(frozen=True)
class MeanShift:
    """normalise(q + β·(mean answer − mean question)), β fit on train by grid search."""

    shift: np.ndarray  # (D,)
    beta: float

    @classmethod
    def fit(cls, q: np.ndarray, a: np.ndarray) -> MeanShift:
        shift = a.mean(0) - q.mean(0)
        betas = np.linspace(0.0, 4.0, 81)
        scores = [float((normalise(q + b * shift) * a).sum(-1).mean()) for b in betas]
        return cls(shift=shift.astype(np.float32), beta=float(betas[int(np.argmax(scores))]))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        return normalise(q + self.beta * self.shift).astype(np.float32)


@dataclass(frozen=True)
class Ridge:
    """Linear least squares q→a with an intercept and an L2 penalty, output normalised."""

    weight: np.ndarray  # (D, D)
    bias: np.ndarray  # (D,)

    @classmethod
    def fit(cls, q: np.ndarray, a: np.ndarray, penalty: float = 1.0) -> Ridge:
        q64, a64 = q.astype(np.float64), a.astype(np.float64)
        q_mean, a_mean = q64.mean(0), a64.mean(0)
        qc = q64 - q_mean
        gram = qc.T @ qc + penalty * np.eye(q.shape[1])
        weight = np.linalg.solve(gram, qc.T @ (a64 - a_mean))
        bias = a_mean - q_mean @ weight
        return cls(weight=weight.astype(np.float32), bias=bias.astype(np.float32))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        return normalise(q @ self.weight + self.bias).astype(np.float32)


@dataclass(frozen=True)
class ResidualRidge:
    """Identity-anchored linear map: normalise(q + (q − q̄)·W + d̄), ridge fit of the residual a − q.

    The linear counterpart of the cube's gated residual; penalty 100 was the best of
    {10, 100, 1000} on validation, so this baseline is if anything flattered.
    """

    weight: np.ndarray  # (D, D)
    q_mean: np.ndarray  # (D,)
    d_mean: np.ndarray  # (D,)

    @classmethod
    def fit(cls, q: np.ndarray, a: np.ndarray, penalty: float = 100.0) -> ResidualRidge:
        q64, d64 = q.astype(np.float64), (a - q).astype(np.float64)
        q_mean, d_mean = q64.mean(0), d64.mean(0)
        qc = q64 - q_mean
        weight = np.linalg.solve(qc.T @ qc + penalty * np.eye(q.shape[1]), qc.T @ (d64 - d_mean))
        return cls(weight=weight.astype(np.float32), q_mean=q_mean.astype(np.float32), d_mean=d_mean.astype(np.float32))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        return normalise(q + (q - self.q_mean) @ self.weight + self.d_mean).astype(np.float32)


@dataclass(frozen=True)
class MeanAnswer:
    """The same vector for every question: the normalised mean train answer."""

    mean: np.ndarray  # (D,)

    @classmethod
    def fit(cls, q: np.ndarray, a: np.ndarray) -> MeanAnswer:
        return cls(mean=normalise(a.mean(0, keepdims=True))[0].astype(np.float32))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        return np.repeat(self.mean[None, :], len(q), axis=0)


@dataclass(frozen=True)
class NearestQuestion:
    """The "FAQ bot": the answer of the most similar training question."""

    train_q: np.ndarray  # (N, D)
    train_a: np.ndarray  # (N, D)

    @classmethod
    def fit(cls, q: np.ndarray, a: np.ndarray) -> NearestQuestion:
        return cls(train_q=q, train_a=a)

    def __call__(self, q: np.ndarray, chunk: int = 2048) -> np.ndarray:
        rows = np.concatenate([np.argmax(q[i : i + chunk] @ self.train_q.T, axis=1) for i in range(0, len(q), chunk)])
        return self.train_a[rows]
