"""Question tower: a trainable copy of the teacher's top transformer layers, for questions only.

The teacher's embeddings and lower layers are shared and stay frozen; the top `layers` layers are
deep-copied and trained (fully, or through LoRA adapters). One pass over the shared lower layers
gives both the frozen top's vector (exactly the teacher's embedding) and the tuned top's vector.
At initialisation the tuned top equals the frozen one, so the tower starts as the identity.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.config import TowerConfig
from pipeline.encoder import EncoderIdentity, TeacherEncoder, check_texts, mean_pool, to_device
from pipeline.encoding import TowerEncoded  # noqa: F401 - re-exported
from pipeline.errors import InputError


class LoRALinear(nn.Module):
    """A frozen linear map plus a rank-r update B·A, with B zero so it starts as the base map."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def add_lora(module: nn.Module, rank: int, alpha: float) -> None:
    """Replaces every nn.Linear under `module` by a LoRALinear around it."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, LoRALinear(child, rank, alpha))
        else:
            add_lora(child, rank, alpha)


def without_dropout(module: nn.Module) -> nn.Module:
    """Sets every dropout probability under `module` to 0, so train mode computes what eval mode does."""
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.p = 0.0
    return module


class QuestionTower(nn.Module):
    """The teacher's lower layers (shared, frozen) with a tuned copy of its top layers.

    Only the tuned copy is a registered submodule: `state_dict()` holds the tuned layers alone.
    """

    def __init__(self, encoder: TeacherEncoder, config: TowerConfig | None = None) -> None:
        super().__init__()
        self.config = config or TowerConfig()
        model = encoder.model
        depth = len(model.encoder.layer)
        if self.config.layers > depth:
            raise InputError(f"tower of {self.config.layers} layers asked for, the encoder has {depth}")
        self._encoder = (encoder,)  # a tuple keeps the teacher out of this module's parameters and state_dict
        self.split = depth - self.config.layers  # layers [0, split) are shared
        self.top = nn.ModuleList(without_dropout(copy.deepcopy(layer)) for layer in model.encoder.layer[self.split :])
        if self.config.lora_rank is not None:
            self.top.requires_grad_(False)
            add_lora(self.top, self.config.lora_rank, self.config.lora_alpha)
        self.to(encoder.device)

    @property
    def encoder(self) -> TeacherEncoder:
        return self._encoder[0]

    @property
    def identity(self) -> EncoderIdentity:
        return self.encoder.identity

    def layer_mask(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The attention mask the teacher's layers take, built as the teacher builds it: hidden (B, L, D), mask (B, L)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.encoder.model.config, inputs_embeds=hidden, attention_mask=mask)

    def lower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states (B, L, D) after the shared layers [0, split) of one padded token batch."""
        model = self.encoder.model
        hidden = model.embeddings(input_ids=tokens["input_ids"], token_type_ids=tokens.get("token_type_ids"))
        layer_mask = self.layer_mask(hidden, tokens["attention_mask"])
        for layer in model.encoder.layer[: self.split]:
            hidden = layer(hidden, layer_mask)
        return hidden

    def run_top(self, hidden: torch.Tensor, mask: torch.Tensor, *, tuned: bool = True) -> torch.Tensor:
        """Pooled unit vectors (B, D) of the tuned (or the teacher's frozen) top layers on lower states (B, L, D)."""
        layers = self.top if tuned else self.encoder.model.encoder.layer[self.split :]
        layer_mask = self.layer_mask(hidden, mask)
        for layer in layers:
            hidden = layer(hidden, layer_mask)
        return mean_pool(hidden, mask)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Tuned question vectors (B, D) from lower states (B, L, D) and the token mask (B, L)."""
        return self.run_top(hidden, mask, tuned=True)

    def tokenize(self, texts: list[str]) -> tuple[dict[str, list[list[int]]], np.ndarray]:
        """Token ids as the teacher cuts them, and which texts were cut."""
        check_texts(texts)
        return self.encoder.tokenize(texts)

    def pad(self, features: dict[str, list[list[int]]], rows: np.ndarray) -> dict[str, torch.Tensor]:
        """One padded token batch of the given rows, on the teacher's device."""
        chosen = {name: [values[i] for i in rows] for name, values in features.items()}
        return to_device(self.encoder.tokenizer.pad(chosen, padding=True, return_tensors="pt"), self.encoder.device)

    def encode_both(self, texts: list[str], batch_size: int | None = None, teacher_rows: Sequence[bool] | None = None) -> TowerEncoded:
        """Teacher and tower vectors of texts from one pass of the shared layers, batched by token count.

        `teacher_rows` limits the frozen top to the texts whose teacher vector is needed (a job with a reference
        answer, for its identity metrics); the others get a zero teacher row, and cost what the teacher alone costs.
        """
        dim = self.identity.dim
        if not texts:
            empty = np.zeros((0, dim), np.float32)
            return TowerEncoded(empty, empty.copy(), np.zeros(0, bool))
        features, truncated = self.tokenize(texts)
        order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
        wanted = np.ones(len(texts), bool) if teacher_rows is None else np.asarray(teacher_rows, bool)
        if wanted.shape != (len(texts),):
            raise ValueError(f"teacher_rows has {wanted.shape[0]} entries for {len(texts)} texts")
        teacher = np.zeros((len(texts), dim), np.float32)
        tower = np.empty((len(texts), dim), np.float32)
        size = batch_size or self.config.batch_size
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), size):
                rows = order[start : start + size]
                tokens = self.pad(features, rows)
                hidden = self.lower(tokens)  # (B, L, D)
                mask = tokens["attention_mask"]
                tower[rows] = self.run_top(hidden, mask, tuned=True).cpu().numpy()
                keep = wanted[rows]
                if keep.all():
                    teacher[rows] = self.run_top(hidden, mask, tuned=False).cpu().numpy()
                elif keep.any():
                    picked = torch.from_numpy(np.flatnonzero(keep)).to(hidden.device)
                    teacher[rows[keep]] = self.run_top(hidden[picked], mask[picked], tuned=False).cpu().numpy()
        self.train(was_training)
        return TowerEncoded(teacher, tower, truncated)
