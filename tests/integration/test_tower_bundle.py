"""A bundle with a question tower: trained by `train_bundle`, served by the stages, evaluated with its rows, refused
when its tower belongs to another encoder; a bundle retrained without a tower serves the teacher's vector again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import (
    CubeConfig,
    EncoderConfig,
    ProductionPipeline,
    TowerConfig,
    TowerStage,
    TowerTrainConfig,
    TrainConfig,
    train_bundle,
)
from pipeline.checkpoint import load_bundle, read_manifest
from pipeline.cube import apply_map
from pipeline.errors import BundleError, IncompatibleBundle
from pipeline.stages import EncodeStage, answer_vectors
from pipeline.tower_io import CONFIG, WEIGHTS
from pipeline.workflows import evaluate_bundle
from tests.conftest import read_jsonl

pytestmark = pytest.mark.slow

TINY = CubeConfig(size=(4, 4, 2), channels=4, hidden=8, steps=2)
CUBE_TRAIN = TrainConfig(epochs=2, batch_size=32, threads=1)
TOWER = TowerStage(TowerConfig(layers=1), TowerTrainConfig(epochs=1, batch_size=32, lr=2e-4, threads=1))


def train(small_data: dict[str, Path], out: Path, encoder, tower: TowerStage | None):  # TeacherEncoder
    return train_bundle(
        small_data["train"], small_data["val"], out, encoder=encoder, cube_config=TINY, train_config=CUBE_TRAIN,
        cache_dir=None, tower=tower, resamples=100,
    )


@pytest.fixture(scope="module")
def towered(encoder, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "towered"
    return train(small_data, out, encoder, TOWER)


def test_the_bundle_ships_the_tower_with_its_record_and_the_eval_rows(towered) -> None:
    bundle = towered.bundle_dir
    assert (bundle / WEIGHTS).is_file() and (bundle / CONFIG).is_file() and (bundle / "reference_cube.safetensors").is_file()
    record = read_manifest(bundle).extra["tower"]
    assert record["config"]["layers"] == 1 and record["split"] == 5  # MiniLM has six layers
    assert set(record["data"]) == {"train", "validation"} and record["train_config"]["lr"] == 2e-4
    assert len(towered.tower_epochs) == 1
    report = towered.validation
    assert {"cube", "identity", "tower", "cube_only"} <= set(report.retrieval)
    assert {"tower_cos", "cube_only_cos", "cube_cos", "identity_cos"} <= set(report.cos)
    for name in ("cube − identity: R@1", "cube − tower: R@1", "cube − cube_only: MRR", "tower − identity: R@1", "cube_only − identity: cos"):
        assert name in report.differences
    # the manifest's tower figures are the tower row of the same validation run
    assert record["validation"]["R@1"] == pytest.approx(report.retrieval["tower"]["R@1"])
    assert record["validation"]["cos"] == pytest.approx(report.cos["tower_cos"], abs=1e-6)


def test_the_stages_feed_the_cube_the_towers_vector_and_score_against_the_teachers(towered, small_data, encoder) -> None:
    pipe = ProductionPipeline.from_bundle(towered.bundle_dir, encoder_config=EncoderConfig(device="cpu"))
    tower = pipe.encode_stage.tower
    assert tower is not None
    rows = read_jsonl(small_data["val"])[:8]
    questions = [r["question"] for r in rows]
    both = pipe.encode_stage.encode_questions(questions)
    assert np.allclose(both.teacher, encoder.encode(questions).vectors, atol=1e-5)
    assert not np.allclose(both.tower, both.teacher, atol=1e-4)  # the trained tower moved the questions
    some = pipe.encode_stage.encode_questions(questions, teacher_rows=[i % 3 == 0 for i in range(len(questions))])
    assert np.allclose(some.tower, both.tower, atol=1e-5)
    for i in range(len(questions)):  # the frozen top runs only where asked; elsewhere the teacher row is zero
        assert np.allclose(some.teacher[i], both.teacher[i] if i % 3 == 0 else 0.0, atol=1e-5)
    expected = pipe.map(both.tower)
    bundle = load_bundle(towered.bundle_dir)
    assert np.allclose(answer_vectors(bundle, encoder, questions), expected, atol=1e-5)
    results = pipe.process_batch(questions, [r["answer"] for r in rows])
    refs = encoder.encode([r["answer"] for r in rows]).vectors
    for i, result in enumerate(results):
        assert result.metrics["identity_cos"] == pytest.approx(float(both.teacher[i] @ refs[i]), abs=1e-4)
        assert result.metrics["cube_cos"] == pytest.approx(float(expected[i] @ refs[i]), abs=1e-4)


def test_eval_reports_the_tower_rows_and_a_bundle_without_a_tower_none(towered, small_data, encoder, tmp_path) -> None:
    report = evaluate_bundle(towered.bundle_dir, small_data["val"], small_data["train"], encoder=encoder, cache_dir=None, resamples=100)
    assert report.retrieval["tower"] == pytest.approx(towered.validation.retrieval["tower"], abs=1e-3)
    assert report.retrieval["cube"] == pytest.approx(towered.validation.retrieval["cube"], abs=1e-3)
    # retraining the same directory without a tower removes the tower: the cube takes the teacher's vector again
    copy = tmp_path / "retrained"
    shutil.copytree(towered.bundle_dir, copy)
    plain = train(small_data, copy, encoder, None)
    assert not (copy / CONFIG).exists() and not (copy / WEIGHTS).exists() and not (copy / "reference_cube.safetensors").exists()
    assert "tower" not in read_manifest(copy).extra
    assert set(plain.validation.retrieval) == {"cube", "identity", "mean_shift", "residual_ridge"}
    stage = EncodeStage(copy, EncoderConfig(device="cpu"))
    assert stage.tower is None
    rows = read_jsonl(small_data["val"])[:4]
    both = stage.encode_questions([r["question"] for r in rows])
    assert np.array_equal(both.tower, both.teacher)
    assert np.allclose(answer_vectors(load_bundle(copy), encoder, [r["question"] for r in rows]), apply_map(load_bundle(copy).cube, both.teacher), atol=1e-6)


def test_a_tower_tuned_on_another_encoder_or_with_other_weights_is_refused(towered, tmp_path) -> None:
    other = tmp_path / "other-encoder"
    shutil.copytree(towered.bundle_dir, other)
    record = json.loads((other / CONFIG).read_text())
    record["encoder"]["weights_hash"] = "0" * 16
    (other / CONFIG).write_text(json.dumps(record))
    with pytest.raises(IncompatibleBundle, match="tuned on encoder"):
        EncodeStage(other, EncoderConfig(device="cpu"))

    swapped = tmp_path / "swapped-weights"
    shutil.copytree(towered.bundle_dir, swapped)
    record = json.loads((swapped / CONFIG).read_text())
    record["weights_id"] = "000000000000"
    (swapped / CONFIG).write_text(json.dumps(record))
    with pytest.raises(BundleError, match="weights_id"):
        EncodeStage(swapped, EncoderConfig(device="cpu"))
