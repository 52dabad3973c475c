"""The three model stages as separately loadable units.

A distributed worker loads only its own stage (the cube worker never loads the
encoder); `ProductionPipeline` composes all three in one process. Both call the
same methods, so answers are identical for the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.checkpoint import Bundle, Manifest, check_encoder, load_bundle, read_manifest
from pipeline.decoders.generative import Generated, load_generative
from pipeline.decoders.hybrid import HybridDecoder
from pipeline.decoders.phrase_bank import BankAnswer, PhraseBankConfig, PhraseBankDecoder
from pipeline.encoder import Encoded, EncoderConfig, TeacherEncoder
from pipeline.errors import BundleError
from pipeline.training.cube_trainer import apply_map
from pipeline.training.data import embed_cached


def model_version(bundle_dir: Path, manifest: Manifest) -> str:
    """Names the bundle and its weights id, for every result to record."""
    return f"{Path(bundle_dir).name}@{manifest.extra.get('bundle_id', 'unversioned')}"


class EncodeStage:
    """Stage 1: the teacher encoder, checked against the bundle it serves."""

    def __init__(self, bundle_dir: Path, encoder_config: EncoderConfig | None = None) -> None:
        manifest = read_manifest(bundle_dir)
        self.encoder = TeacherEncoder(encoder_config)
        check_encoder(manifest, self.encoder.identity, Path(bundle_dir))
        self.model_version = model_version(bundle_dir, manifest)

    def encode(self, texts: list[str]) -> Encoded:
        """Unit vectors (N, D) in input order; raises InputError on empty text."""
        return self.encoder.encode(texts)


class CubeStage:
    """Stage 2: the trained lattice, question vectors to answer vectors."""

    def __init__(self, bundle_dir: Path, bundle: Bundle | None = None) -> None:
        self.bundle = bundle or load_bundle(bundle_dir)
        self.model_version = model_version(bundle_dir, self.bundle.manifest)

    def map(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, D) unit answer vectors."""
        return apply_map(self.bundle.cube, np.ascontiguousarray(vectors, dtype=np.float32))


@dataclass(frozen=True)
class Answer:
    """One decoded answer, whatever decoder produced it."""

    text: str
    path: str  # "bank", "generative", or "none" when the bank alone found nothing above its threshold
    score: float  # bank: inner product of the best sentence; generative: cos(enc(text), target vector)
    candidates: tuple[tuple[str, float], ...]
    vector: np.ndarray  # teacher embedding of `text` (for the metrics; from the bank or re-encoded)
    bank_score: float  # the bank's best score, also when another path answered


class DecodeStage:
    """Stage 3: answer vectors to sentences (phrase bank, generative or hybrid), plus the per-item quality metrics."""

    def __init__(
        self,
        bundle_dir: Path,
        *,
        bundle: Bundle | None = None,
        bank_config: PhraseBankConfig | None = None,
        top_k: int = 3,
        encoder: TeacherEncoder | None = None,
        encoder_config: EncoderConfig | None = None,
        cache_dir: Path | None = None,
        decoder: str = "bank",
        generative_options: dict[str, object] | None = None,
        hybrid_threshold: float | None = None,
    ) -> None:
        """Uses the bank vectors shipped in the bundle (embeds the bank, cached, only when it ships none);
        the generative and hybrid decoders also load the teacher, to re-embed what they generate."""
        if decoder not in ("bank", "generative", "hybrid"):
            raise ValueError(f"decoder must be bank, generative or hybrid, got {decoder!r}")
        bundle = bundle or load_bundle(bundle_dir)
        self.kind = decoder
        self.top_k = top_k
        self.model_version = model_version(bundle_dir, bundle.manifest)
        self.encoder = encoder
        if bundle.bank_vectors is None or decoder != "bank":
            self.encoder = encoder or TeacherEncoder(encoder_config)
            check_encoder(bundle.manifest, self.encoder.identity, Path(bundle_dir))
        vectors = bundle.bank_vectors
        if vectors is None:
            embedder = self.encoder
            assert embedder is not None
            vectors = embed_cached(
                bundle.bank_texts, lambda texts: embedder.encode(texts).vectors, cache_dir, f"bank-{embedder.identity.weights_hash}"
            )
        self.decoder = PhraseBankDecoder(bundle.bank_texts, vectors, bank_config)
        self.generative = None
        self.hybrid = None
        if decoder != "bank":
            self.generative, record = load_generative(bundle_dir, self.encoder, **(generative_options or {}))
            if decoder == "hybrid":
                chosen = (record.get("hybrid") or {}).get("threshold") if hybrid_threshold is None else hybrid_threshold
                if chosen is None:
                    raise BundleError(f"bundle {bundle_dir} has no hybrid threshold: choose one with `cubeqa eval --decoder all --save-threshold`")
                self.hybrid = HybridDecoder(self.decoder, self.generative, float(chosen), top_k)

    def decode(self, vectors: np.ndarray) -> list[Answer]:
        """Answers for (N, D) unit answer vectors."""
        if self.kind == "bank":
            return [self.from_bank(a) for a in self.decoder.decode(vectors, k=self.top_k)]
        if self.kind == "generative":
            assert self.generative is not None
            generated = self.generative.decode(vectors)
            return self.from_generated(generated, vectors, [float(s) for s in self.decoder.search(vectors, 1)[0][:, 0]])
        assert self.hybrid is not None
        answers = self.hybrid.decode(vectors)
        routed = [i for i, a in enumerate(answers) if a.generated is not None]
        made = (
            dict(zip(routed, self.from_generated([answers[i].generated for i in routed], vectors[routed], [answers[i].bank.score for i in routed])))  # type: ignore[misc]
            if routed
            else {}
        )
        return [made[i] if i in made else self.from_bank(a.bank, routed=True) for i, a in enumerate(answers)]

    def from_bank(self, answer: BankAnswer, routed: bool = False) -> Answer:
        """`routed`: the hybrid's threshold chose the bank, which then answers even below its own min_score."""
        best = answer.candidates[0]
        confident = answer.confident or routed
        return Answer(
            text=best.text if confident else answer.text, path=self.decoder.path if confident else "none", score=answer.score,
            candidates=tuple((c.text, c.score) for c in answer.candidates), vector=self.decoder.vectors[best.row], bank_score=answer.score,
        )

    def from_generated(self, generated: list[Generated], targets: np.ndarray, bank_scores: list[float]) -> list[Answer]:
        assert self.encoder is not None
        vectors = self.encoder.encode_generated([g.text for g in generated])
        return [
            Answer(text=g.text, path="generative", score=float(v @ t), candidates=tuple(g.candidates), vector=v, bank_score=b)
            for g, v, t, b in zip(generated, vectors, targets, bank_scores)
        ]

    def score(
        self,
        questions: np.ndarray,
        outputs: np.ndarray,
        answers: list[Answer],
        references: Sequence[np.ndarray | None] | None = None,
    ) -> list[dict[str, float]]:
        """Per-item metrics (DESIGN.md names): decode_fidelity always; for items with a reference vector
        also cube_cos and identity_cos, and e2e_cos and echo when a decoder answered."""
        metrics: list[dict[str, float]] = [{"decode_fidelity": float(a.vector @ o)} for a, o in zip(answers, outputs)]
        if references is None:
            return metrics
        for i, (item, answer, ref) in enumerate(zip(metrics, answers, references)):
            if ref is None:
                continue
            e2e = float(answer.vector @ ref)
            item.update(cube_cos=float(outputs[i] @ ref), identity_cos=float(questions[i] @ ref))
            if answer.path != "none":
                item.update(e2e_cos=e2e, echo=float(float(answer.vector @ questions[i]) > e2e))
        return metrics
