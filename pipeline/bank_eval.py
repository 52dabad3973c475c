"""Evaluation against a bank that holds the answers: is the returned sentence a gold one, and how
sure were we.

P@1: the top sentence is one of the question's gold sentences (`answer` plus `alt_answers`,
compared by normalised text). MRR@10: reciprocal rank of the first gold sentence in the top 10,
0 beyond. R@20: a gold sentence is among the first 20. Precision at coverage: among the questions
whose confidence clears a threshold, the share answered right; coverage is the share that clears it.
The model's answer vectors are ranked three ways: dense (cosine alone), lexical (BM25 alone) and
fused (pipeline.knowledge.fusion), the teacher's question vectors (identity) by cosine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from pipeline.calibration import (
    Calibrator,
    default_min_confidence,
    expected_calibration_error,
    load_calibration,
    resolve_min_confidence,
)
from pipeline.data import answer_key, embed_cached, numbered_lines
from pipeline.decoders.phrase_bank import BankSource
from pipeline.errors import InputError
from pipeline.evaluation import paired_bootstrap
from pipeline.knowledge.fusion import Fusion, MemoryBank, Ranking
from pipeline.rerank.ranker import Reranker

if TYPE_CHECKING:
    from pipeline.encoder import TeacherEncoder

COVERAGES = tuple(round(0.1 * i, 1) for i in range(1, 11))
DEPTH = 20  # results scored per question: R@20
SearchBank = BankSource  # any bank with dense and fused search: a stored version's LoadedBank or a MemoryBank


def flat_bank(texts: Sequence[str], vectors: np.ndarray) -> MemoryBank:
    """Exact inner-product search over unit vectors, with a lexical index of the texts."""
    return MemoryBank(texts, vectors)


def unique_bank(texts: Sequence[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """First occurrence of each sentence (by normalised text), with its vector."""
    rows: dict[str, int] = {}
    for row, text in enumerate(texts):
        rows.setdefault(answer_key(text), row)
    keep = list(rows.values())
    return [texts[r] for r in keep], np.asarray(vectors)[keep]


def gold_ranks(rows: np.ndarray, bank_texts: Sequence[str], golds: Sequence[Sequence[str]]) -> np.ndarray:
    """1-based rank of the first gold sentence among each row of search results; 0 when none is there."""
    keys = [answer_key(t) for t in bank_texts]
    ranks = np.zeros(len(rows), np.int64)
    for i, (row, gold) in enumerate(zip(rows, golds)):
        wanted = {answer_key(g) for g in gold}
        for rank, r in enumerate(row, start=1):
            if r >= 0 and keys[r] in wanted:
                ranks[i] = rank
                break
    return ranks


@dataclass(frozen=True)
class MapResult:
    """Per-question figures of one question -> answer-vector map searched in the bank."""

    scores: np.ndarray  # (N, k) top search scores
    ranks: np.ndarray  # (N,) 1-based gold rank within the top k, 0 when absent
    confidence: np.ndarray | None  # (N,)
    parts: dict[str, np.ndarray | None] | None = None  # the parts of the scores (pipeline.knowledge.fusion.Hits.parts)

    @property
    def hit(self) -> np.ndarray:
        return (self.ranks == 1).astype(np.float64)

    @property
    def reciprocal(self) -> np.ndarray:
        """Reciprocal rank within the top 10 (MRR@10), 0 beyond."""
        return np.where((self.ranks > 0) & (self.ranks <= 10), 1.0 / np.maximum(self.ranks, 1), 0.0)

    @property
    def recall20(self) -> np.ndarray:
        return ((self.ranks > 0) & (self.ranks <= 20)).astype(np.float64)


@dataclass(frozen=True)
class Rerank:
    """The rerank stage as evaluation runs it: the reranker, the questions' teacher vectors (N, D) it reads, and the
    calibrator fit on its scores with that calibrator's default threshold."""

    reranker: Reranker
    teacher: np.ndarray
    calibrator: Calibrator | None = None
    min_confidence: float | None = None

    def rows(self, keep: Sequence[int]) -> Rerank:
        return Rerank(self.reranker, self.teacher[list(keep)], self.calibrator, self.min_confidence)


def search_map(
    bank: SearchBank, outputs: np.ndarray, golds: Sequence[Sequence[str]], calibrator: Calibrator | None,
    k: int = DEPTH, texts: Sequence[str] | None = None, fusion: Fusion | None = None, ranking: Ranking = "fused",
    rerank: Rerank | None = None,
) -> MapResult:
    """Searches the bank with one map's outputs (and the question texts, for a lexical or fused ranking), reranks the
    fused top `rerank.reranker.depth` when `rerank` is given, and scores the results against the golds."""
    if rerank is not None and texts is not None:
        fused = bank.hybrid(outputs, texts, max(k, rerank.reranker.depth), fusion or Fusion())
        hits = rerank.reranker.rerank(fused, texts, rerank.teacher, bank)
    else:
        hits = bank.hybrid(outputs, texts, k, fusion or Fusion(), ranking)
    confidence = None if calibrator is None else calibrator.predict(hits.scores, hits.parts())
    return MapResult(hits.scores, gold_ranks(hits.rows, bank.texts, golds), confidence, hits.parts())


def precision_at(confidence: np.ndarray, hit: np.ndarray, threshold: float) -> tuple[float, float]:
    """(precision of the answered, coverage) when answers below `threshold` are refused."""
    answered = confidence >= threshold
    return (float(hit[answered].mean()) if answered.any() else float("nan")), float(answered.mean())


def bank_evaluation(
    bank: SearchBank,
    questions: np.ndarray,
    cube_outputs: np.ndarray,
    golds: Sequence[Sequence[str]],
    calibrator: Calibrator | None = None,
    min_confidence: float | None = None,
    *,
    texts: Sequence[str],
    fusion: Fusion | None = None,
    rerank: Rerank | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, object]:
    """P@1, MRR@10, R@20 of the model's vectors ranked dense, lexical, fused and (with `rerank`) reranked, and of
    identity (dense), with paired bootstrap 95% intervals of each against the one below it; precision and coverage at
    the threshold for the fused ranking (its calibrator) and the reranked one (the rerank stage's calibrator)."""
    fusion = fusion or Fusion()
    results = {
        "dense": search_map(bank, cube_outputs, golds, None, texts=texts, fusion=fusion, ranking="dense"),
        "lexical": search_map(bank, cube_outputs, golds, None, texts=texts, fusion=fusion, ranking="lexical"),
        "fused": search_map(bank, cube_outputs, golds, calibrator, texts=texts, fusion=fusion),
        "identity": search_map(bank, questions, golds, None, texts=None, fusion=fusion, ranking="dense"),
    }
    thresholds = {"fused": min_confidence}
    if rerank is not None:
        results["reranked"] = search_map(bank, cube_outputs, golds, rerank.calibrator, texts=texts, fusion=fusion,
                                         rerank=rerank)
        thresholds["reranked"] = rerank.min_confidence
    report: dict[str, object] = {"questions": len(questions), "bank_size": len(bank.texts),
                                 "min_confidence": min_confidence, "fusion": fusion.to_dict()}
    for name, r in results.items():
        figures = {"P@1": float(r.hit.mean()), "MRR@10": float(r.reciprocal.mean()), "R@20": float(r.recall20.mean())}
        threshold = thresholds.get(name)
        if r.confidence is not None and threshold is not None:
            figures["precision"], figures["coverage"] = precision_at(r.confidence, r.hit, threshold)
            figures["min_confidence"] = threshold
        report[name] = figures
    differences = {}
    pairs = [("lexical", "dense"), ("fused", "dense"), ("dense", "identity")]
    pairs += [("reranked", "fused"), ("reranked", "dense")] if rerank is not None else []
    for a, b in pairs:
        for metric, values in (("P@1", "hit"), ("MRR@10", "reciprocal"), ("R@20", "recall20")):
            change = getattr(results[a], values) - getattr(results[b], values)
            differences[f"{a} − {b}: {metric}"] = paired_bootstrap(change, resamples, seed)
    report["differences"] = {k: v.to_dict() for k, v in differences.items()}
    return report


def precision_coverage(confidence: np.ndarray, correct: np.ndarray, coverages: Sequence[float] = COVERAGES) -> list[dict[str, float]]:
    """For each coverage c: answer the c·N most confident questions; their precision and the confidence threshold."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    rows = []
    for c in coverages:
        n = max(1, int(round(c * len(order))))
        kept = order[:n]
        rows.append({"coverage": float(c), "answered": n, "precision": float(np.mean(correct[kept])),
                     "threshold": float(confidence[kept[-1]]), "mean_confidence": float(np.mean(confidence[kept]))})
    return rows


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its range, count, mean confidence and accuracy (the reliability diagram)."""
    index = np.clip(np.floor(confidence * bins).astype(int), 0, bins - 1)
    table = []
    for b in range(bins):
        members = index == b
        if members.any():
            table.append({"low": b / bins, "high": (b + 1) / bins, "count": int(members.sum()),
                          "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean())})
    return table


def calibration_report(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict[str, object]:
    """The precision–coverage table (10%..100%), ECE over 15 equal-width and equal-mass bins, reliability bins."""
    correct = np.asarray(correct, np.float64)
    return {
        "questions": len(correct),
        "accuracy": float(correct.mean()),
        "ece_equal_width": expected_calibration_error(confidence, correct, bins),
        "ece_equal_mass": expected_calibration_error(confidence, correct, bins, equal_mass=True),
        "bins": bins,
        "precision_coverage": precision_coverage(confidence, correct),
        "reliability": reliability(confidence, correct, bins),
    }


def gold_answers(path: Path) -> list[list[str]]:
    """Each record's `answer` and its optional `alt_answers`, in file order; [] for `"answer": null`, a question
    the bank does not answer."""
    return eval_records(path)[1]


def eval_records(path: Path) -> tuple[list[str], list[list[str]]]:
    """(questions, gold sentences) of an evaluation file, read once, in file order; see gold_answers."""
    questions, golds = [], []
    for number, line in numbered_lines(path):
        try:
            record = json.loads(line)
            question = record["question"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number}: not a JSON object with a question ({exc})") from exc
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{path}:{number}: empty question")
        questions.append(question)
        alts = [a for a in record.get("alt_answers") or [] if isinstance(a, str) and a.strip()]
        golds.append([] if record.get("answer") is None else [record["answer"], *alts])
    if not questions:
        raise InputError(f"{path}: no questions")
    return questions, golds


def unanswerable_report(bank: SearchBank, outputs: np.ndarray, texts: Sequence[str], calibrator: Calibrator | None,
                        fusion: Fusion, threshold: float | None, answerable: dict[str, float],
                        rerank: Rerank | None = None) -> dict[str, float]:
    """Questions the bank does not answer: the share refused at the threshold, and the precision over everything
    answered when an answered unanswerable question counts as wrong (what a user of the whole set sees)."""
    result = search_map(bank, outputs, [[] for _ in texts], calibrator, texts=texts, fusion=fusion, rerank=rerank)
    if result.confidence is None or threshold is None:
        return {"questions": len(texts)}
    wrongly_answered = int((result.confidence >= threshold).sum())
    right = answerable["precision"] * answerable["coverage"] * answerable["questions"]
    answered = answerable["coverage"] * answerable["questions"] + wrongly_answered
    return {"questions": len(texts), "refused": 1.0 - wrongly_answered / len(texts),
            "precision_all_answered": float(right / answered) if answered else float("nan")}


def bundle_rerank(bundle_dir: Path, teacher: np.ndarray, min_confidence: float | None = None) -> Rerank | None:
    """The bundle's rerank stage for evaluation (None: it has no reranker), reading these teacher vectors; its
    threshold `min_confidence`, else its calibration's default."""
    from pipeline.calibration import RERANK_CALIBRATION
    from pipeline.rerank.ranker import has_reranker, load_reranker

    if not has_reranker(bundle_dir):
        return None
    threshold = resolve_min_confidence(min_confidence, None, default_min_confidence(bundle_dir, RERANK_CALIBRATION))
    return Rerank(load_reranker(bundle_dir), teacher, load_calibration(bundle_dir, RERANK_CALIBRATION), threshold)


def evaluate_on_bank(
    bundle_dir: Path, bank: SearchBank, data: Path, *, encoder: TeacherEncoder, cache_dir: Path | None, resamples: int = 2000,
    min_confidence: float | None = None, on_embed: Callable[[str, int, int], None] | None = None,
) -> dict[str, object]:
    """`cubeqa eval --bank`: the bundle's model (dense, lexical, fused, reranked when it has a reranker) and identity
    answering `data`'s questions from `bank`, scored against its gold sentences (P@1, MRR@10, R@20, precision and
    coverage at the confidence threshold), paired intervals. Unanswerable questions are scored as served: reranked
    when the bundle reranks."""
    from pipeline.checkpoint import load_bundle
    from pipeline.stages import answer_vectors, bundle_fusion

    bundle = load_bundle(bundle_dir, encoder.identity)
    questions, golds = eval_records(data)
    threshold = resolve_min_confidence(min_confidence, None, default_min_confidence(bundle_dir))
    teacher = embed_cached(questions, lambda t: encoder.encode(t).vectors, cache_dir, f"questions-{encoder.identity.weights_hash}")
    outputs = answer_vectors(bundle, encoder, questions, teacher)
    fusion, calibrator = bundle_fusion(bundle.manifest), load_calibration(bundle_dir)
    rerank = bundle_rerank(bundle_dir, teacher, min_confidence)
    keep = [i for i, gold in enumerate(golds) if gold]
    if not keep:
        raise InputError(f"{data}: no question with an answer (every 'answer' is null)")
    report = bank_evaluation(bank, teacher[keep], outputs[keep], [golds[i] for i in keep], calibrator, threshold,
                             texts=[questions[i] for i in keep], fusion=fusion, resamples=resamples,
                             rerank=None if rerank is None else rerank.rows(keep))
    served = "reranked" if rerank is not None else "fused"
    report["served"] = served
    none = [i for i, gold in enumerate(golds) if not gold]
    if none:
        row = cast(dict[str, float], report[served])
        served_threshold = row.get("min_confidence")
        report["unanswerable"] = unanswerable_report(
            bank, outputs[none], [questions[i] for i in none], rerank.calibrator if rerank else calibrator, fusion,
            served_threshold, row | {"questions": float(len(keep))}, None if rerank is None else rerank.rows(none))
    return {"data": str(data), "bundle": str(bundle_dir), **report}
