"""The one settings object: runtime choices read from `CUBEQA_*` environment variables.

Built only at the edges (the CLI callback), never at import time. Model
hyperparameters live in the bundle manifest, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent


def default_bundle_dir() -> Path:
    """The trained bundle shipped inside the package."""
    return PACKAGE_DIR / "bundles" / "default"


def default_cache_dir() -> Path:
    """Where embeddings of data files and banks are cached."""
    return Path.home() / ".cache" / "cubeqa"


class Settings(BaseSettings):
    """Runtime settings; each field is also `CUBEQA_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CUBEQA_", extra="forbid")

    bundle_dir: Path = Field(default_factory=default_bundle_dir, description="checkpoint bundle to answer with")
    encoder_dir: Path | None = Field(None, description="local Hugging Face encoder directory; default: packaged all-MiniLM-L6-v2")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")
    encode_batch_size: int = Field(64, ge=1, description="texts per encoder forward pass")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="embedding cache directory")
    bank_index: Literal["flat", "hnsw"] = Field("flat", description="FAISS index kind of the phrase bank")
    min_score: float = Field(0.3, ge=-1.0, le=1.0, description="bank score below which the answer is 'no confident answer'")
    top_k: int = Field(3, ge=1, description="bank candidates returned per answer")

    @model_validator(mode="after")
    def no_unknown_variables(self) -> Settings:
        """A misspelt CUBEQA_* variable is an error, not silently ignored."""
        known = {f"CUBEQA_{name.upper()}" for name in type(self).model_fields}
        unknown = sorted(name for name in os.environ if name.upper().startswith("CUBEQA_") and name.upper() not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return self
