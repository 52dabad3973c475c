"""The one settings object: runtime choices read from `CUBEQA_*` environment variables.

Built only at the edges (the CLI callback), never at import time. Model
hyperparameters live in the bundle manifest, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import DecoderKind
from tasks.wire import MAX_MICRO_BATCH

PACKAGE_DIR = Path(__file__).resolve().parent


def default_bundle_dir() -> Path:
    """The trained bundle shipped inside the package."""
    return PACKAGE_DIR / "bundles" / "default"


def default_cache_dir() -> Path:
    """Where embeddings of data files and banks are cached."""
    return Path.home() / ".cache" / "cubeqa"


def default_bank_root() -> Path:
    """Where banks live unless CUBEQA_BANK_ROOT says otherwise: the user's data directory, whatever the database."""
    return Path(user_data_dir("cubeqa", appauthor=False)) / "banks"


class Settings(BaseSettings):
    """Runtime settings; each field is also `CUBEQA_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CUBEQA_", extra="forbid", hide_input_in_errors=True)  # errors never echo secrets

    bundle_dir: Path = Field(default_factory=default_bundle_dir, description="checkpoint bundle to answer with")
    encoder_dir: Path | None = Field(None, description="local Hugging Face encoder directory; default: packaged all-MiniLM-L6-v2")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N")
    half_precision: bool = Field(False, description="fp16 encoder weights on CUDA (ignored on CPU)")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")
    runtime: Literal["auto", "torch", "int8"] = Field(
        "auto", description="serving runtime of the encode stage on the CPU: torch fp32, int8 (ONNX Runtime; needs `cubeqa export`), "
        "or auto: int8 when the bundle holds its exported files, else torch. "
        "On CUDA the torch runtime serves either way (fp16/bf16). See docs/performance.md"
    )
    encode_batch_size: int = Field(16, ge=1, description="texts per encoder forward pass (16: fastest per core and least memory at micro-batches of 64, see README Performance)")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="embedding cache directory")
    bank_index: Literal["flat", "hnsw"] = Field("flat", description="FAISS index kind of the phrase bank")
    min_score: float = Field(0.3, ge=-1.0, le=1.0, description="bank score below which the answer is 'no confident answer'")
    top_k: int = Field(3, ge=1, description="bank candidates returned per answer")
    decoder: DecoderKind = Field(DecoderKind.bank, description="which decoder turns answer vectors into text: bank; generative and hybrid are experimental")
    generative_beam: int | None = Field(None, ge=1, le=16, description="beam width of the generative decoder (1 = greedy); unset: the bundle's default")
    generative_rerank: bool | None = Field(None, description="rerank beam candidates by teacher cosine to the target; unset: the bundle's default")
    generative_min_length: float | None = Field(
        None, ge=0, le=2, description="no end before this share of the sentence length predicted from the vector (0 = off); unset: the bundle's default"
    )
    generative_int8: bool | None = Field(
        None, description="multiply the generative decoder's layers in int8 where torch has an int8 CPU engine (x86); unset: the bundle's default (on)"
    )

    # Knowledge banks.
    bank_root: Path = Field(
        default_factory=default_bank_root,
        description="directory of the knowledge banks, shared by every decode worker; default: the user's data directory"
        " (~/.local/share/cubeqa/banks on Linux), whatever the database",
    )
    bank: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="bank a job answers from when it names none")
    bank_cache_mb: int = Field(1024, ge=1, description="most MB of bank versions a decode worker keeps loaded (least recently used go first)")
    min_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description="calibrated confidence below which an answer is 'no confident answer'; unset: the bundle's default"
    )
    rerank: bool = Field(
        True, description="jobs that do not say are reranked by the bundle's reranker (the rerank stage) when it has one"
    )

    # The job system.
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis) URL")
    database_url: str = Field("sqlite:///cubeqa.db", description="SQL store URL: sqlite:///PATH or postgresql+psycopg://...")
    micro_batch: int = Field(64, ge=1, le=MAX_MICRO_BATCH, description="jobs per chained encode|cube|decode task")
    max_question_chars: int = Field(4000, ge=1, description="longest accepted question or reference, in characters")
    max_batch_items: int = Field(100_000, ge=1, description="most jobs in one submitted batch")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest accepted HTTP request body")
    max_unpacked_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="most bytes an uploaded compressed document (.docx) may unpack to; more is refused"
    )
    task_time_limit: int = Field(300, ge=10, description="seconds a stage task may run before it is killed")
    visibility_timeout: int = Field(3600, ge=60, description="seconds before Redis re-delivers an unacknowledged task")
    reconcile_after: int = Field(600, ge=1, description="seconds a job may sit unfinished before the reconciler re-sends it")
    max_attempts: int = Field(5, ge=1, description="deliveries of a job before the reconciler fails it")
    queue_wait_warn: int = Field(
        60, ge=1, description="seconds a job may wait queued (no worker taking it) before status, metrics, submit --wait warn"
    )
    api_host: str = Field("127.0.0.1", description="address `cubeqa api` listens on")
    api_port: int = Field(8000, ge=1, le=65535, description="port `cubeqa api` listens on")
    api_token: SecretStr | None = Field(None, description="bearer token the HTTP API requires; unset: no auth")
    api_url: str | None = Field(
        None, description="a running `cubeqa api` that `cubeqa ask` sends its questions to (its workers keep the models loaded)"
    )
    flower_host: str = Field("127.0.0.1", description="address `cubeqa flower` listens on")
    flower_port: int = Field(5555, ge=1, le=65535, description="port `cubeqa flower` listens on")
    flower_basic_auth: SecretStr | None = Field(None, description="user:password Flower requires; unset: no auth")

    # Webhooks (a batch's or job's callback URL).
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key webhooks are signed with: the secret of the API token's users, shared with their "
        "receivers; the hooks worker needs it (unset: it refuses to start)"
    )
    webhook_allow_http: bool = Field(False, description="accept http:// callback URLs, not only https://")
    webhook_allow_private: bool = Field(
        False, description="accept callback hosts resolving to loopback, private or link-local addresses (SSRF guard off)"
    )
    webhook_timeout: float = Field(10.0, gt=0, le=120, description="seconds a webhook attempt may take to connect, to send, and to get the answer, each")
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="attempts of a webhook delivery before it is given up")
    webhook_backoff: float = Field(5.0, gt=0, description="seconds before a webhook's second attempt; doubling after each failure")
    webhook_backoff_max: float = Field(600.0, gt=0, description="longest wait between two webhook attempts (at most half CUBEQA_VISIBILITY_TIMEOUT is used)")

    @model_validator(mode="after")
    def secrets_are_meaningful(self) -> Settings:
        """An empty token would silently mean "no auth"; a Flower credential needs a user and a password."""
        if self.api_token is not None and not self.api_token.get_secret_value().strip():
            raise ValueError("CUBEQA_API_TOKEN is empty: unset it to run the API without auth")
        if self.flower_basic_auth is not None:
            user, _, password = self.flower_basic_auth.get_secret_value().partition(":")
            if not user or not password:
                raise ValueError("CUBEQA_FLOWER_BASIC_AUTH must be user:password, both non-empty")
        return self

    @model_validator(mode="after")
    def webhook_secret_signs(self) -> Settings:
        """An empty secret would sign with a key anyone can guess."""
        if self.webhook_secret is not None and not self.webhook_secret.get_secret_value().strip():
            raise ValueError("CUBEQA_WEBHOOK_SECRET is empty: set a long random value, or unset it to send no webhooks")
        return self

    @model_validator(mode="after")
    def no_unknown_variables(self) -> Settings:
        """A misspelt CUBEQA_* variable is an error, not silently ignored."""
        known = {f"CUBEQA_{name.upper()}" for name in type(self).model_fields}
        unknown = sorted(name for name in os.environ if name.upper().startswith("CUBEQA_") and name.upper() not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return self
