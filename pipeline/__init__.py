"""cubeqa's model: teacher encoder -> 3D lattice cube -> phrase-bank decoder. Pure PyTorch/NumPy."""

from pipeline.checkpoint import Bundle, load_bundle, save_bundle
from pipeline.cube import Cube, CubeConfig
from pipeline.decoders.phrase_bank import NO_CONFIDENT_ANSWER, PhraseBankConfig, PhraseBankDecoder
from pipeline.encoder import EncoderConfig, EncoderIdentity, TeacherEncoder
from pipeline.errors import BundleError, CubeQAError, EncoderError, IncompatibleBundle, InputError
from pipeline.production import AnswerResult, ProductionPipeline

__all__ = [
    "NO_CONFIDENT_ANSWER",
    "AnswerResult",
    "Bundle",
    "BundleError",
    "Cube",
    "CubeConfig",
    "CubeQAError",
    "EncoderConfig",
    "EncoderError",
    "EncoderIdentity",
    "IncompatibleBundle",
    "InputError",
    "PhraseBankConfig",
    "PhraseBankDecoder",
    "ProductionPipeline",
    "TeacherEncoder",
    "load_bundle",
    "save_bundle",
]
