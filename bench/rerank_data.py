"""The rerank benchmarks' lists: fused candidates of the shipped bundle for the training questions (bank of the
training answers) and the validation questions (bank of train + validation answers), as `cubeqa train` builds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cubeqa.settings import default_cache_dir
from pipeline.bank_eval import eval_records, unique_bank
from pipeline.checkpoint import load_bundle
from pipeline.encoder import TeacherEncoder
from pipeline.knowledge.fusion import MemoryBank
from pipeline.stages import bundle_fusion
from pipeline.training.rerank_trainer import RankLists, rank_lists, split_vectors
from pipeline.workflows import load_embedded

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "cubeqa" / "bundles" / "default"
TRAIN, VAL = ROOT / "data" / "squad_sent_train.jsonl", ROOT / "data" / "squad_sent_val.jsonl"
RerankData = RankLists


def load_rerank_data(teacher: TeacherEncoder, depth: int, k: int = 30, bundle_dir: Path = BUNDLE) -> tuple[RankLists, RankLists]:
    """(training lists, validation lists): each question's fused top max(k, depth), features of the first `depth`."""
    cache = default_cache_dir()
    fusion = bundle_fusion(load_bundle(bundle_dir, teacher.identity).manifest)
    train, val = load_embedded(TRAIN, teacher, cache), load_embedded(VAL, teacher, cache)
    train_bank = MemoryBank(*unique_bank([p.answer for p in train.pairs], train.a))
    val_bank = MemoryBank(*unique_bank([p.answer for p in train.pairs] + [p.answer for p in val.pairs],
                                       np.concatenate([train.a, val.a])))
    lists = []
    for split, path, bank in ((train, TRAIN, train_bank), (val, VAL, val_bank)):
        outputs = split_vectors(bundle_dir, teacher, split, cache)
        _, golds = eval_records(path)
        lists.append(rank_lists(bank, [p.question for p in split.pairs], split.q, outputs, golds, fusion, depth, k))
    return lists[0], lists[1]
