"""Trains a vector→vector map (the cube) on embedded Q→A pairs with a fixed schedule.

Loss = (1 − cos) + w·InfoNCE + λ·‖residual‖², the identity-anchored recipe: the
residual penalty keeps the map near identity unless moving away pays on train.
The schedule is fixed (warm-up then cosine decay over all epochs) and the model
returned is the last one: validation is reported per epoch, never used to pick.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.config import TrainConfig
from pipeline.cube import Cube, apply_map
from pipeline.data import EmbeddedPairs


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did: mean train loss and, when given, validation cosine."""

    epoch: int
    train_loss: float
    val_cos: float | None
    seconds: float


EpochCallback = Callable[[EpochReport], None]


def answer_labels(answer_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row of each pair's answer in the de-duplicated bank, and the bank's first-seen pair rows."""
    index: dict[str, int] = {}
    labels = np.array([index.setdefault(aid, len(index)) for aid in answer_ids], np.int64)
    first_rows = np.zeros(len(index), np.int64)
    for row in range(len(labels) - 1, -1, -1):
        first_rows[labels[row]] = row
    return labels, first_rows


def infonce(out: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, bank_labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy of each output over candidate answers; other copies of the true answer are masked.

    out (B, D), targets (K, D) candidates, labels (B,) answer id of each row,
    bank_labels (K,) answer id of each candidate.
    """
    logits = out @ targets.T / tau  # (B, K)
    same = labels[:, None] == bank_labels[None, :]  # (B, K)
    positive = same.float().argmax(1)  # first candidate carrying the true answer
    duplicate = same.clone()
    duplicate[torch.arange(len(out)), positive] = False
    return F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), positive)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def cube_loss(
    out: torch.Tensor, delta: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    """1 − cos to the targets + residual_l2·|residual|² + infonce_weight·InfoNCE (whole bank or in-batch negatives)."""
    loss = (1.0 - (out * targets).sum(-1)).mean() + config.residual_l2 * delta.pow(2).sum(-1).mean()
    if config.infonce_weight:
        if config.bank_negatives:
            contrast = infonce(out, bank, labels, bank_ids, config.temperature)
        else:
            contrast = infonce(out, targets, labels, labels, config.temperature)
        loss = loss + config.infonce_weight * contrast
    return loss


def train_cube(
    model: Cube,
    train: EmbeddedPairs,
    config: TrainConfig,
    *,
    val: EmbeddedPairs | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[EpochReport]:
    """Trains `model` in place (it must offer `forward_parts(q) -> (out, residual)`)."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    generator = np.random.default_rng(config.seed)
    q = torch.from_numpy(train.q)
    a = torch.from_numpy(train.a)
    labels_np, first_rows = answer_labels(train.answer_ids)
    labels = torch.from_numpy(labels_np)
    bank = a[torch.from_numpy(first_rows)]  # (K, D) unique answers
    bank_ids = torch.arange(len(bank))

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(q) / config.batch_size)
    total = per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))

    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema)) if config.ema else None
    reports: list[EpochReport] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.from_numpy(generator.permutation(len(q)))
        losses = []
        for start in range(0, len(q), config.batch_size):
            idx = order[start : start + config.batch_size]
            questions = q[idx]
            if config.input_noise:
                noise = torch.randn_like(questions) * (config.input_noise / questions.shape[1] ** 0.5)
                questions = F.normalize(questions + noise, dim=-1)
            out, delta = model.forward_parts(questions)
            loss = cube_loss(out, delta, a[idx], labels[idx], bank, bank_ids, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(loss.item())
        seconds = time.perf_counter() - started
        report = EpochReport(epoch, float(np.mean(losses)), mean_cos(averaged or model, val) if val else None, seconds)
        reports.append(report)
        if on_epoch:
            on_epoch(report)
    if averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    return reports


def mean_cos(model: nn.Module, data: EmbeddedPairs) -> float:
    """Mean cosine of the model's answer vectors to the reference answers."""
    return float((apply_map(model, data.q) * data.a).sum(-1).mean())
