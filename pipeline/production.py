"""ProductionPipeline: encode → cube → decode in one process, from a bundle.

It chains the three stage objects of `pipeline.stages`, the same ones the
distributed workers load one per process, so both give identical answers for
the same input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.checkpoint import load_bundle
from pipeline.confidence import evidence
from pipeline.decoders.base import Answer, DecoderKind
from pipeline.decoders.phrase_bank import PhraseBankConfig
from pipeline.encoder import Encoded, EncoderConfig, check_texts
from pipeline.errors import InputError
from pipeline.knowledge.bank_cache import BankCache, BankRef
from pipeline.stages import CubeStage, DecodeStage, EncodeStage


@dataclass(frozen=True)
class AnswerResult:
    """One question's outcome: the answer text, which decoder path gave it, scores, timings, metrics."""

    question: str
    answer: str
    path: str  # "bank", "generative", or "none" when no bank sentence clears the bank's threshold
    score: float  # bank: fused score of the best sentence (cosine + lexical); generative: cos(enc(answer), output)
    candidates: tuple[tuple[str, float], ...]
    truncated: bool  # the question was longer than the encoder's limit and was cut
    timings_ms: dict[str, float] = field(default_factory=dict)  # per-item share of each stage's batch time
    metrics: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None  # calibrated probability that the bank sentence is right; None for generated text
    evidence: dict[str, Any] | None = None  # the sentence's document, position, neighbours and the alternatives (pipeline.confidence.evidence)


class ProductionPipeline:
    """Answers questions with a loaded bundle: teacher encoder, cube, phrase bank."""

    def __init__(self, encode_stage: EncodeStage, cube_stage: CubeStage, decode_stage: DecodeStage) -> None:
        self.encode_stage = encode_stage
        self.cube_stage = cube_stage
        self.decode_stage = decode_stage

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: Path,
        *,
        encoder_config: EncoderConfig | None = None,
        bank_config: PhraseBankConfig | None = None,
        cache_dir: Path | None = None,
        top_k: int = 3,
        decoder: DecoderKind = DecoderKind.bank,
        generative_options: dict[str, object] | None = None,
        banks: BankCache | None = None,
        min_confidence: float | None = None,
        runtime: str = "torch",
        threads: int = 0,
    ) -> ProductionPipeline:
        """Loads the encoder, checks the bundle against it, builds (or reuses the cached) bank index and,
        for `decoder` generative or hybrid, loads the bundle's generative decoder."""
        encode_stage = EncodeStage(bundle_dir, encoder_config, runtime=runtime, threads=threads)
        bundle = load_bundle(bundle_dir, encode_stage.encoder.identity)
        decode_stage = DecodeStage(
            bundle_dir, bundle=bundle, bank_config=bank_config, top_k=top_k,
            encoder=encode_stage.encoder if encode_stage.runtime == "torch" else None,  # re-embedding answers stays on torch
            cache_dir=cache_dir,
            decoder=decoder, generative_options=generative_options, banks=banks, min_confidence=min_confidence,
        )
        return cls(encode_stage, CubeStage(bundle_dir, bundle), decode_stage)

    @property
    def model_version(self) -> str:
        """Names the bundle and the weights it runs with, for results to record."""
        return self.cube_stage.model_version

    def encode(self, texts: list[str]) -> Encoded:
        """Stage 1: unit question vectors (N, D); raises InputError on empty text."""
        return self.encode_stage.encode(texts)

    def map(self, vectors: np.ndarray) -> np.ndarray:
        """Stage 2: the cube, (N, D) -> (N, D) unit answer vectors."""
        return self.cube_stage.map(vectors)

    def decode(
        self, vectors: np.ndarray, bank: BankRef | None = None, min_confidence: float | None = None,
        texts: list[str] | None = None,
    ) -> list[Answer]:
        """Stage 3: answers for (N, D) answer vectors (and their questions, for the lexical search)."""
        return self.decode_stage.decode(vectors, bank, min_confidence, texts)

    def process_text(self, text: str) -> str:
        """The answer text for one question (or the explicit no-confident-answer marker)."""
        return self.process_batch([text])[0].answer

    def process_batch(
        self, texts: list[str], references: list[str] | None = None, *, bank: BankRef | None = None, min_confidence: float | None = None
    ) -> list[AnswerResult]:
        """Answers a batch; with references, adds per-item quality metrics (DESIGN.md names)."""
        check_texts(texts)
        if references is not None:
            if len(references) != len(texts):
                raise InputError(f"{len(texts)} questions but {len(references)} references")
            check_texts(references)
        n = max(1, len(texts))
        started = time.perf_counter()
        encoded = self.encode_stage.encode_questions(texts, teacher_rows=[references is not None] * len(texts))
        encoded_at = time.perf_counter()
        answer_vectors = self.map(encoded.tower)
        mapped_at = time.perf_counter()
        answers = self.decode(answer_vectors, bank, min_confidence, texts)
        decoded_at = time.perf_counter()
        timings = {
            "encode": 1000 * (encoded_at - started) / n,
            "cube": 1000 * (mapped_at - encoded_at) / n,
            "decode": 1000 * (decoded_at - mapped_at) / n,
        }
        refs = None if references is None else list(self.encode(references).vectors)
        metrics = self.decode_stage.score(encoded.teacher, answer_vectors, answers, refs)
        return [
            AnswerResult(
                question=text,
                answer=answer.text,
                path=answer.path,
                score=answer.score,
                candidates=answer.candidate_pairs(),
                truncated=bool(encoded.truncated[i]),
                timings_ms=dict(timings),
                metrics=metrics[i],
                confidence=answer.confidence,
                evidence=evidence(answer),
            )
            for i, (text, answer) in enumerate(zip(texts, answers))
        ]


def set_threads(threads: int, *, search: bool = True) -> None:
    """Caps torch's intra-op threads and, when `search`, FAISS's OpenMP threads (0 keeps the libraries' defaults).

    A process that never searches passes search=False and so never loads FAISS.
    """
    if threads > 0:
        torch.set_num_threads(threads)
        if search:
            import faiss

            faiss.omp_set_num_threads(threads)
