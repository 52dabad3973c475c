"""The three model stages as separately loadable units.

A distributed worker loads only its own stage (the cube worker never loads the
encoder); `ProductionPipeline` composes all three in one process. Both call the
same methods, so answers are identical for the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.calibration import Calibrator, default_min_confidence, load_calibration, needed_k, resolve_min_confidence
from pipeline.checkpoint import Bundle, Manifest, check_encoder, load_bundle
from pipeline.confidence import with_confidence
from pipeline.cube import apply_map
from pipeline.decoders.base import Answer, Decoder, DecoderKind
from pipeline.decoders.phrase_bank import BankSource, PhraseBankConfig, PhraseBankDecoder
from pipeline.decoders.registry import DecoderParts, make_decoder
from pipeline.encode_stage import EncodeStage  # noqa: F401 - re-exported: the three stages live side by side
from pipeline.encode_stage import model_version as version_of
from pipeline.encoder import EncoderConfig, TeacherEncoder
from pipeline.knowledge.bank_cache import BankCache, BankRef
from pipeline.knowledge.builtin import DEFAULT_BANK, own_bank_dir
from pipeline.knowledge.fusion import Fusion, Hits
from pipeline.knowledge.store import BankStore
from pipeline.metrics import item_metrics
from pipeline.rerank.ranker import reranker_depth
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


@dataclass(frozen=True)
class _Held:
    """A loaded bank version with its phrase-bank decoder and the configured decoder over it."""

    loaded: object
    bank: PhraseBankDecoder
    decoder: Decoder


def bundle_fusion(manifest: Manifest) -> Fusion:
    """The fusion the bundle was calibrated with (`retrieval.fusion` in its manifest), else the default."""
    recorded = manifest.extra.get("retrieval", {}).get("fusion")
    return Fusion.from_dict(recorded) if isinstance(recorded, dict) else Fusion()


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
        """Jobs that name no bank answer from the bundle's own bank, the built-in bank `default` (`own_bank_dir`),
        loaded through a BankCache like any named bank (`banks`, when its `default` is that directory); the generative
        and hybrid decoders also load the teacher, to re-embed what they generate. Bank search fuses dense and lexical
        scores as the bundle records (`retrieval.fusion`). The bundle's calibrator (if any) gives bank answers a
        confidence; below `min_confidence` (default: the bundle's) they become "no confident answer"."""
        kind = DecoderKind(decoder)
        bundle = bundle or load_bundle(bundle_dir)
        self.kind = kind
        self.top_k = top_k
        self.model_version = model_version(bundle_dir, bundle.manifest)
        self.encoder = encoder
        if kind.needs_teacher:
            self.encoder = encoder or TeacherEncoder(encoder_config)
            check_encoder(bundle.manifest, self.encoder.identity, Path(bundle_dir))
        self.fusion = bundle_fusion(bundle.manifest)
        self.rerank_depth = reranker_depth(Path(bundle_dir)) if kind is DecoderKind.bank else None  # None: no handing on
        self.calibrator: Calibrator | None = load_calibration(bundle_dir)
        self.set_min_confidence = min_confidence  # the worker's setting, which outranks every calibrator's default
        self.min_confidence = resolve_min_confidence(None, min_confidence, default_min_confidence(bundle_dir))
        # the calibrator may read more of the ranking than the answer shows (gap10: the top 10)
        self.search_k = max(top_k, needed_k(self.calibrator.feature_names)) if self.calibrator is not None else top_k
        self.bank_config = bank_config
        own_dir = own_bank_dir(Path(bundle_dir), cache_dir)
        if banks is None or Path(banks.store.builtin.get(DEFAULT_BANK, "")).resolve() != own_dir.resolve():
            own_store = BankStore(own_dir / "no-own-banks", builtin={DEFAULT_BANK: own_dir})
            banks_of_own = BankCache(own_store, 1, bundle.manifest.encoder)
        else:
            banks_of_own = banks
        self.own = (BankRef(DEFAULT_BANK, banks_of_own.store.resolve(DEFAULT_BANK)), banks_of_own)
        self.banks = banks
        self._by_bank: dict[tuple[int, BankRef], _Held] = {}
        options = dict(generative_options or {})
        self.parts = DecoderParts(Path(bundle_dir), None, self.encoder, options, hybrid_threshold)  # type: ignore[arg-type]
        self.decoder: Decoder = self.decoder_for(*self.own)
        if kind.needs_teacher:  # one generative model for the decoders of every bank
            built: Any = self.decoder  # GenerativeDecoder, or HybridDecoder holding one
            path = built if kind is DecoderKind.generative else built.generative
            self.parts = replace(self.parts, generative=path.generative)

    @property
    def bank(self) -> PhraseBankDecoder:
        """The phrase-bank decoder over the bundle's own bank."""
        return self.parts_for(*self.own).bank

    def decode(
        self, vectors: np.ndarray, bank: BankRef | None = None, min_confidence: float | None = None,
        texts: Sequence[str] | None = None,
    ) -> list[Answer]:
        """Answers for (N, D) unit answer vectors and their questions (None: dense search only) from `bank` (None: the
        bundle's own), with calibrated confidence; `min_confidence` overrides the stage's threshold for this call."""
        decoder = self.held(bank).decoder
        threshold = resolve_min_confidence(min_confidence, self.min_confidence, None)
        return self.shown(with_confidence(decoder.decode(vectors, texts), self.calibrator, threshold))

    def retrieve(self, vectors: np.ndarray, bank: BankRef | None, texts: Sequence[str] | None, k: int) -> Hits:
        """The fused top k of `bank` (None: the bundle's own) for (N, D) answer vectors and their questions: the
        candidates the rerank stage reorders."""
        return self.held(bank).bank.hits(vectors, texts, k)

    def finish(
        self, hits: Hits, bank: BankRef | None, min_confidence: float | None, calibrator: Calibrator | None,
    ) -> list[Answer]:
        """Bank answers from (reranked) search results, with `calibrator`'s confidence and refusal below
        `min_confidence`; the candidates shown cut to top_k."""
        return self.shown(with_confidence(self.held(bank).bank.answers(hits), calibrator, min_confidence))

    def source(self, bank: BankRef | None) -> BankSource:
        """The loaded bank version `bank` names (None: the bundle's own): texts, vectors, lexical index."""
        return self.held(bank).bank.source

    def held(self, bank: BankRef | None) -> _Held:
        return self.parts_for(*self.own) if bank is None else self.parts_for(bank)

    def shown(self, answers: list[Answer]) -> list[Answer]:
        return [a if a.path == "generative" else replace(a, candidates=a.candidates[: self.top_k]) for a in answers]

    def decoder_for(self, ref: BankRef, cache: BankCache | None = None) -> Decoder:
        """The configured decoder over one bank version of `cache` (default: the job banks; rebuilt when the cache has
        reloaded that version)."""
        return self.parts_for(ref, cache).decoder

    def parts_for(self, ref: BankRef, cache: BankCache | None = None) -> _Held:
        cache = cache or self.banks
        if cache is None:
            raise ValueError(f"this decode stage serves no knowledge banks, but a job names bank {ref}")
        loaded = cache.get(ref)
        key = (id(cache), ref)
        held = self._by_bank.get(key)
        if held is None or held.loaded is not loaded:
            bank = PhraseBankDecoder.from_source(loaded, self.bank_config, top_k=self.search_k, fusion=self.fusion)
            held = _Held(loaded, bank, make_decoder(self.kind, replace(self.parts, bank=bank)))
            still_loaded = {(id(c), r) for c in {id(c): c for c in (cache, self.own[1])}.values() for r in c.loaded()}
            kept = {k: d for k, d in self._by_bank.items() if k in still_loaded}  # drop the versions let go
            self._by_bank = kept | {key: held}
        return held

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
