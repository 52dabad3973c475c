"""The int8 serving runtime: exported from the real teacher and tower, its vectors match torch's within the stated
tolerance, it tokenises as the teacher does, it is refused when its files or the weights they came from do not match,
and an int8 encode stage imports no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.encode_stage import EncodeStage, serving_runtime
from pipeline.errors import BundleError, IncompatibleBundle
from pipeline.int8 import ENCODER_FILE, RUNTIME_DIR, RUNTIME_MANIFEST, TOWER_FILES, Int8Encoder, Tokenizer
from pipeline.runtime_export import export_bundle

pytestmark = pytest.mark.slow

SHIPPED = Path(__file__).resolve().parents[2] / "cubeqa" / "bundles" / "default"
SENTENCES = [
    "Where is Kenya located?",
    "What did the committee decide about the 1848 constitution, and who voted against it?",
    "How many?",
    "Kenya (/ ˈkɛnjə /; locally [ˈkɛɲa]) is a country in Africa and a founding member of the east african community.",
    "Which function raises a KeyError when the header is missing from the request?",
]
MIN_COS = 0.97  # per vector: short texts move most ("How many?" 0.979); lowest of 1,261 validation questions 0.9856
MIN_MEAN_COS = 0.985


@pytest.fixture(scope="module")
def exported(encoder, tmp_path_factory) -> Path:
    """A copy of the shipped bundle (tower included) with its int8 runtime exported afresh (~30 s on 2 cores)."""
    bundle = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(SHIPPED, bundle, ignore=shutil.ignore_patterns(RUNTIME_DIR))
    export_bundle(bundle, encoder)
    return bundle


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_vectors_match_torch_within_tolerance(exported, encoder):
    torch_stage = EncodeStage(exported, encoder.config, runtime="torch")
    int8_stage = EncodeStage(exported, encoder.config, runtime="int8", threads=1)
    assert int8_stage.runtime == "int8" and torch_stage.runtime == "torch"
    for ours, theirs in (
        (int8_stage.encode(SENTENCES).vectors, torch_stage.encode(SENTENCES).vectors),
        (int8_stage.encode_questions(SENTENCES).tower, torch_stage.encode_questions(SENTENCES).tower),
        (int8_stage.encode_questions(SENTENCES).teacher, torch_stage.encode_questions(SENTENCES).teacher),
    ):
        assert ours.dtype == np.float32 and ours.shape == (len(SENTENCES), 384)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        assert cos(ours, theirs).min() >= MIN_COS and cos(ours, theirs).mean() >= MIN_MEAN_COS
    # the tower is not the teacher: int8 keeps them apart as torch does
    both = int8_stage.encode_questions(SENTENCES)
    assert cos(both.tower, both.teacher).mean() < 0.99


def test_teacher_rows_leave_zeros_as_torch_does(exported, encoder):
    stage = EncodeStage(exported, encoder.config, runtime="int8", threads=1)
    rows = [True, False, True, False, False]
    out = stage.encode_questions(SENTENCES, rows)
    assert not out.teacher[[1, 3, 4]].any() and np.abs(np.linalg.norm(out.teacher[[0, 2]], axis=1) - 1).max() < 1e-5
    np.testing.assert_allclose(out.tower, stage.encode_questions(SENTENCES).tower, atol=1e-6)


def test_tokenizer_cuts_as_the_teacher_does(encoder):
    long_text = " ".join(["word"] * 400)
    texts = [*SENTENCES, long_text]
    ours, cut = Tokenizer(encoder.model_dir, encoder.max_length)(texts)
    theirs, their_cut = encoder.tokenize(texts)
    assert [ids.tolist() for ids in ours["input_ids"]] == [list(ids) for ids in theirs["input_ids"]]
    assert cut.tolist() == their_cut.tolist() == [False] * len(SENTENCES) + [True]


def test_runtime_of_other_torch_weights_is_refused(exported, encoder, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    manifest = bundle / RUNTIME_DIR / RUNTIME_MANIFEST
    record = json.loads(manifest.read_text())
    record["encoder"]["torch_weights"] = "0123456789abcdef"
    manifest.write_text(json.dumps(record))
    with pytest.raises(IncompatibleBundle, match=f"0123456789abcdef.*{encoder.identity.weights_hash}"):
        EncodeStage(bundle, encoder.config, runtime="int8")


def test_retrained_tower_is_refused(exported, encoder, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    recorded = json.loads((bundle / RUNTIME_DIR / RUNTIME_MANIFEST).read_text())["tower"]["torch_weights"]
    with (bundle / "tower.safetensors").open("ab") as handle:
        handle.write(b"\0")  # the torch tower changed after the export
    with pytest.raises(IncompatibleBundle, match=f"tower weights {recorded}.*hash to [0-9a-f]{{16}}"):
        EncodeStage(bundle, encoder.config, runtime="int8")


@pytest.mark.parametrize("graph", [ENCODER_FILE, *TOWER_FILES.values()])
def test_altered_graph_is_refused(exported, encoder, tmp_path, graph):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    with (bundle / RUNTIME_DIR / graph).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=f"{graph} hashes to [0-9a-f]{{16}}, but runtime.json records [0-9a-f]{{16}}"):
        EncodeStage(bundle, encoder.config, runtime="int8")


def test_bundle_without_runtime_names_the_export_command(encoder, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle, ignore=shutil.ignore_patterns(RUNTIME_DIR, "*.safetensors", "*.jsonl"))
    with pytest.raises(BundleError, match="cubeqa export --bundle"):
        Int8Encoder(bundle, encoder.config)


def test_int8_encode_stage_imports_no_torch(exported):
    probe = (
        "import sys; from pipeline.encode_stage import EncodeStage; from pipeline.encoding import EncoderConfig; "
        f"s = EncodeStage({str(exported)!r}, EncoderConfig(device='cpu'), runtime='int8', threads=1); "
        "v = s.encode_questions(['Where is Kenya located?']).tower; "
        "print(v.shape, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split()[-2:] == ["False", "False"] and "(1, 384)" in out.stdout


def test_cuda_keeps_the_torch_runtime(tmp_path):
    assert serving_runtime("int8", "cuda:0") == "torch"
    assert serving_runtime("int8", "cpu") == "int8"
    assert serving_runtime("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="unknown runtime 'fp8'"):
        serving_runtime("fp8", "cpu")


def test_auto_serves_int8_where_the_bundle_has_its_files_and_torch_elsewhere(exported, encoder, tmp_path, caplog):
    bare = tmp_path / "bare"
    shutil.copytree(exported, bare, ignore=shutil.ignore_patterns(RUNTIME_DIR))
    assert serving_runtime("auto", "cpu", exported) == "int8" and serving_runtime("auto", "cuda:0", exported) == "torch"
    assert serving_runtime("auto", "cpu", bare) == "torch" and EncodeStage(bare, encoder.config, runtime="auto").runtime == "torch"
    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    manifest = stale / RUNTIME_DIR / RUNTIME_MANIFEST
    record = json.loads(manifest.read_text())
    record["tower"]["torch_weights"] = "0123456789abcdef"  # exported from other tower weights: int8 refuses, auto passes over
    manifest.write_text(json.dumps(record))
    with caplog.at_level("WARNING", logger="pipeline.encode_stage"):
        assert EncodeStage(stale, encoder.config, runtime="auto").runtime == "torch"
    assert "cubeqa export" in caplog.text


def test_banks_are_embedded_by_the_torch_teacher_on_either_runtime(exported, encoder):
    """A bank's vectors do not depend on the runtime of the worker that embedded its chunks (tasks.corpus)."""
    int8_stage = EncodeStage(exported, encoder.config, runtime="int8", threads=1)
    torch_stage = EncodeStage(exported, encoder.config, runtime="torch")
    assert torch_stage.bank_encoder() is torch_stage.encoder
    sentences = ["Kenya is a country in Africa.", "The Eiffel tower was designed by Gustave Eiffel's company."]
    vectors = int8_stage.bank_encoder().encode(sentences).vectors
    assert np.array_equal(vectors, torch_stage.encode(sentences).vectors)
    assert not np.array_equal(vectors, int8_stage.encode(sentences).vectors)  # int8 itself differs (cosine ~0.99)
    assert int8_stage.bank_encoder().identity == int8_stage.encoder.identity


def test_file_names_copied_to_stay_torch_free_match_their_sources():
    from pipeline import encode_stage, int8, tower_io

    assert int8.TOWER_WEIGHTS == tower_io.WEIGHTS and encode_stage.TOWER_CONFIG == tower_io.CONFIG
