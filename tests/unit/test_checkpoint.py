"""Bundles: round trip, and refusal of foreign, truncated, malformed or pickled bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import BundleError, Cube, CubeConfig, EncoderIdentity, IncompatibleBundle, load_bundle, save_bundle
from pipeline.checkpoint import BANK, CUBE_WEIGHTS, MANIFEST

ENCODER = EncoderIdentity(model_id="test/encoder", dim=18, weights_hash="abc123")
CONFIG = CubeConfig(dim=18, size=(3, 3, 2), channels=4, hidden=8, steps=2)


def trained_cube() -> Cube:
    torch.manual_seed(0)
    cube = Cube(CONFIG)
    with torch.no_grad():
        for param in cube.parameters():
            param.normal_(0, 0.2)
    return cube


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    vectors = np.random.default_rng(0).normal(size=(3, 18)).astype(np.float32)
    return save_bundle(tmp_path / "b", trained_cube(), ["one", "two", "three"], ENCODER, bank_vectors=vectors, extra={"metrics": {"split": "validation"}})


def test_round_trip_gives_the_same_answers(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir, ENCODER)
    q = torch.nn.functional.normalize(torch.randn(4, 18), dim=-1)
    with torch.no_grad():
        assert torch.equal(bundle.cube(q), trained_cube()(q))
    assert bundle.bank_texts == ["one", "two", "three"]
    assert bundle.bank_vectors is not None and bundle.bank_vectors.shape == (3, 18)
    assert bundle.manifest.extra["metrics"] == {"split": "validation"}
    assert bundle.manifest.cube_config == CONFIG
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["encoder"] == ENCODER.to_dict() and "code_version" in manifest


def test_foreign_encoder_is_refused_naming_both_sides(bundle_dir: Path) -> None:
    other = EncoderIdentity(model_id="other/encoder", dim=18, weights_hash="fff999")
    with pytest.raises(IncompatibleBundle) as error:
        load_bundle(bundle_dir, other)
    assert "abc123" in str(error.value) and "fff999" in str(error.value)
    assert "test/encoder" in str(error.value) and "other/encoder" in str(error.value)


def test_missing_manifest_and_fields_are_named(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    del manifest["encoder"]
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lacks the field.*encoder"):
        load_bundle(bundle_dir)
    (bundle_dir / MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(bundle_dir)


def test_truncated_weights_are_refused(bundle_dir: Path) -> None:
    weights = bundle_dir / CUBE_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(bundle_dir)


def test_weights_of_another_shape_are_refused(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["cube_config"]["channels"] = 5
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleBundle, match="do not fit"):
        load_bundle(bundle_dir)


def test_truncated_bank_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / BANK).write_text('"one"\n"two"\n')
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(bundle_dir)


def test_a_pickle_file_in_the_bundle_is_refused(bundle_dir: Path) -> None:
    torch.save({"x": torch.zeros(1)}, bundle_dir / "extra.pt")
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(bundle_dir)
