"""Saving and loading a bundle's generative decoder (file names: pipeline.checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from pipeline.checkpoint import DECODER_CONFIG, DECODER_WEIGHTS, WORDS_FILE, has_decoder
from pipeline.decoders.generative.network import DecoderNet, GenerativeConfig, build_net
from pipeline.decoders.generative.search import GenerativeDecoder
from pipeline.decoders.words import RealWords
from pipeline.errors import BundleError

if TYPE_CHECKING:
    from pipeline.encoder import TeacherEncoder


def save_decoder(net: DecoderNet, directory: Path, extra: dict[str, object] | None = None) -> None:
    """Writes the trainable weights as float16 safetensors and the config (+ training record) as JSON."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.trainable_state().items()}
    save_file(state, str(directory / DECODER_WEIGHTS))
    (directory / DECODER_CONFIG).write_text(json.dumps({"config": net.config.to_dict(), **(extra or {})}, indent=2) + "\n", encoding="utf-8")


def load_decoder_net(directory: Path, vocab_size: int, teacher_dir: Path | None) -> tuple[DecoderNet, dict[str, object]]:
    """Rebuilds the network (teacher embeddings for a warm-started one) and loads the saved weights."""
    directory = Path(directory)
    try:
        record = json.loads((directory / DECODER_CONFIG).read_text(encoding="utf-8"))
        config = GenerativeConfig.from_dict(record["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"cannot read the decoder config {directory / DECODER_CONFIG}: {exc!r}") from exc
    net = build_net(config, vocab_size, teacher_dir)
    try:
        state = load_file(str(directory / DECODER_WEIGHTS))
    except Exception as exc:  # safetensors raises several types for truncated files
        raise BundleError(f"cannot read {directory / DECODER_WEIGHTS}: {exc}") from exc
    expected = set(net.trainable_state())
    if set(state) != expected:
        raise BundleError(f"{directory / DECODER_WEIGHTS} does not fit its config (missing {sorted(expected - set(state))[:3]}, extra {sorted(set(state) - expected)[:3]})")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return net.eval(), record



def load_generative(bundle_dir: Path, encoder: TeacherEncoder, **options: object) -> tuple[GenerativeDecoder, dict[str, object]]:
    """The bundle's trained decoder on the running teacher (its frozen embeddings), with decoding options,
    and the decoder's record (training report, chosen hybrid threshold)."""
    if not has_decoder(bundle_dir):
        raise BundleError(f"bundle {bundle_dir} has no generative decoder: train one with `cubeqa train-decoder`")
    net, record = load_decoder_net(bundle_dir, len(encoder.tokenizer), encoder.model_dir)
    try:
        words = RealWords.from_json(encoder.tokenizer, json.loads((Path(bundle_dir) / WORDS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"cannot read {Path(bundle_dir) / WORDS_FILE}: {exc!r}") from exc
    decoder = GenerativeDecoder(net, encoder.tokenizer, words, embed=lambda texts: encoder.encode(texts).vectors)
    return (decoder.with_options(**options) if options else decoder), record


def save_words(bundle_dir: Path, words: RealWords) -> None:
    """Writes the real-word constraint the decoder was trained with."""
    (Path(bundle_dir) / WORDS_FILE).write_text(json.dumps(words.to_json()), encoding="utf-8")
