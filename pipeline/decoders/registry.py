"""Decoders by kind: DecodeStage asks here instead of branching, so a new decoder is one `register` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.checkpoint import read_hybrid_threshold
from pipeline.decoders.base import Decoder, DecoderKind
from pipeline.decoders.phrase_bank import PhraseBankDecoder
from pipeline.errors import BundleError

if TYPE_CHECKING:
    from pipeline.decoders.generative import GenerativeDecoder
    from pipeline.decoders.hybrid import GenerativePath
    from pipeline.encoder import TeacherEncoder


@dataclass(frozen=True)
class DecoderParts:
    """What a factory may build from: the bundle, its bank decoder, the teacher (for kinds that need it) and options."""

    bundle_dir: Path
    bank: PhraseBankDecoder
    encoder: TeacherEncoder | None
    generative_options: dict[str, object] = field(default_factory=dict)
    hybrid_threshold: float | None = None  # None: the one recorded in the bundle
    generative: GenerativeDecoder | None = None  # already loaded (shared by the decoders of several banks); None: load it


Factory = Callable[[DecoderParts], Decoder]
FACTORIES: dict[DecoderKind, Factory] = {}


def register(kind: DecoderKind) -> Callable[[Factory], Factory]:
    """Decorator: `factory` builds the decoder of `kind`."""

    def add(factory: Factory) -> Factory:
        FACTORIES[kind] = factory
        return factory

    return add


def make_decoder(kind: DecoderKind, parts: DecoderParts) -> Decoder:
    """The decoder of `kind` built from `parts`."""
    return FACTORIES[DecoderKind(kind)](parts)


@register(DecoderKind.bank)
def bank_decoder(parts: DecoderParts) -> Decoder:
    return parts.bank


@register(DecoderKind.generative)
def generative_decoder(parts: DecoderParts) -> Decoder:
    return generative_path(parts)


@register(DecoderKind.hybrid)
def hybrid_decoder(parts: DecoderParts) -> Decoder:
    from pipeline.decoders.hybrid import HybridDecoder

    path = generative_path(parts)
    chosen = read_hybrid_threshold(parts.bundle_dir) if parts.hybrid_threshold is None else parts.hybrid_threshold
    if chosen is None:
        raise BundleError(f"bundle {parts.bundle_dir} has no hybrid threshold: choose one with `cubeqa eval --decoder all --save-threshold`")
    return HybridDecoder(parts.bank, path, float(chosen), parts.bank.top_k)


def generative_path(parts: DecoderParts) -> GenerativePath:
    """The bundle's generative decoder as a Decoder."""
    from pipeline.decoders.generative import load_generative
    from pipeline.decoders.hybrid import GenerativePath

    encoder = parts.encoder
    if encoder is None:
        raise ValueError("the generative decoders need the teacher encoder")
    generative = parts.generative or load_generative(parts.bundle_dir, encoder, **parts.generative_options)[0]
    return GenerativePath(generative, parts.bank, encoder.encode_generated)
