"""The three model stages as separately loadable units.

A distributed worker loads only its own stage (the cube worker never loads the
encoder); `ProductionPipeline` composes all three in one process. Both call the
same methods, so answers are identical for the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.calibration import Calibrator, default_min_confidence, load_calibration
from pipeline.checkpoint import Bundle, Manifest, check_encoder, load_bundle
from pipeline.confidence import with_confidence
from pipeline.cube import apply_map
from pipeline.data import embed_cached
from pipeline.decoders.base import Answer, Decoder, DecoderKind
from pipeline.decoders.phrase_bank import PhraseBankConfig, PhraseBankDecoder
from pipeline.decoders.registry import DecoderParts, make_decoder
from pipeline.encode_stage import EncodeStage  # noqa: F401 - re-exported: the three stages live side by side
from pipeline.encode_stage import model_version as version_of
from pipeline.encoder import EncoderConfig, TeacherEncoder
from pipeline.knowledge.bank_cache import BankCache, BankRef
from pipeline.metrics import item_metrics
from pipeline.tower_io import load_tower_if_any


def model_version(bundle_dir: Path, manifest: Manifest) -> str:
    """Names the bundle and its weights ids (the cube's, and the tower's when it has one), for every result to record."""
    return version_of(bundle_dir, manifest.extra)


def answer_vectors(bundle: Bundle, encoder: TeacherEncoder, questions: list[str], teacher: np.ndarray | None = None) -> np.ndarray:
    """The bundle's answer vectors (N, D) for questions, as the stages compute them: its tower (if any), then its cube.
    `teacher`, the questions' teacher vectors when already at hand, spares encoding them for a bundle without a tower."""
    tower = load_tower_if_any(bundle.path, encoder)
    if tower is not None:
        inputs = tower.encode_both(questions, batch_size=encoder.config.batch_size).tower
    else:
        inputs = encoder.encode(questions).vectors if teacher is None else teacher
    return apply_map(bundle.cube, np.ascontiguousarray(inputs, dtype=np.float32))


class CubeStage:
    """Stage 2: the trained lattice, question vectors to answer vectors."""

    def __init__(self, bundle_dir: Path, bundle: Bundle | None = None) -> None:
        self.bundle = bundle or load_bundle(bundle_dir)
        self.model_version = model_version(bundle_dir, self.bundle.manifest)

    def map(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, D) unit answer vectors."""
        return apply_map(self.bundle.cube, np.ascontiguousarray(vectors, dtype=np.float32))


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
        decoder: DecoderKind = DecoderKind.bank,
        generative_options: dict[str, object] | None = None,
        hybrid_threshold: float | None = None,
        banks: BankCache | None = None,
        min_confidence: float | None = None,
    ) -> None:
        """Uses the bank vectors shipped in the bundle (embeds the bank, cached, only when it ships none) for jobs that
        name no bank, and `banks` for those that do; the generative and hybrid decoders also load the teacher, to
        re-embed what they generate. The bundle's calibrator (if any) gives bank answers a confidence; below
        `min_confidence` (default: the bundle's) they become "no confident answer"."""
        kind = DecoderKind(decoder)
        bundle = bundle or load_bundle(bundle_dir)
        self.kind = kind
        self.top_k = top_k
        self.model_version = model_version(bundle_dir, bundle.manifest)
        self.encoder = encoder
        if bundle.bank_vectors is None or kind.needs_teacher:
            self.encoder = encoder or TeacherEncoder(encoder_config)
            check_encoder(bundle.manifest, self.encoder.identity, Path(bundle_dir))
        vectors = bundle.bank_vectors
        if vectors is None:
            embedder = self.encoder
            assert embedder is not None
            vectors = embed_cached(
                bundle.bank_texts, lambda texts: embedder.encode(texts).vectors, cache_dir, f"bank-{embedder.identity.weights_hash}"
            )
        self.bank = PhraseBankDecoder(bundle.bank_texts, vectors, bank_config, top_k=top_k)
        self.bank_config = bank_config
        self.parts = DecoderParts(Path(bundle_dir), self.bank, self.encoder, dict(generative_options or {}), hybrid_threshold)
        self.decoder: Decoder = make_decoder(kind, self.parts)
        if kind.needs_teacher:  # one generative model for the decoders of every bank
            path = self.decoder if kind is DecoderKind.generative else self.decoder.generative
            self.parts = replace(self.parts, generative=path.generative)
        self.banks = banks
        self.calibrator: Calibrator | None = load_calibration(bundle_dir)
        self.min_confidence = default_min_confidence(bundle_dir) if min_confidence is None else min_confidence
        self._by_bank: dict[BankRef, tuple[object, Decoder]] = {}

    def decode(self, vectors: np.ndarray, bank: BankRef | None = None, min_confidence: float | None = None) -> list[Answer]:
        """Answers for (N, D) unit answer vectors from `bank` (None: the bundle's own), with calibrated confidence;
        `min_confidence` overrides the stage's threshold for this call."""
        decoder = self.decoder if bank is None else self.decoder_for(bank)
        threshold = self.min_confidence if min_confidence is None else min_confidence
        return with_confidence(decoder.decode(vectors), self.calibrator, threshold)

    def decoder_for(self, ref: BankRef) -> Decoder:
        """The configured decoder over one bank version (rebuilt when the cache has reloaded that version)."""
        if self.banks is None:
            raise ValueError(f"this decode stage serves no knowledge banks, but a job names bank {ref}")
        loaded = self.banks.get(ref)
        held = self._by_bank.get(ref)
        if held is None or held[0] is not loaded:
            bank = PhraseBankDecoder.from_source(loaded, self.bank_config, top_k=self.top_k)
            held = (loaded, make_decoder(self.kind, replace(self.parts, bank=bank)))
            still_loaded = set(self.banks.loaded())  # drop decoders of versions the cache has let go
            self._by_bank = {r: d for r, d in self._by_bank.items() if r in still_loaded} | {ref: held}
        return held[1]

    def score(
        self,
        questions: np.ndarray,
        outputs: np.ndarray,
        answers: list[Answer],
        references: Sequence[np.ndarray | None] | None = None,
    ) -> list[dict[str, float]]:
        """Per-item metrics (pipeline.metrics.item_metrics): decode_fidelity always; for items with a reference vector
        also cube_cos and identity_cos, and e2e_cos and echo when a decoder answered."""
        decoded = np.stack([a.vector for a in answers]) if answers else np.zeros_like(outputs)
        return item_metrics(questions, outputs, decoded, [a.path != "none" for a in answers], references)
