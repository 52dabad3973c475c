"""ProductionPipeline: encode → cube → decode in one process, from a bundle.

It chains the three stage objects of `pipeline.stages`, the same ones the
distributed workers load one per process, so both give identical answers for
the same input.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.answer_result import AnswerResult
from pipeline.checkpoint import load_bundle
from pipeline.confidence import evidence
from pipeline.decoders.base import Answer, DecoderKind
from pipeline.decoders.phrase_bank import PhraseBankConfig
from pipeline.encoder import Encoded, EncoderConfig, check_texts
from pipeline.errors import InputError
from pipeline.knowledge.bank_cache import BankCache, BankRef
from pipeline.rerank.handoff import arrays_to_hits, hits_to_arrays
from pipeline.rerank.stage import RerankStage
from pipeline.stages import CubeStage, DecodeStage, EncodeStage


class ProductionPipeline:
    """Answers questions with a loaded bundle: teacher encoder, cube, phrase bank."""

    def __init__(self, encode_stage: EncodeStage, cube_stage: CubeStage, decode_stage: DecodeStage,
                 rerank_stage: RerankStage | None = None) -> None:
        self.encode_stage = encode_stage
        self.cube_stage = cube_stage
        self.decode_stage = decode_stage
        self.rerank_stage = rerank_stage  # None: the bundle has no reranker, or the decoder is not the bank

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
        runtime: str = "auto",
        threads: int = 0,
        rerank: bool = True,
    ) -> ProductionPipeline:
        """Loads the encoder, checks the bundle against it, builds (or reuses the cached) bank index, the bundle's
        reranker when it has one (and `rerank`, for the bank decoder) and, for `decoder` generative or hybrid, the
        bundle's generative decoder."""
        encode_stage = EncodeStage(bundle_dir, encoder_config, runtime=runtime, threads=threads)
        bundle = load_bundle(bundle_dir, encode_stage.encoder.identity)
        decode_stage = DecodeStage(
            bundle_dir, bundle=bundle, bank_config=bank_config, top_k=top_k,
            encoder=encode_stage.encoder if encode_stage.runtime == "torch" else None,  # re-embedding answers stays on torch
            cache_dir=cache_dir,
            decoder=decoder, generative_options=generative_options, banks=banks, min_confidence=min_confidence,
        )
        reranks = rerank and decode_stage.rerank_depth is not None
        return cls(encode_stage, CubeStage(bundle_dir, bundle), decode_stage, RerankStage(bundle_dir, decode_stage) if reranks else None)

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

    def decode_reranked(
        self, vectors: np.ndarray, teacher: np.ndarray, texts: list[str], bank: BankRef | None, min_confidence: float | None,
    ) -> tuple[list[Answer], dict[str, float]]:
        """Stages 3 and 4 as the workers run them (the candidates pass through the message's arrays) for answer vectors
        and the questions' teacher vectors: answers and the ms each stage took."""
        if self.rerank_stage is None:
            raise InputError("this bundle has no reranker (rerank.json): answer without --rerank, or train one (cubeqa train)")
        started = time.perf_counter()
        hits = arrays_to_hits(*hits_to_arrays(self.decode_stage.retrieve(vectors, bank, texts, self.rerank_stage.depth)))
        retrieved = time.perf_counter()
        answers = self.rerank_stage.answer(hits, texts, teacher, bank, min_confidence)
        return answers, {"decode": 1000 * (retrieved - started), "rerank": 1000 * (time.perf_counter() - retrieved)}

    def process_text(self, text: str) -> str:
        """The answer text for one question (or the explicit no-confident-answer marker)."""
        return self.process_batch([text])[0].answer

    def process_batch(
        self, texts: list[str], references: list[str] | None = None, *, bank: BankRef | None = None,
        min_confidence: float | None = None, rerank: bool | None = None,
    ) -> list[AnswerResult]:
        """Answers a batch (reranked when `rerank`, None: when the pipeline has a rerank stage with its calibrator); with
        references, adds per-item quality metrics (DESIGN.md names)."""
        check_texts(texts)
        if references is not None:
            if len(references) != len(texts):
                raise InputError(f"{len(texts)} questions but {len(references)} references")
            check_texts(references)
        reranks = (self.rerank_stage is not None and self.rerank_stage.calibrator is not None) if rerank is None else rerank
        n = max(1, len(texts))
        started = time.perf_counter()
        # the reranker reads every question's teacher vector; otherwise only the identity metrics need it
        teacher_rows = None if reranks else [references is not None] * len(texts)
        encoded = self.encode_stage.encode_questions(texts, teacher_rows=teacher_rows)
        encoded_at = time.perf_counter()
        answer_vectors = self.map(encoded.tower)
        mapped_at = time.perf_counter()
        if reranks:
            answers, timings = self.decode_reranked(answer_vectors, encoded.teacher, texts, bank, min_confidence)
        else:
            answers = self.decode(answer_vectors, bank, min_confidence, texts)
            timings = {"decode": 1000 * (time.perf_counter() - mapped_at)}
        timings = {"encode": 1000 * (encoded_at - started), "cube": 1000 * (mapped_at - encoded_at), **timings}
        timings = {stage: ms / n for stage, ms in timings.items()}
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
