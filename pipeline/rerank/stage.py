"""Stage 4: the rerank stage. It reorders the fused candidates the decode stage retrieved and gives the final
answers, with the confidence of a calibrator fit on the reranked scores (the bundle's rerank-calibration.json)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.calibration import RERANK_CALIBRATION, default_min_confidence, load_calibration, resolve_min_confidence
from pipeline.decoders.base import Answer
from pipeline.knowledge.bank_cache import BankRef
from pipeline.knowledge.fusion import Hits
from pipeline.rerank.ranker import Reranker, load_reranker

if TYPE_CHECKING:
    from pipeline.stages import DecodeStage


class RerankStage:
    """The bundle's reranker over the banks `decode_stage` serves (it reads their sentences and writes the answers)."""

    def __init__(self, bundle_dir: Path, decode_stage: DecodeStage, reranker: Reranker | None = None) -> None:
        self.reranker = reranker or load_reranker(bundle_dir)
        self.decode_stage = decode_stage
        self.calibrator = load_calibration(bundle_dir, RERANK_CALIBRATION)
        self.min_confidence = resolve_min_confidence(
            None, decode_stage.set_min_confidence, default_min_confidence(bundle_dir, RERANK_CALIBRATION))
        self.model_version = decode_stage.model_version

    @property
    def depth(self) -> int:
        """Candidates per question the decode stage retrieves for this stage."""
        return self.reranker.depth

    def rerank(self, hits: Hits, texts: Sequence[str], teacher: np.ndarray | None, bank: BankRef | None) -> Hits:
        """`hits` of `bank` (None: the bundle's own) reordered by the reranker's score; `teacher`: the questions'
        teacher vectors."""
        return self.reranker.rerank(hits, texts, teacher, self.decode_stage.source(bank))

    def answer(
        self, hits: Hits, texts: Sequence[str], teacher: np.ndarray | None, bank: BankRef | None, min_confidence: float | None,
    ) -> list[Answer]:
        """Final answers: the reranked top candidate with the reranked calibrator's confidence, refused below the
        threshold (`min_confidence`, else the worker's setting, else the rerank calibration's default)."""
        threshold = resolve_min_confidence(min_confidence, self.min_confidence, None)
        return self.decode_stage.finish(self.rerank(hits, texts, teacher, bank), bank, threshold, self.calibrator)
