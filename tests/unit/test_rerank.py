"""The rerank stage's model: its features, a trained LambdaMART ranker, its bundle files, the hand-off through the
stage message, and the calibrator features it adds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.calibration import features as calibration_features
from pipeline.confidence import evidence
from pipeline.decoders.phrase_bank import PhraseBankConfig, PhraseBankDecoder
from pipeline.errors import BundleError
from pipeline.knowledge.fusion import Fusion, Hits, MemoryBank
from pipeline.rerank.features import NAMES, QUESTION_TYPES, hit_features, question_type
from pipeline.rerank.handoff import arrays_to_hits, hits_to_arrays
from pipeline.rerank.ranker import (
    MANIFEST_FILE,
    MODEL_FILE,
    RankerConfig,
    has_reranker,
    load_reranker,
    reorder,
    reranker_depth,
    train_ranker,
)
from tasks.wire import MicroBatch, WireError

TEXTS = [
    "The pump runs on twelve volts.",
    "Pumps need a fuse rated at 5 amperes.",
    "The valve is red.",
    "Close the valve before service.",
    "In 1998 the company moved to Lyon.",
    "Maria Curie founded the lab.",
]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def bank() -> MemoryBank:
    return MemoryBank(TEXTS, unit(np.random.default_rng(0).normal(size=(len(TEXTS), 16)).astype(np.float32)))


@pytest.mark.parametrize(("question", "kind"), [
    ("Who founded the lab?", "who"), ("When did the company move?", "when"),
    ("How many volts does the pump use?", "how many"), ("In what year did it move?", "what year"),
    ("Pump voltage?", "other"), ("How do I close the valve?", "how"),
])
def test_question_type_is_the_first_wh_phrase(question: str, kind: str) -> None:
    assert QUESTION_TYPES[question_type(question)] == kind


def test_features_read_the_question_and_each_candidate() -> None:
    b = bank()
    questions = ["What fuse do pumps need?", "Who founded the lab?"]
    queries = unit(np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32))
    hits = b.hybrid(queries, questions, 4, Fusion())
    teacher = b.vectors[[1, 5]]  # each question's teacher vector is its answer's: identity 1.0 there
    features, present = hit_features(hits, questions, teacher, b.texts, b.vectors, b.lexical, 6)
    assert features.shape == (2, 4, len(NAMES)) and present.all()  # k is cut to the list's length
    col = {name: features[..., i] for i, name in enumerate(NAMES)}
    np.testing.assert_allclose(col["fused"], hits.scores, rtol=1e-6)
    np.testing.assert_array_equal(col["rank"][0], np.arange(4))
    where = {int(r): j for j, r in enumerate(hits.rows[0])}
    assert col["idf_share"][0, where[1]] == col["idf_share"][0].max() > 0  # it holds pump, need and fuse
    assert col["identity"][0, where[1]] == pytest.approx(1.0, abs=1e-5)
    assert col["identity_gap"][0, where[1]] == pytest.approx(0.0, abs=1e-6)
    if 4 in where:  # the year sentence is a candidate of the "what fuse" question: its cues are read from its text
        assert col["has_year"][0, where[4]] == 1 and col["has_number"][0, where[4]] == 1
    assert set(col["question_type"][1]) == {QUESTION_TYPES.index("who")}
    without, _ = hit_features(hits, questions, None, b.texts, b.vectors, b.lexical, 4)
    assert np.isnan(without[..., NAMES.index("identity")]).all()  # missing, not zero: LightGBM routes it apart


def test_a_short_list_pads_with_nan_rows() -> None:
    hits = Hits(np.array([[0.9, -np.inf]]), np.array([[2, -1]]), np.array([[0.9, -np.inf]]), np.array([[1.0, 0.0]]),
                np.array([[0.5, 0.0]]))
    features, present = hit_features(hits, ["Is the valve red?"], None, TEXTS, bank().vectors, bank().lexical, 2)
    assert present.tolist() == [[True, False]] and np.isnan(features[0, 1]).all() and not np.isnan(features[0, 0, 0])


def lists(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic candidate lists whose gold is the candidate with the highest `idf_share` (not the highest fused score)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, k, len(NAMES))).astype(np.float32)
    features[..., NAMES.index("question_type")] = rng.integers(0, len(QUESTION_TYPES), size=(n, 1))
    share = features[..., NAMES.index("idf_share")]
    gold = (share == share.max(axis=1, keepdims=True)).astype(int)
    return features, np.ones((n, k), bool), gold


def test_the_ranker_learns_a_feature_the_fused_order_ignores(tmp_path: Path) -> None:
    features, present, gold = lists(400, 8, seed=0)
    ranker = train_ranker(features, present, gold, RankerConfig(depth=8, trees=60))
    test, _, test_gold = lists(200, 8, seed=1)
    picked = test_gold[np.arange(200), np.argmax(ranker.score(test), axis=1)]
    fused = test_gold[np.arange(200), np.argmax(test[..., NAMES.index("fused")], axis=1)]
    assert picked.mean() > 0.75 > 0.3 > fused.mean()  # chance is 1 in 8
    assert ranker.record["training"]["questions"] == 400


def test_saved_ranker_loads_with_the_same_scores_and_refuses_an_altered_file(tmp_path: Path) -> None:
    features, present, gold = lists(200, 6, seed=2)
    ranker = train_ranker(features, present, gold, RankerConfig(depth=6, trees=20))
    assert not has_reranker(tmp_path) and reranker_depth(tmp_path) is None
    manifest = ranker.save(tmp_path)
    assert manifest["features"] == list(NAMES) and reranker_depth(tmp_path) == 6
    assert b"pickle" not in (tmp_path / MODEL_FILE).read_bytes()[:200] and (tmp_path / MODEL_FILE).read_text().startswith("tree")
    np.testing.assert_array_equal(load_reranker(tmp_path).score(features), ranker.score(features))
    (tmp_path / MODEL_FILE).write_text((tmp_path / MODEL_FILE).read_text().replace("tree", "tree ", 1))
    with pytest.raises(BundleError, match="hashes to .* not to its manifest"):
        load_reranker(tmp_path)


def test_a_ranker_trained_on_other_features_is_refused(tmp_path: Path) -> None:
    features, present, gold = lists(100, 4, seed=3)
    train_ranker(features, present, gold, RankerConfig(depth=4, trees=5)).save(tmp_path)
    record = json.loads((tmp_path / MANIFEST_FILE).read_text())
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(record | {"features": record["features"][:-1]}))
    with pytest.raises(BundleError, match="trained on features"):
        load_reranker(tmp_path)


def test_reorder_sorts_every_part_by_the_rerank_score_and_answers_carry_it() -> None:
    b = bank()
    hits = b.hybrid(unit(np.ones((1, 16), np.float32)), ["Is the valve red?"], 4, Fusion())
    scores = np.array([[0.1, 3.0, -1.0, 2.0]])
    reordered = reorder(hits, scores)
    assert reordered.rows[0].tolist() == hits.rows[0][[1, 3, 0, 2]].tolist()
    assert reordered.dense[0].tolist() == hits.dense[0][[1, 3, 0, 2]].tolist()
    assert reordered.rerank is not None and reordered.rerank[0].tolist() == [3.0, 2.0, 0.1, -1.0]
    decoder = PhraseBankDecoder.from_source(b, PhraseBankConfig(min_score=-1.0), top_k=4)
    answer = decoder.answers(reordered)[0]
    assert answer.text == TEXTS[int(hits.rows[0][1])] and [c.rerank for c in answer.candidates] == [3.0, 2.0, 0.1, -1.0]
    shown = evidence(answer)
    assert shown is not None and shown["reranked"] is True and shown["rerank"] == 3.0
    assert [a["rerank"] for a in shown["alternatives"]] == [2.0, 0.1, -1.0]
    plain = evidence(decoder.answers(hits)[0])
    assert plain is not None and plain["reranked"] is False and "rerank" not in plain


def test_candidates_survive_the_stage_message_exactly() -> None:
    b = bank()
    hits = b.hybrid(unit(np.random.default_rng(4).normal(size=(3, 16)).astype(np.float32)),
                    ["Is the valve red?", "Who founded the lab?", "fuse"], 5, Fusion())
    rows, scores = hits_to_arrays(hits)
    message = MicroBatch(batch="b", jobs=["j1", "j2", "j3"], rerank=True)
    message.set_hits(rows, scores)
    back = MicroBatch.from_wire(message.to_wire())
    got = arrays_to_hits(*back.hits())
    for name in ("scores", "rows", "dense", "lexical", "overlap"):
        np.testing.assert_array_equal(getattr(got, name), getattr(hits, name))  # bit for bit: float64 on the wire
    dense_only = arrays_to_hits(*hits_to_arrays(Hits(hits.scores, hits.rows, hits.dense, None)))
    assert dense_only.lexical is None and dense_only.overlap is None


def test_a_message_without_candidates_is_refused() -> None:
    with pytest.raises(WireError, match="no candidates"):
        MicroBatch(batch="b", jobs=["j"], rerank=True).hits()
    message = MicroBatch(batch="b", jobs=["j1", "j2"], rerank=True)
    message.set_hits(np.zeros((1, 3), np.int64), np.zeros((1, 3, 4)))
    with pytest.raises(WireError, match="1 candidate lists for 2 jobs"):
        message.hits()


def test_calibration_reads_the_rerank_score_and_its_margin() -> None:
    scores = np.array([[1.2, 1.3, 0.4]])
    parts = {"rerank": np.array([[2.5, 1.0, -3.0]])}
    got = calibration_features(scores, ("rerank_top", "rerank_margin", "margin"), parts)
    np.testing.assert_allclose(got, [[2.5, 1.5, -0.1]])
