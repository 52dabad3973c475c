"""What `pipeline` exports: every name resolves to its defining module's object, unknown names fail,
and `import pipeline` stays cheap (no torch, transformers or FAISS until a name needs them)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import pipeline

PINNED = (  # the public surface, written out: adding or removing a name is a deliberate edit here
    "Answer", "AnswerResult", "BankCache", "BankError", "BankInfo", "BankNotFound", "BankRef", "BankStore", "Bundle",
    "BundleError", "Candidate", "Cube", "CubeConfig", "CubeQAError", "CubeStage", "DecodeStage", "Decoder",
    "DecoderKind", "DecoderTrainConfig", "EmbeddedPairs", "EncodeStage", "EncoderConfig", "EncoderError",
    "EncoderIdentity", "EvalReport", "GenerativeConfig", "GenerativeDecoder", "HybridDecoder", "IncompatibleBank",
    "IncompatibleBundle", "InputError", "Manifest", "NO_CONFIDENT_ANSWER", "PhraseBankConfig", "PhraseBankDecoder",
    "ProductionPipeline", "Provenance", "QAPair", "QuestionTower", "TeacherEncoder", "TowerConfig", "TowerStage",
    "TowerTrainConfig", "TrainConfig", "apply_map", "evaluate", "evaluate_bundle", "evaluate_decoders", "evidence",
    "load_bundle", "load_embedded", "load_generative", "load_pairs", "paired_bootstrap", "read_manifest",
    "resolve_min_confidence", "save_bundle", "save_threshold", "set_threads", "train_bundle", "train_decoder_bundle", "with_confidence",
)


def test_every_exported_name_is_the_defining_modules_object() -> None:
    assert pipeline.__all__ == sorted(PINNED)
    for name, module in pipeline.EXPORTS.items():
        assert getattr(pipeline, name) is getattr(importlib.import_module(module), name), name


def test_the_names_callers_use_are_exported() -> None:
    needed = {"EncodeStage", "CubeStage", "DecodeStage", "ProductionPipeline", "Answer", "DecoderKind", "PhraseBankDecoder",
              "GenerativeDecoder", "HybridDecoder", "CubeConfig", "TrainConfig", "load_bundle", "save_bundle", "evaluate", "InputError"}
    assert needed <= set(pipeline.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'apply_mapp'"):
        pipeline.apply_mapp  # noqa: B018 - the access is the test


def test_importing_pipeline_loads_no_heavy_library() -> None:
    code = "import sys, pipeline, pipeline.config, pipeline.decoders.base; print(sorted({'torch', 'transformers', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_errors_form_one_tree() -> None:
    for name in ("InputError", "BundleError", "IncompatibleBundle", "EncoderError"):
        assert issubclass(getattr(pipeline, name), pipeline.CubeQAError)
    assert issubclass(pipeline.IncompatibleBundle, pipeline.BundleError)
