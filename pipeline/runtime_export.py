"""Exports the teacher and the question tower to ONNX, quantises them to int8 and writes runtime.json.

Training stays in torch; this turns a bundle's torch weights into the files pipeline.int8 serves
(layout in its docstring), recording the hashes of the weights they came from and the parity of
their vectors with torch's on the questions given.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.encoder import TeacherEncoder, mean_pool
from pipeline.int8 import (
    ENCODER_FILE,
    FORMAT,
    RUNTIME_DIR,
    RUNTIME_MANIFEST,
    TOKEN_INPUTS,
    TOWER_FILES,
    TOWER_WEIGHTS,
    Int8Encoder,
    Int8Tower,
    file_hash,
)
from pipeline.tower import QuestionTower

SAMPLE = ["What is the capital of France?", "Who wrote it?"]  # two lengths, so the traced graph pads


@dataclass(frozen=True)
class QuantConfig:
    """How the graphs are quantised: ONNX Runtime dynamic quantisation of the weight MatMuls (and embeddings)."""

    per_channel: bool = True  # one scale per output column: per-tensor costs 0.03 in cosine (docs/performance.md)
    keep_fp32: tuple[str, ...] = ()  # node-name fragments left in fp32, e.g. "output/dense" for the FFN output
    opset: int = 17

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "onnxruntime.quantize_dynamic",
            "weights": "int8 (QInt8)",
            "activations": "uint8, per batch",
            **asdict(self),
            "keep_fp32": list(self.keep_fp32),
        }


class TeacherGraph(nn.Module):
    """The teacher as one graph: token ids (B, L) -> unit vectors (B, D)."""

    def __init__(self, encoder: TeacherEncoder) -> None:
        super().__init__()
        self.model = encoder.model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pool(hidden, attention_mask)


class LowerGraph(nn.Module):
    """The tower's shared lower layers as one graph: token ids (B, L) -> hidden states (B, L, D)."""

    def __init__(self, tower: QuestionTower) -> None:
        super().__init__()
        self.tower = tower
        self.teacher = tower.encoder.model  # registered, so the tracer takes its weights as parameters, not constants

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.tower.lower(
            {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        )


class TopGraph(nn.Module):
    """One top of the tower as a graph: hidden states (B, L, D) and mask (B, L) -> unit vectors (B, D)."""

    def __init__(self, tower: QuestionTower, tuned: bool) -> None:
        super().__init__()
        self.tower, self.tuned = tower, tuned
        self.teacher = tower.encoder.model

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tower.run_top(hidden, attention_mask, tuned=self.tuned)


def sample_tokens(encoder: TeacherEncoder) -> dict[str, torch.Tensor]:
    """A padded batch of SAMPLE on the encoder's device."""
    tokens = encoder.tokenizer(SAMPLE, padding=True, return_tensors="pt")
    return {name: tokens[name].to(encoder.device) for name in TOKEN_INPUTS}


def export_graph(
    module: nn.Module, inputs: dict[str, torch.Tensor], path: Path, outputs: list[str], opset: int
) -> None:
    """Traces `module` into an fp32 ONNX graph, every input and output dynamic in batch (and inputs in length)."""
    axes = {name: {0: "batch", 1: "length"} for name in inputs} | {name: {0: "batch"} for name in outputs}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches: nothing below the edge prints
        torch.onnx.export(
            module.eval(),
            tuple(inputs.values()),
            str(path),
            dynamo=False,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
        )


def quantize(source: Path, target: Path, config: QuantConfig) -> None:
    """Dynamic int8 quantisation of an fp32 graph's weight MatMuls and embedding Gathers."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node]
    excluded = [name for name in names if any(fragment in name for fragment in config.keep_fp32)]
    logging.disable(logging.WARNING)  # the quantiser logs advice on the root logger: nothing below the edge prints
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=config.per_channel,
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": 1},  # float32 where shape inference is silent
        )
    finally:
        logging.disable(logging.NOTSET)


def cosine_figures(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row cosine of two sets of unit vectors (N, D): mean, 1st percentile, minimum."""
    cos = np.sum(a * b, axis=1)
    return {"mean": float(cos.mean()), "p1": float(np.percentile(cos, 1)), "min": float(cos.min()), "n": len(cos)}


def export_runtime(
    bundle_dir: Path,
    encoder: TeacherEncoder,
    tower: QuestionTower | None,
    config: QuantConfig | None = None,
    parity_texts: list[str] | None = None,
    parity_data: str | None = None,
) -> dict[str, Any]:
    """Writes bundle/runtime/ (int8 teacher, int8 tower when there is one, runtime.json); returns the manifest."""
    config = config or QuantConfig()
    target = Path(bundle_dir) / RUNTIME_DIR
    target.mkdir(parents=True, exist_ok=True)
    (target / RUNTIME_MANIFEST).unlink(missing_ok=True)  # no manifest while its graphs are half written
    record: dict[str, Any] = {"format": FORMAT, "opset": config.opset, "quantization": config.to_dict()}
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "encoder.onnx"
        tokens = sample_tokens(encoder)
        export_graph(TeacherGraph(encoder), tokens, fp32, ["vector"], config.opset)
        quantize(fp32, target / ENCODER_FILE, config)
        record["encoder"] = {
            "file": ENCODER_FILE,
            "torch_weights": encoder.identity.weights_hash,
            "sha256": file_hash(target / ENCODER_FILE),
            "model_id": encoder.identity.model_id,
        }
        for name in TOWER_FILES.values():
            (target / name).unlink(missing_ok=True)
        if tower is not None:
            record["tower"] = export_tower(tower, tokens, Path(bundle_dir), Path(scratch), config)
    write_manifest(target, record)
    if parity_texts:
        record["parity"] = {"data": parity_data, **runtime_parity(bundle_dir, encoder, tower, parity_texts)}
        write_manifest(target, record)
    return record


def export_tower(
    tower: QuestionTower, tokens: dict[str, torch.Tensor], bundle_dir: Path, scratch: Path, config: QuantConfig
) -> dict[str, Any]:
    """The tower's three int8 graphs (shared lower layers, tuned top, frozen top) and their runtime.json entry."""
    with torch.no_grad():
        hidden = tower.lower(tokens)  # (B, L, D): the sample the tops are traced on
    sources = {
        "lower": (LowerGraph(tower), tokens, "hidden"),
        "tuned": (
            TopGraph(tower, tuned=True),
            {"hidden": hidden, "attention_mask": tokens["attention_mask"]},
            "vector",
        ),
        "frozen": (
            TopGraph(tower, tuned=False),
            {"hidden": hidden, "attention_mask": tokens["attention_mask"]},
            "vector",
        ),
    }
    graphs = {}
    for part, (module, inputs, output) in sources.items():
        fp32 = scratch / f"tower_{part}.onnx"
        export_graph(module, inputs, fp32, [output], config.opset)
        quantize(fp32, bundle_dir / RUNTIME_DIR / TOWER_FILES[part], config)
        graphs[part] = {"file": TOWER_FILES[part], "sha256": file_hash(bundle_dir / RUNTIME_DIR / TOWER_FILES[part])}
    return {"torch_weights": file_hash(bundle_dir / TOWER_WEIGHTS), "split": tower.split, "graphs": graphs}


def write_manifest(target: Path, record: dict[str, Any]) -> None:
    """runtime.json, replaced atomically."""
    scratch = target / (RUNTIME_MANIFEST + ".tmp")
    scratch.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.move(scratch, target / RUNTIME_MANIFEST)


def runtime_parity(
    bundle_dir: Path, encoder: TeacherEncoder, tower: QuestionTower | None, texts: list[str]
) -> dict[str, Any]:
    """Cosine between torch's and the int8 runtime's vectors of the same texts (teacher, and tower if any)."""
    int8 = Int8Encoder(bundle_dir, encoder.config)
    figures: dict[str, Any] = {"teacher": cosine_figures(encoder.encode(texts).vectors, int8.encode(texts).vectors)}
    if tower is not None:
        ours = tower.encode_both(texts, batch_size=encoder.config.batch_size)
        theirs = Int8Tower(bundle_dir, int8).encode_both(texts)
        figures["tower"] = cosine_figures(ours.tower, theirs.tower)
        figures["tower_teacher"] = cosine_figures(ours.teacher, theirs.teacher)
    return figures


def export_bundle(
    bundle_dir: Path, encoder: TeacherEncoder, parity_data: Path | None = None, config: QuantConfig | None = None
) -> dict[str, Any]:
    """`cubeqa export`: the int8 runtime of an existing bundle (its teacher, and its tower if it has one), with the
    parity of its vectors against torch on `parity_data`'s questions; refuses a bundle of another encoder."""
    from pipeline.checkpoint import check_encoder, read_manifest
    from pipeline.data import load_pairs
    from pipeline.tower_io import load_tower_if_any

    check_encoder(read_manifest(bundle_dir), encoder.identity, Path(bundle_dir))
    tower = load_tower_if_any(bundle_dir, encoder)
    texts = [pair.question for pair in load_pairs(parity_data)] if parity_data else None
    return export_runtime(bundle_dir, encoder, tower, config, texts, Path(parity_data).name if parity_data else None)
