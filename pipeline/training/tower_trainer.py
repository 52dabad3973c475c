"""Trains a question tower's top layers against the frozen train-answer bank.

Loss = InfoNCE(τ) of the tower's question vector over every unique train answer (so answers of
the same article are negatives) + w·(1 − cos(tower(q), a)). The shared lower layers are frozen,
so their token states are computed once per question (`LowerStates`) and every step runs only the
tuned top layers. The schedule is fixed (linear warm-up, then linear decay to zero); validation is
reported per epoch, never used to pick a model.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from pipeline.config import TowerTrainConfig
from pipeline.data import EmbeddedPairs, texts_hash
from pipeline.evaluation import Bank, retrieval_metrics, retrieval_ranks
from pipeline.tower import QuestionTower
from pipeline.training.cube_trainer import answer_labels, infonce


@dataclass(frozen=True)
class LowerStates:
    """Token states after the shared layers of N texts: `states` (T, D) rows of all tokens, text i at offsets[i]:offsets[i+1]."""

    states: torch.Tensor  # (T, D) float32
    offsets: torch.Tensor  # (N + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, rows: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded states (B, L, D) and token mask (B, L) of the given texts.

        Padded positions are masked out of attention and pooling, so their values do not matter.
        """
        ids = [int(r) for r in rows]
        lengths = [int(self.offsets[r + 1] - self.offsets[r]) for r in ids]
        hidden = self.states.new_zeros((len(ids), max(lengths), self.states.shape[1]))  # (B, L, D)
        mask = torch.zeros((len(ids), max(lengths)), dtype=torch.long)  # (B, L)
        for i, (row, length) in enumerate(zip(ids, lengths)):
            start = int(self.offsets[row])
            hidden[i, :length] = self.states[start : start + length]
            mask[i, :length] = 1
        return hidden, mask


@dataclass(frozen=True)
class TowerEpochReport:
    """One epoch: mean train loss, seconds, and validation figures (R@1, MRR, mean cos; open bank) when given."""

    epoch: int
    train_loss: float
    seconds: float
    validation: dict[str, float] | None


StepCallback = Callable[[int, int, float], None]  # (step, total steps, loss)
EpochCallback = Callable[[TowerEpochReport], None]


def compute_lower_states(tower: QuestionTower, texts: list[str], batch_size: int = 64, progress: Callable[[int], None] | None = None) -> LowerStates:
    """Shared-layer token states of `texts` (unpadded), in input order."""
    features, _ = tower.tokenize(texts)
    lengths = np.array([len(ids) for ids in features["input_ids"]])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    states = torch.empty((int(offsets[-1]), tower.identity.dim), dtype=torch.float32)
    order = np.argsort(-lengths, kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            tokens = tower.pad(features, rows)
            hidden = tower.lower(tokens).float().cpu()  # (B, L, D)
            for i, row in enumerate(rows):
                states[offsets[row] : offsets[row + 1]] = hidden[i, : lengths[row]]
            if progress:
                progress(len(rows))
    return LowerStates(states, torch.from_numpy(offsets).long())


def lower_states(
    tower: QuestionTower, texts: list[str], *, cache_dir: Path | None = None, progress: Callable[[int], None] | None = None
) -> LowerStates:
    """`compute_lower_states`, reused from `cache_dir/tower-lower-<weights>-s<split>-<texts hash>.safetensors` when present."""
    if cache_dir is None:
        return compute_lower_states(tower, texts, progress=progress)
    path = Path(cache_dir) / f"tower-lower-{tower.identity.weights_hash}-s{tower.split}-{texts_hash(texts)}.safetensors"
    if path.is_file():
        try:
            saved = load_file(str(path))
            cached = LowerStates(saved["states"], saved["offsets"])
        except Exception:  # a damaged cache file is a miss; it is rewritten below
            cached = None
        if cached is not None and len(cached) == len(texts):
            return cached
    computed = compute_lower_states(tower, texts, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".safetensors", delete=False) as handle:
        name = handle.name
    save_file({"states": computed.states.contiguous(), "offsets": computed.offsets.contiguous()}, name)
    Path(name).replace(path)  # atomic: concurrent runs never read a half-written file
    return computed


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def tower_vectors(tower: QuestionTower, states: LowerStates, batch_size: int = 256, *, tuned: bool = True) -> np.ndarray:
    """Tuned (or, with tuned=False, the teacher's) question vectors (N, D) of texts from their cached lower states."""
    was_training = tower.training
    tower.eval()
    parts = []
    order = np.argsort(-np.diff(states.offsets.numpy()), kind="stable")  # similar lengths share a batch
    with torch.inference_mode():
        for start in range(0, len(states), batch_size):
            rows = order[start : start + batch_size]
            hidden, mask = states.batch(rows)
            device = tower.encoder.device  # states are cached on the host; a CUDA tower runs its batches on the GPU
            parts.append((rows, tower.run_top(hidden.to(device), mask.to(device), tuned=tuned).cpu().numpy()))
    tower.train(was_training)
    out = np.empty((len(states), tower.identity.dim), np.float32)
    for rows, vectors in parts:
        out[rows] = vectors
    return out


def validation_figures(vectors: np.ndarray, train: EmbeddedPairs, split: EmbeddedPairs) -> dict[str, float]:
    """R@1, MRR (open bank: unique train + split answers) and mean cos to the reference answers."""
    bank = Bank.from_pairs(train, split)
    ranks = retrieval_ranks(vectors, bank.vectors, bank.rows_of(split.answer_ids))
    metrics = retrieval_metrics(ranks)
    return {"R@1": metrics["R@1"], "MRR": metrics["MRR"], "cos": float((vectors * split.a).sum(-1).mean())}


def tower_loss(
    out: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor, config: TowerTrainConfig
) -> torch.Tensor:
    """InfoNCE of the tower's vectors (B, D) over the whole answer bank plus cos_weight·(1 − cos) to their targets."""
    contrast = infonce(out, bank, labels, bank_ids, config.temperature)
    return contrast + config.cos_weight * (1.0 - F.cosine_similarity(out, targets, dim=-1)).mean()


def train_tower(
    tower: QuestionTower,
    train: EmbeddedPairs,
    states: LowerStates,
    config: TowerTrainConfig,
    *,
    val: EmbeddedPairs | None = None,
    val_states: LowerStates | None = None,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[TowerEpochReport]:
    """Trains the tower's tuned layers in place on `train` (whose questions' lower states are `states`)."""
    if len(states) != len(train.pairs):
        raise ValueError(f"{len(states)} cached question states for {len(train.pairs)} training pairs")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    generator = np.random.default_rng(config.seed)
    device = tower.encoder.device
    a = torch.from_numpy(train.a).to(device)
    labels_np, first_rows = answer_labels(train.answer_ids)
    labels = torch.from_numpy(labels_np).to(device)
    bank = a[torch.from_numpy(first_rows)]  # (K, D) every unique train answer
    bank_ids = torch.arange(len(bank), device=device)

    params = [p for p in tower.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(states) / config.batch_size)
    total = per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))

    reports: list[TowerEpochReport] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        tower.train()
        order = generator.permutation(len(states))
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            hidden, mask = states.batch(idx)
            out = tower(hidden.to(device), mask.to(device))  # (B, D)
            rows = torch.from_numpy(idx)
            loss = tower_loss(out, a[rows], labels[rows], bank, bank_ids, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, total, losses[-1])
        seconds = time.perf_counter() - started
        figures = None
        if val is not None and val_states is not None:
            figures = validation_figures(tower_vectors(tower, val_states), train, val)
        report = TowerEpochReport(epoch, float(np.mean(losses)), seconds, figures)
        reports.append(report)
        if on_epoch:
            on_epoch(report)
    tower.eval()
    return reports
