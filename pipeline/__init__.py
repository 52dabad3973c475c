"""cubeqa's model: teacher encoder -> 3D lattice cube -> decoder (phrase bank, generative or hybrid). Pure PyTorch/NumPy.

Names load on first use (module `__getattr__`), so `import pipeline` and its torch-free
modules (configs, errors, decoder kinds) stay cheap for the CLI and the API.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS: dict[str, str] = {  # public name -> the module defining it
    "NO_CONFIDENT_ANSWER": "pipeline.decoders.phrase_bank",
    "AnswerResult": "pipeline.production",
    "Bundle": "pipeline.checkpoint",
    "BundleError": "pipeline.errors",
    "Cube": "pipeline.cube",
    "CubeConfig": "pipeline.config",
    "CubeQAError": "pipeline.errors",
    "EncoderConfig": "pipeline.encoder",
    "EncoderError": "pipeline.errors",
    "EncoderIdentity": "pipeline.encoder",
    "IncompatibleBundle": "pipeline.errors",
    "InputError": "pipeline.errors",
    "PhraseBankConfig": "pipeline.decoders.phrase_bank",
    "PhraseBankDecoder": "pipeline.decoders.phrase_bank",
    "ProductionPipeline": "pipeline.production",
    "TeacherEncoder": "pipeline.encoder",
    "load_bundle": "pipeline.checkpoint",
    "save_bundle": "pipeline.checkpoint",
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
