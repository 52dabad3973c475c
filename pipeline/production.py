"""ProductionPipeline: encode → cube → decode in one process, from a bundle.

The three stage methods (`encode`, `map`, `decode`) are the units a distributed
job system calls one per worker; `process_batch` chains them in-process, so both
give identical answers for the same input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import Bundle, load_bundle
from pipeline.decoders.phrase_bank import BankAnswer, PhraseBankConfig, PhraseBankDecoder
from pipeline.encoder import Encoded, EncoderConfig, TeacherEncoder, check_texts
from pipeline.errors import InputError
from pipeline.evaluation import cosines
from pipeline.training.cube_trainer import apply_map
from pipeline.training.data import embed_cached


@dataclass(frozen=True)
class AnswerResult:
    """One question's outcome: the answer text, which decoder path gave it, scores, timings, metrics."""

    question: str
    answer: str
    path: str  # "bank", or "none" when no bank sentence clears the threshold
    score: float  # inner product of the best bank sentence with the cube output
    candidates: tuple[tuple[str, float], ...]
    truncated: bool  # the question was longer than the encoder's limit and was cut
    timings_ms: dict[str, float] = field(default_factory=dict)  # per-item share of each stage's batch time
    metrics: dict[str, float] = field(default_factory=dict)


class ProductionPipeline:
    """Answers questions with a loaded bundle: teacher encoder, cube, phrase bank."""

    def __init__(self, encoder: TeacherEncoder, bundle: Bundle, decoder: PhraseBankDecoder, *, top_k: int = 3) -> None:
        self.encoder = encoder
        self.bundle = bundle
        self.decoder = decoder
        self.top_k = top_k

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: Path,
        *,
        encoder_config: EncoderConfig | None = None,
        bank_config: PhraseBankConfig | None = None,
        cache_dir: Path | None = None,
        top_k: int = 3,
    ) -> ProductionPipeline:
        """Loads the encoder, checks the bundle against it, and builds (or reuses the cached) bank index."""
        encoder = TeacherEncoder(encoder_config)
        bundle = load_bundle(bundle_dir, encoder.identity)
        vectors = bundle.bank_vectors
        if vectors is None:
            vectors = embed_cached(
                bundle.bank_texts, lambda texts: encoder.encode(texts).vectors, cache_dir, f"bank-{encoder.identity.weights_hash}"
            )
        return cls(encoder, bundle, PhraseBankDecoder(bundle.bank_texts, vectors, bank_config), top_k=top_k)

    @property
    def model_version(self) -> str:
        """Names the bundle and the encoder it runs with, for results to record."""
        return f"{self.bundle.path.name}@{self.bundle.manifest.extra.get('bundle_id', 'unversioned')}"

    def encode(self, texts: list[str]) -> Encoded:
        """Stage 1: unit question vectors (N, D); raises InputError on empty text."""
        return self.encoder.encode(texts)

    def map(self, vectors: np.ndarray) -> np.ndarray:
        """Stage 2: the cube, (N, D) -> (N, D) unit answer vectors."""
        return apply_map(self.bundle.cube, np.ascontiguousarray(vectors, dtype=np.float32))

    def decode(self, vectors: np.ndarray) -> list[BankAnswer]:
        """Stage 3: phrase-bank answers for (N, D) answer vectors."""
        return self.decoder.decode(vectors, k=self.top_k)

    def process_text(self, text: str) -> str:
        """The answer text for one question (or the explicit no-confident-answer marker)."""
        return self.process_batch([text])[0].answer

    def process_batch(self, texts: list[str], references: list[str] | None = None) -> list[AnswerResult]:
        """Answers a batch; with references, adds per-item quality metrics (DESIGN.md names)."""
        check_texts(texts)
        if references is not None:
            if len(references) != len(texts):
                raise InputError(f"{len(texts)} questions but {len(references)} references")
            check_texts(references)
        n = max(1, len(texts))
        started = time.perf_counter()
        encoded = self.encode(texts)
        encoded_at = time.perf_counter()
        answer_vectors = self.map(encoded.vectors)
        mapped_at = time.perf_counter()
        answers = self.decode(answer_vectors)
        decoded_at = time.perf_counter()
        timings = {
            "encode": 1000 * (encoded_at - started) / n,
            "cube": 1000 * (mapped_at - encoded_at) / n,
            "decode": 1000 * (decoded_at - mapped_at) / n,
        }
        metrics = self.score(encoded.vectors, answer_vectors, answers, references)
        return [
            AnswerResult(
                question=text,
                answer=answer.text,
                path=self.decoder.path if answer.confident else "none",
                score=answer.score,
                candidates=tuple((c.text, c.score) for c in answer.candidates),
                truncated=bool(encoded.truncated[i]),
                timings_ms=dict(timings),
                metrics=metrics[i],
            )
            for i, (text, answer) in enumerate(zip(texts, answers))
        ]

    def score(
        self, questions: np.ndarray, outputs: np.ndarray, answers: list[BankAnswer], references: list[str] | None
    ) -> list[dict[str, float]]:
        """Per-item metrics: decode_fidelity always; with references also cube/identity cosines, and
        e2e_cos and echo for items the bank answered (a "no confident answer" has no answer text to score)."""
        decoded = self.decoder.vectors[[a.candidates[0].row for a in answers]] if answers else outputs[:0]
        metrics: list[dict[str, float]] = [{"decode_fidelity": float(f)} for f in cosines(decoded, outputs)]
        if references is None:
            return metrics
        refs = self.encode(references).vectors
        for item, answer, cube_cos, identity_cos, e2e_cos, to_question in zip(
            metrics, answers, cosines(outputs, refs), cosines(questions, refs), cosines(decoded, refs), cosines(decoded, questions)
        ):
            item.update(cube_cos=float(cube_cos), identity_cos=float(identity_cos))
            if answer.confident:
                item.update(e2e_cos=float(e2e_cos), echo=float(to_question > e2e_cos))
        return metrics


def set_threads(threads: int) -> None:
    """Caps torch's intra-op threads (2-core machines run best with one per core)."""
    if threads > 0:
        torch.set_num_threads(threads)
