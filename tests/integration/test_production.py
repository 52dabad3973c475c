"""ProductionPipeline on a freshly trained tiny bundle and the real encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline import (
    NO_CONFIDENT_ANSWER,
    CubeConfig,
    InputError,
    PhraseBankConfig,
    ProductionPipeline,
    TrainConfig,
    train_bundle,
)
from tests.conftest import read_jsonl

pytestmark = pytest.mark.slow

TINY = CubeConfig(size=(4, 4, 2), channels=4, hidden=8, steps=2)


@pytest.fixture(scope="module")
def tiny_bundle(encoder, small_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    outcome = train_bundle(
        small_data["train"],
        small_data["val"],
        out,
        encoder=encoder,
        cube_config=TINY,
        train_config=TrainConfig(epochs=3, batch_size=32, threads=1),
        cache_dir=tmp_path_factory.mktemp("cache"),
        resamples=100,
    )
    assert len(outcome.epochs) == 3
    return out


@pytest.fixture(scope="module")
def pipe(tiny_bundle, encoder) -> ProductionPipeline:
    return ProductionPipeline.from_bundle(tiny_bundle, cache_dir=None)


def test_answers_come_from_the_bank_with_scores_timings_and_metrics(pipe, small_data) -> None:
    rows = read_jsonl(small_data["val"])[:5]
    train_answers = {r["answer"] for r in read_jsonl(small_data["train"])}
    results = pipe.process_batch([r["question"] for r in rows], [r["answer"] for r in rows])
    assert len(results) == 5
    for row, result in zip(rows, results):
        assert result.question == row["question"]
        assert result.answer in train_answers | {NO_CONFIDENT_ANSWER}
        assert result.path in {"bank", "none"}
        assert result.candidates[0][1] == pytest.approx(result.score)
        assert set(result.timings_ms) == {"encode", "cube", "decode"} and all(t >= 0 for t in result.timings_ms.values())
        if result.path == "bank":
            assert set(result.metrics) == {"decode_fidelity", "cube_cos", "identity_cos", "e2e_cos", "echo"}
            assert -1 <= result.metrics["e2e_cos"] <= 1
        else:
            assert set(result.metrics) == {"decode_fidelity", "cube_cos", "identity_cos"}
    assert pipe.process_text(rows[0]["question"]) == results[0].answer


def test_a_bank_sentence_asked_as_a_question_finds_itself(pipe, small_data) -> None:
    """The untrained-ish tiny cube stays near identity, so a bank sentence maps back to itself."""
    sentence = read_jsonl(small_data["train"])[0]["answer"]
    result = pipe.process_batch([sentence])[0]
    assert result.answer == sentence and result.path == "bank"


def test_threshold_turns_low_scores_into_no_confident_answer(tiny_bundle, small_data) -> None:
    strict = ProductionPipeline.from_bundle(tiny_bundle, bank_config=PhraseBankConfig(min_score=0.999))
    result = strict.process_batch([read_jsonl(small_data["val"])[0]["question"]])[0]
    assert result.answer == NO_CONFIDENT_ANSWER and result.path == "none" and result.score < 0.999


@pytest.mark.parametrize("texts", [[""], ["ok", "  "]])
def test_bad_input_raises_a_typed_error(pipe, texts) -> None:
    with pytest.raises(InputError):
        pipe.process_batch(texts)


def test_reference_count_must_match(pipe) -> None:
    with pytest.raises(InputError, match="references"):
        pipe.process_batch(["one?", "two?"], ["only one"])


def test_manifest_records_data_hashes_and_validation_metrics(tiny_bundle) -> None:
    from pipeline import read_manifest

    manifest = read_manifest(tiny_bundle)
    metrics = manifest.extra["metrics"]
    assert metrics["split"] == "validation" and metrics["size"] == 60
    assert {"cube_cos", "identity_cos", "mean_shift_cos"} <= set(metrics["cos"])
    assert manifest.extra["data"]["train"]["pairs"] == 200
    assert len(manifest.extra["data"]["validation"]["sha256_16"]) == 16
    assert manifest.extra["train_config"]["epochs"] == 3


def test_training_twice_with_one_seed_gives_the_same_bundle(tiny_bundle, encoder, small_data, tmp_path) -> None:
    from pipeline import read_manifest

    torch.manual_seed(12345)  # global RNG state must not leak into the bundle
    again = train_bundle(
        small_data["train"],
        small_data["val"],
        tmp_path / "again",
        encoder=encoder,
        cube_config=TINY,
        train_config=TrainConfig(epochs=3, batch_size=32, threads=1),
        cache_dir=None,
        resamples=100,
    )
    assert read_manifest(again.bundle_dir).extra["bundle_id"] == read_manifest(tiny_bundle).extra["bundle_id"]


def test_the_rerank_stage_reorders_the_fused_candidates_in_process(tiny_bundle, encoder, small_data, tmp_path) -> None:
    """A reranker trained for the bundle (cubeqa train's last step) answers the questions that ask for it: the
    candidates ordered by its score, the evidence saying so; without a reranker, or by default before its confidence
    is fit, the fused order."""
    import shutil

    from pipeline.rerank.ranker import RankerConfig, has_reranker
    from pipeline.training.rerank_trainer import train_reranker
    from pipeline.workflows import load_embedded

    bundle = tmp_path / "with-reranker"
    shutil.copytree(tiny_bundle, bundle)
    train, val = (load_embedded(small_data[s], encoder, tmp_path / "cache") for s in ("train", "val"))
    reranker = train_reranker(bundle, small_data["train"], small_data["val"], train, val, encoder=encoder,
                              cache_dir=tmp_path / "cache", config=RankerConfig(depth=10, trees=30), resamples=100)
    record = reranker.save(bundle)
    assert has_reranker(bundle) and record["validation"]["fused_p1"] >= 0 and record["training"]["questions"] > 100

    questions = [row["question"] for row in read_jsonl(small_data["val"])[:12]]
    pipe = ProductionPipeline.from_bundle(bundle, encoder_config=encoder.config, cache_dir=tmp_path / "cache")
    assert pipe.rerank_stage is not None and pipe.rerank_stage.depth == 10
    reranked = pipe.process_batch(questions, rerank=True)
    fused = pipe.process_batch(questions)  # by default only with rerank-calibration.json: a confidence that refuses
    assert pipe.rerank_stage.calibrator is None
    for r, f in zip(reranked, fused):
        assert r.evidence is not None and r.evidence["reranked"] is True and f.evidence["reranked"] is False
        order = [r.evidence["rerank"], *(a["rerank"] for a in r.evidence["alternatives"])]
        assert order == sorted(order, reverse=True)
        assert "rerank" in r.timings_ms and "rerank" not in f.timings_ms
        assert r.confidence is None  # no rerank-calibration.json yet: no confidence is invented
        assert [c[1] for c in f.candidates] == sorted((c[1] for c in f.candidates), reverse=True)  # fused scores
    plain = ProductionPipeline.from_bundle(tiny_bundle, encoder_config=encoder.config, cache_dir=tmp_path / "cache")
    assert plain.rerank_stage is None
    with pytest.raises(InputError, match="no reranker"):
        plain.process_batch(questions[:1], rerank=True)
