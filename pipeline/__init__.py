"""cubeqa's model: teacher encoder -> 3D lattice cube -> decoder (phrase bank, generative or hybrid). Pure PyTorch/NumPy.

Names load on first use (module `__getattr__`), so `import pipeline` and its torch-free
modules (configs, errors, decoder kinds) stay cheap for the CLI and the API.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS: dict[str, str] = {  # public name -> the module defining it
    # errors
    "CubeQAError": "pipeline.errors",
    "InputError": "pipeline.errors",
    "BundleError": "pipeline.errors",
    "IncompatibleBundle": "pipeline.errors",
    "EncoderError": "pipeline.errors",
    "BankError": "pipeline.errors",
    "BankNotFound": "pipeline.errors",
    "IncompatibleBank": "pipeline.errors",
    # configs
    "CubeConfig": "pipeline.config",
    "TrainConfig": "pipeline.config",
    "TowerConfig": "pipeline.config",
    "TowerTrainConfig": "pipeline.config",
    "EncoderConfig": "pipeline.encoding",
    "EncoderIdentity": "pipeline.encoding",
    "PhraseBankConfig": "pipeline.decoders.phrase_bank",
    "GenerativeConfig": "pipeline.decoders.generative.network",
    "DecoderTrainConfig": "pipeline.training.decoder_trainer",
    # model parts
    "TeacherEncoder": "pipeline.encoder",
    "Cube": "pipeline.cube",
    "QuestionTower": "pipeline.tower",
    "apply_map": "pipeline.cube",
    # decoders
    "Answer": "pipeline.decoders.base",
    "Candidate": "pipeline.decoders.base",
    "Decoder": "pipeline.decoders.base",
    "DecoderKind": "pipeline.decoders.base",
    "NO_CONFIDENT_ANSWER": "pipeline.decoders.phrase_bank",
    "PhraseBankDecoder": "pipeline.decoders.phrase_bank",
    "GenerativeDecoder": "pipeline.decoders.generative.search",
    "HybridDecoder": "pipeline.decoders.hybrid",
    "load_generative": "pipeline.decoders.generative.io",
    # knowledge banks and confidence
    "BankStore": "pipeline.knowledge.store",
    "BankInfo": "pipeline.knowledge.store",
    "BankCache": "pipeline.knowledge.bank_cache",
    "BankRef": "pipeline.knowledge.bank_cache",
    "Provenance": "pipeline.knowledge.provenance",
    "evidence": "pipeline.confidence",
    "with_confidence": "pipeline.confidence",
    # stages and the one-process pipeline
    "EncodeStage": "pipeline.stages",
    "CubeStage": "pipeline.stages",
    "DecodeStage": "pipeline.stages",
    "ProductionPipeline": "pipeline.production",
    "AnswerResult": "pipeline.answer_result",
    "set_threads": "pipeline.production",
    "resolve_min_confidence": "pipeline.calibration",
    # bundles
    "Bundle": "pipeline.checkpoint",
    "Manifest": "pipeline.checkpoint",
    "load_bundle": "pipeline.checkpoint",
    "save_bundle": "pipeline.checkpoint",
    "read_manifest": "pipeline.checkpoint",
    "save_threshold": "pipeline.checkpoint",
    # data, training and evaluation entry points
    "QAPair": "pipeline.data",
    "EmbeddedPairs": "pipeline.data",
    "load_pairs": "pipeline.data",
    "load_embedded": "pipeline.workflows",
    "train_bundle": "pipeline.workflows",
    "TowerStage": "pipeline.workflows",
    "evaluate_bundle": "pipeline.workflows",
    "evaluate": "pipeline.evaluation",
    "EvalReport": "pipeline.evaluation",
    "paired_bootstrap": "pipeline.evaluation",
    "train_decoder_bundle": "pipeline.decoder_workflows",
    "evaluate_decoders": "pipeline.decoder_workflows",
}

__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use."""
    if name not in EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS})
