"""Trains the bundle's reranker (pipeline.rerank) on the training split and measures it on validation.

Training lists: each training question's fused top `depth` from a bank of the unique training answers, searched
with the bundle's own answer vectors and fusion, labelled by the question's gold sentences. Validation lists:
the validation questions in the bank of train + validation answers (what `cubeqa eval --bank` searches); they
give the figures recorded beside the model and are never trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bank_eval import eval_records, unique_bank
from pipeline.checkpoint import load_bundle
from pipeline.data import EmbeddedPairs, answer_key, embed_cached, file_hash
from pipeline.encoder import TeacherEncoder
from pipeline.evaluation import paired_bootstrap
from pipeline.knowledge.fusion import Fusion, MemoryBank
from pipeline.rerank.features import hit_features
from pipeline.rerank.ranker import RankerConfig, Reranker, train_ranker

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class RankLists:
    """Each question's fused candidates with their features and gold flags."""

    questions: list[str]
    texts: list[str]  # the bank's sentences (rows index them)
    rows: np.ndarray  # (N, k) bank rows, -1 past a short list
    gold: np.ndarray  # (N, k) bool: the candidate is one of the question's gold sentences
    features: np.ndarray  # (N, depth, F), depth <= k
    present: np.ndarray  # (N, depth)


def rank_lists(bank: MemoryBank, questions: Sequence[str], teacher: np.ndarray, outputs: np.ndarray,
               golds: Sequence[Sequence[str]], fusion: Fusion, depth: int, k: int | None = None) -> RankLists:
    """Fused top max(k, depth) of every question, gold flags, and the reranker's features of the first `depth`."""
    hits = bank.hybrid(outputs, list(questions), max(k or depth, depth), fusion)
    keys = [answer_key(t) for t in bank.texts]
    wanted = [{answer_key(g) for g in gold} for gold in golds]
    gold = np.array([[r >= 0 and keys[r] in w for r in row] for row, w in zip(hits.rows, wanted)], dtype=bool)
    features, present = hit_features(hits, questions, teacher, bank.texts, bank.vectors, bank.lexical, depth)
    return RankLists(list(questions), bank.texts, hits.rows, gold, features, present)


def split_vectors(bundle_dir: Path, encoder: TeacherEncoder, split: EmbeddedPairs, cache_dir: Path | None) -> np.ndarray:
    """The bundle's answer vectors (tower, then cube) of a split's questions, cached per bundle."""
    from pipeline.stages import answer_vectors, model_version

    bundle = load_bundle(bundle_dir, encoder.identity)
    questions = [p.question for p in split.pairs]
    key = "answers-" + model_version(bundle_dir, bundle.manifest).replace(" ", "").replace("/", "_")
    return embed_cached(questions, lambda q: answer_vectors(bundle, encoder, q, None), cache_dir, key)


def train_reranker(
    bundle_dir: Path, train_path: Path, val_path: Path, train: EmbeddedPairs, val: EmbeddedPairs, *,
    encoder: TeacherEncoder, cache_dir: Path | None, config: RankerConfig | None = None, resamples: int = 2000,
    on_progress: Progress | None = None,
) -> Reranker:
    """Trains the reranker with a fixed schedule and records its validation P@1 beside the fused ranking's."""
    from pipeline.stages import bundle_fusion

    config = config or RankerConfig()
    fusion = bundle_fusion(load_bundle(bundle_dir, encoder.identity).manifest)
    say = on_progress or (lambda what, done, total: None)
    say("reranker: answer vectors", 0, 2)
    train_out = split_vectors(bundle_dir, encoder, train, cache_dir)
    val_out = split_vectors(bundle_dir, encoder, val, cache_dir)
    say("reranker: answer vectors", 2, 2)
    train_bank = MemoryBank(*unique_bank([p.answer for p in train.pairs], train.a))
    _, train_golds = eval_records(train_path)
    lists = rank_lists(train_bank, [p.question for p in train.pairs], train.q, train_out, train_golds, fusion, config.depth)
    reranker = train_ranker(lists.features, lists.present, lists.gold[:, : config.depth], config,
                            on_progress=lambda done, total: say("reranker: trees", done, total))
    val_bank = MemoryBank(*unique_bank([p.answer for p in train.pairs] + [p.answer for p in val.pairs],
                                       np.concatenate([train.a, val.a])))
    _, val_golds = eval_records(val_path)
    checked = rank_lists(val_bank, [p.question for p in val.pairs], val.q, val_out, val_golds, fusion, config.depth)
    fused = checked.gold[:, 0].astype(np.float64)
    reranked = checked.gold[np.arange(len(fused)), np.argmax(reranker.score(checked.features), axis=1)].astype(np.float64)
    interval = paired_bootstrap(reranked - fused, resamples)
    reranker.record |= {
        "data": {"train": {"file": Path(train_path).name, "sha256": file_hash(train_path), "questions": len(train.pairs),
                           "bank_size": len(train_bank.texts)},
                 "validation": {"file": Path(val_path).name, "sha256": file_hash(val_path), "questions": len(val.pairs),
                                "bank_size": len(val_bank.texts)}},
        "fusion": fusion.to_dict(),
        "validation": {"fused_p1": float(fused.mean()), "reranked_p1": float(reranked.mean()),
                       "reranked_minus_fused": interval.to_dict()},
    }
    return reranker
