"""Trains the GenerativeDecoder to reconstruct sentences from their own teacher embeddings.

Teacher forcing with cross-entropy over the word pieces the text uses (generation is limited
to those same pieces), in bfloat16 autocast where the hardware computes it fast (CPUs with
AMX, recent GPUs; AVX-512 BF16 alone is slower than fp32); AdamW with a lower rate for the pretrained layers;
warm-up then cosine over a step count planned from a wall-clock budget (measured on
steps 5–25, and re-planned after each held-out evaluation so the evaluations count too), so
the schedule always completes within the budget; validation loss on a held-out part of the
training sentences every `eval_every` steps, keeping the best state and stopping after
`patience` evaluations without improvement.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.decoders.generative import FROZEN, DecoderNet
from pipeline.hardware import cpu_has_amx


@dataclass(frozen=True)
class DecoderTrainConfig:
    minutes: float = 40.0  # wall-clock budget the step count is planned from
    max_epochs: int = 20  # the time budget or early stopping usually ends the run first
    batch_size: int = 64
    max_tokens: int = 48  # word pieces per sentence, [CLS]/[SEP] excluded; longer ones are cut
    lr_pretrained: float = 2e-4
    lr_new: float = 1e-3
    warmup_steps: int = 50
    noise: float = 0.005  # std of Gaussian noise per dimension on the input vector (then renormalised)
    holdout: float = 0.03  # share of training sentences held out for the validation loss
    eval_every: int = 200
    patience: int = 3
    seed: int = 0
    threads: int = 2
    device: str = "cpu"  # "cuda" for the larger GPU configuration (README)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on a GPU with bf16 or a CPU with AMX

    def __post_init__(self) -> None:
        if self.minutes <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.eval_every < 1 or not 0 < self.holdout < 0.5:
            raise ValueError("minutes and batch_size must be positive, max_epochs and eval_every ≥ 1, holdout in (0, 0.5)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecoderTrainReport:
    planned_steps: int
    steps: int
    best_step: int
    best_val_loss: float
    minutes: float
    train_sentences: int
    holdout_sentences: int
    precision: str = "fp32"  # what the run computed in ("auto" resolved)
    history: list[dict[str, float]] = field(default_factory=list)  # step, train_loss, val_loss

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[int, int, float, float | None], None]  # step, planned, train loss, val loss


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """[CLS] pieces… [SEP] per text, pieces cut at max_tokens."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[tokenizer.cls_token_id, *seq[:max_tokens], tokenizer.sep_token_id] for seq in ids]


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar lengths (sorted within pools of 50 batches) to waste little padding."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    out = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def pad(sequences: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    out = torch.zeros((len(sequences), width), dtype=torch.long)  # [PAD] is id 0
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.tensor(seq)
    return out


@dataclass(frozen=True)
class OutputVocab:
    """The token ids the training text uses, and each id's row among them (-1 for the others)."""

    ids: torch.Tensor
    rows: torch.Tensor

    @classmethod
    def of(cls, sequences: list[list[int]], vocab_size: int) -> OutputVocab:
        ids = torch.tensor(sorted({t for seq in sequences for t in seq[1:]}))
        rows = torch.full((vocab_size,), -1, dtype=torch.long)
        rows[ids] = torch.arange(len(ids))
        return cls(ids, rows)

    def to(self, device: torch.device) -> OutputVocab:
        return OutputVocab(self.ids.to(device), self.rows.to(device))


def sequence_loss(net: DecoderNet, vectors: torch.Tensor, ids: torch.Tensor, vocab: OutputVocab | None = None) -> torch.Tensor:
    """Mean cross-entropy of the next piece over real (non-padding) positions; over `vocab`'s ids when given."""
    targets = ids[:, 1:]
    keep = targets != 0
    hidden = net.hidden(vectors, ids)[keep]
    if vocab is None:
        return F.cross_entropy(net.logits(hidden).float(), targets[keep])
    return F.cross_entropy(net.subset_logits(hidden, vocab.ids).float(), vocab.rows[targets[keep]])


def resolve_precision(precision: str, device: torch.device, amx: Callable[[], bool] = cpu_has_amx) -> str:
    """'auto' becomes bf16 where the device computes it fast (a GPU with bf16, a CPU with AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if amx() and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


@torch.no_grad()
def fit_length(net: DecoderNet, vectors: np.ndarray, sequences: list[list[int]], ridge: float = 1.0) -> None:
    """Fits the network's length head (vector -> log piece count, [CLS]/[SEP] excluded) by ridge regression."""
    x = np.hstack([vectors, np.ones((len(vectors), 1), dtype=vectors.dtype)]).astype(np.float64)
    y = np.log([max(1, len(s) - 2) for s in sequences])
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    net.length.weight.copy_(torch.as_tensor(w[None, :-1], dtype=net.length.weight.dtype))
    net.length.bias.fill_(float(w[-1]))


@torch.no_grad()
def validation_loss(
    net: DecoderNet, vectors: np.ndarray, sequences: list[list[int]], batch_size: int, vocab: OutputVocab | None = None, precision: str = "fp32"
) -> float:
    net.eval()
    device = next(net.parameters()).device
    total = count = 0.0
    order = np.argsort([len(s) for s in sequences])
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids = pad([sequences[i] for i in idx]).to(device)
        tokens = float((ids[:, 1:] != 0).sum())
        with autocast(device, precision):
            total += float(sequence_loss(net, torch.as_tensor(vectors[idx]).to(device), ids, vocab)) * tokens
        count += tokens
    net.train()
    return total / max(count, 1.0)


def replan(cap: int, step: int, seconds_per_step: float, seconds_left: float) -> int:
    """The step count that ends the run when the budget does, at the measured pace (at most `cap`, at least one more).

    A re-plan may move the end either way; the cosine schedule then bends a little rather than
    stopping early or leaving budget unused."""
    return min(cap, max(step + 1, step + int(seconds_left / max(seconds_per_step, 1e-9))))


def train_decoder(
    net: DecoderNet,
    tokenizer,
    texts: list[str],
    vectors: np.ndarray,
    config: DecoderTrainConfig,
    on_progress: ProgressCallback | None = None,
) -> DecoderTrainReport:
    """Trains `net` in place on (text, vector) pairs; returns the report. The best held-out state is kept."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    net.to(device)
    rng = np.random.default_rng(config.seed)
    sequences = tokenize(tokenizer, texts, config.max_tokens)
    order = rng.permutation(len(texts))
    n_hold = max(1, int(len(texts) * config.holdout))
    hold, train = order[:n_hold], order[n_hold:]
    hold_seqs = [sequences[i] for i in hold]
    train_seqs = [sequences[i] for i in train]
    train_vecs = np.ascontiguousarray(vectors[train], dtype=np.float32)
    hold_vecs = np.ascontiguousarray(vectors[hold], dtype=np.float32)
    lengths = np.array([len(s) for s in train_seqs])
    vocab = OutputVocab.of(sequences, net.word.num_embeddings).to(device)
    precision = resolve_precision(config.precision, device)

    pretrained = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith(("layers.", "emb_norm."))]
    fresh = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith(("layers.", "emb_norm.", "length.")) and n not in FROZEN]
    if net.config.init == "scratch":
        pretrained, fresh = [], [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("length.")]
    groups: list[dict[str, Any]] = [{"params": fresh, "lr": config.lr_new}] + ([{"params": pretrained, "lr": config.lr_pretrained}] if pretrained else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    peak = [g["lr"] for g in groups]
    per_epoch = math.ceil(len(train_seqs) / config.batch_size)
    cap = planned = per_epoch * config.max_epochs  # re-planned from the budget after the first steps

    net.train()
    started = timed_from = time.monotonic()
    best = (math.inf, 0, copy.deepcopy(net.trainable_state()))
    history: list[dict[str, float]] = []
    running: list[float] = []
    step = 0
    stale = 0
    epoch = 0
    while step < planned:
        for idx in batches(lengths, config.batch_size, rng):
            if step >= planned:
                break
            scale = min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, planned))))
            for group, lr in zip(optimizer.param_groups, peak):
                group["lr"] = lr * scale
            vecs = torch.as_tensor(train_vecs[idx]).to(device)
            if config.noise > 0:
                vecs = F.normalize(vecs + config.noise * torch.randn_like(vecs), dim=-1)
            with autocast(device, precision):
                loss = sequence_loss(net, vecs, pad([train_seqs[i] for i in idx]).to(device), vocab)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            step += 1
            running.append(loss.item())
            if step == 5:
                timed_from = time.monotonic()
            if step == 25:  # plan the schedule to end within the budget, timing steps after the first (slower) ones
                planned = replan(cap, step, (time.monotonic() - timed_from) / 20, config.minutes * 60 - (time.monotonic() - started))
            val = None
            if step % config.eval_every == 0 or step == planned:
                val = validation_loss(net, hold_vecs, hold_seqs, config.batch_size * 2, vocab, precision)
                history.append({"step": step, "train_loss": float(np.mean(running[-config.eval_every :])), "val_loss": val})
                if val < best[0]:
                    best, stale = (val, step, copy.deepcopy(net.trainable_state())), 0
                else:
                    stale += 1
                if 25 < step < planned:  # evaluations take time too: re-plan so the whole run keeps to the budget
                    now = time.monotonic()
                    planned = replan(cap, step, (now - timed_from) / (step - 5), config.minutes * 60 - (now - started))
            if on_progress:
                on_progress(step, planned, float(np.mean(running[-20:])), val)
            if stale >= config.patience:
                planned = step  # early stop
                break
        epoch += 1
        if epoch >= config.max_epochs:
            break
    net.load_state_dict(best[2], strict=False)
    fit_length(net, train_vecs, train_seqs)
    net.to("cpu").eval()  # decoding runs on the CPU (batch-1 latency); the saved weights are device-free
    return DecoderTrainReport(
        planned_steps=planned, steps=step, best_step=best[1], best_val_loss=best[0], minutes=(time.monotonic() - started) / 60,
        train_sentences=len(train_seqs), holdout_sentences=len(hold_seqs), precision=precision, history=history,
    )
