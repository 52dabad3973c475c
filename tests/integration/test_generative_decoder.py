"""The generative and hybrid decoders with the real teacher: warm start, a short training run, the pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline import (
    BundleError,
    CubeConfig,
    DecoderTrainConfig,
    GenerativeConfig,
    ProductionPipeline,
    TrainConfig,
    load_generative,
    save_threshold,
    train_bundle,
    train_decoder_bundle,
)
from pipeline.decoders.generative import build_net

pytestmark = pytest.mark.slow


def test_the_warm_started_decoder_run_bidirectionally_is_the_teacher(encoder) -> None:
    import torch

    net = build_net(GenerativeConfig(), len(encoder.tokenizer), encoder.model_dir).eval()
    texts = ["Where is kenya located?", "The fort was built by the dutch west india company in 1625."]
    tokens = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = net.encode_bidirectional(tokens["input_ids"], tokens["attention_mask"]).numpy()
    np.testing.assert_allclose(ours, encoder.encode(texts).vectors, atol=1e-5)


@pytest.fixture(scope="module")
def decoder_bundle(encoder, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("generative") / "bundle"
    train_bundle(
        small_data["train"], small_data["val"], out, encoder=encoder, cube_config=CubeConfig(size=(4, 4, 2), channels=4, hidden=8, steps=2),
        train_config=TrainConfig(epochs=1, batch_size=32, threads=1), cache_dir=None, resamples=50,
    )
    outcome = train_decoder_bundle(
        out, small_data["train"], encoder=encoder, config=GenerativeConfig(layers=2, max_tokens=12),
        train_config=DecoderTrainConfig(minutes=0.2, max_epochs=1, batch_size=16, eval_every=10, holdout=0.05), cache_dir=None,
        fragments_per_answer=1,
    )
    assert outcome.report.steps >= 10 and outcome.report.history
    pairs = [json.loads(line) for line in small_data["train"].read_text().splitlines()]
    sentences = {p["question"] for p in pairs} | {p["answer"] for p in pairs}
    long_answers = {p["answer"] for p in pairs if len(p["answer"].split()) >= 8}
    assert len(sentences) < outcome.sentences <= len(sentences) + len(long_answers)  # plus one fragment per long answer
    return out


def test_a_trained_decoder_answers_in_the_pipeline_with_real_words(decoder_bundle, encoder) -> None:
    pipe = ProductionPipeline.from_bundle(decoder_bundle, decoder="generative")
    results = pipe.process_batch(["Where is kenya located?", "Who built the fort?"], ["Kenya is in africa.", "The dutch built it."])
    for result in results:
        assert result.path == "generative" and result.answer.strip()
        assert -1.0 <= result.score <= 1.0 and {"decode_fidelity", "e2e_cos", "echo"} <= set(result.metrics)
    decoder, _ = load_generative(decoder_bundle, encoder)
    ids = [encoder.tokenizer(r.answer, add_special_tokens=False)["input_ids"] for r in results]
    assert decoder.words.real_word_share(ids) == 1.0


def test_hybrid_routes_by_the_saved_threshold(decoder_bundle, tmp_path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(decoder_bundle, copy)
    with pytest.raises(BundleError, match="no hybrid threshold"):
        ProductionPipeline.from_bundle(copy, decoder="hybrid")
    save_threshold(copy, {"threshold": 2.0, "chosen_on": "test"})  # above any score: always generative
    assert {r.path for r in ProductionPipeline.from_bundle(copy, decoder="hybrid").process_batch(["Where is kenya?"])} == {"generative"}
    save_threshold(copy, {"threshold": -2.0, "chosen_on": "test"})  # below any score: always the bank
    assert {r.path for r in ProductionPipeline.from_bundle(copy, decoder="hybrid").process_batch(["Where is kenya?"])} == {"bank"}


def test_a_bundle_without_a_decoder_says_how_to_get_one(tmp_path, small_data, encoder) -> None:
    out = tmp_path / "plain"
    train_bundle(
        small_data["train"], small_data["val"], out, encoder=encoder, cube_config=CubeConfig(size=(4, 4, 2), channels=4, hidden=8, steps=2),
        train_config=TrainConfig(epochs=1, batch_size=32, threads=1), cache_dir=None, resamples=50,
    )
    with pytest.raises(BundleError, match="cubeqa train-decoder"):
        ProductionPipeline.from_bundle(out, decoder="generative")
