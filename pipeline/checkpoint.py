"""Checkpoint bundles: a directory of safetensors weights, a JSON manifest and the phrase bank.

    bundle/
      manifest.json      format version, cube config, training config, encoder identity,
                         data hashes, validation metrics (with split name and size), code version
      cube.safetensors   the cube's state_dict
      bank.jsonl         phrase-bank sentences, one JSON string per line
      bank.safetensors   optional: their embeddings by the manifest's encoder, so loading skips re-encoding
      decoder.safetensors, decoder.json, decoder_words.json
                         optional: the generative decoder's weights, its config and record (with the
                         hybrid threshold), its real-word constraint
      calibration.json   optional: the confidence calibrator and its default threshold (pipeline.calibration)
      tower.safetensors, tower.json
                         optional: the question tower's tuned layers and its record (pipeline.tower_io);
                         with it the cube takes the tower's question vector
      reference_cube.safetensors
                         optional, beside a tower: a cube trained the same way on the teacher's vectors,
                         read only by evaluation (the "cube without the tower" row)

No pickle anywhere: a bundle holding a pickle-format file (by its suffix or its first bytes) is refused,
and weights are read only by safetensors, which cannot run code. When the manifest records a `bundle_id`
(a hash of the cube's weights), loading checks the weights against it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from pipeline.cube import Cube, CubeConfig
from pipeline.data import json_value, numbered_lines
from pipeline.encoder import EncoderIdentity
from pipeline.errors import BundleError, IncompatibleBundle

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CUBE_WEIGHTS = "cube.safetensors"
BANK = "bank.jsonl"
BANK_VECTORS = "bank.safetensors"
DECODER_WEIGHTS = "decoder.safetensors"  # optional: the generative decoder (pipeline.decoders.generative.io)
DECODER_CONFIG = "decoder.json"  # its config, training record and the chosen hybrid threshold
WORDS_FILE = "decoder_words.json"  # its real-word constraint
CALIBRATION = "calibration.json"  # optional: the confidence calibrator and its default threshold (pipeline.calibration)
REFERENCE_CUBE = "reference_cube.safetensors"  # optional: the cube without the tower, for evaluation only
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib"}
PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # a pickle's first two bytes
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format: a zip holding a pickle
REQUIRED_FIELDS = ("format_version", "cube_config", "encoder", "bank")


@dataclass
class Manifest:
    """What a bundle says about itself; `extra` carries training details and metrics."""

    cube_config: CubeConfig
    encoder: EncoderIdentity
    bank_size: int
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "cube_config": self.cube_config.to_dict(),
            "encoder": self.encoder.to_dict(),
            "bank": {"file": BANK, "size": self.bank_size},
            "code_version": code_version(),
            **self.extra,
        }


@dataclass
class Bundle:
    """A loaded bundle: the cube (eval mode), its bank sentences and manifest."""

    path: Path
    manifest: Manifest
    cube: Cube
    bank_texts: list[str]
    bank_vectors: np.ndarray | None  # (K, D) float32, embedded by the manifest's encoder


def weights_id(cube: Cube) -> str:
    """A short hash of the cube's weights (the manifest's `bundle_id`)."""
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in cube.state_dict().values())).hexdigest()[:12]


def looks_pickled(path: Path) -> bool:
    """Whether a file starts like a pickle or a torch.save zip (a safetensors file starts with its
    8-byte header length, then '{')."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[8:9] == b"{":
        return False
    return head.startswith(ZIP_MAGIC) or head[:2] in PICKLE_PROTOCOLS


def code_version() -> str:
    """Installed version of the cubeqa distribution, or 'unknown' when run from a bare tree."""
    try:
        return metadata.version("cubeqa")
    except metadata.PackageNotFoundError:
        return "unknown"


def save_bundle(
    path: Path,
    cube: Cube,
    bank_texts: list[str],
    encoder: EncoderIdentity,
    *,
    bank_vectors: np.ndarray | None = None,
    reference_cube: Cube | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes a bundle directory (created if needed) and returns its path; a stale reference cube is removed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_cube(cube, path / CUBE_WEIGHTS)
    if reference_cube is not None:
        save_cube(reference_cube, path / REFERENCE_CUBE)
    else:
        (path / REFERENCE_CUBE).unlink(missing_ok=True)
    with (path / BANK).open("w", encoding="utf-8") as handle:
        for text in bank_texts:
            handle.write(json.dumps(text, ensure_ascii=False) + "\n")
    if bank_vectors is not None:
        if bank_vectors.shape != (len(bank_texts), encoder.dim):
            raise ValueError(f"bank vectors {bank_vectors.shape} do not match {len(bank_texts)} texts of dim {encoder.dim}")
        save_numpy({"vectors": np.ascontiguousarray(bank_vectors, dtype=np.float32)}, str(path / BANK_VECTORS))
    manifest = Manifest(cube_config=cube.config, encoder=encoder, bank_size=len(bank_texts), extra=dict(extra or {}))
    (path / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def save_cube(cube: Cube, path: Path) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in cube.state_dict().items()}
    save_file(state, str(path), metadata={"format_version": str(FORMAT_VERSION)})


def load_reference_cube(path: Path, config: CubeConfig) -> Cube | None:
    """The bundle's cube trained without the tower (evaluation only), or None when it ships none."""
    weights = Path(path) / REFERENCE_CUBE
    if not weights.is_file():
        return None
    cube = Cube(config)
    try:
        cube.load_state_dict(load_file(str(weights)), strict=True)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise BundleError(f"cannot read {weights}: {exc}") from exc
    return cube.eval()


def read_manifest(path: Path) -> Manifest:
    """Parses and checks `manifest.json`, naming the first missing or malformed field."""
    if not Path(path).is_dir():
        raise BundleError(f"bundle directory {path} does not exist")
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST} is missing")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise BundleError(f"{manifest_path} lacks the field(s): {', '.join(missing)}")
    if data["format_version"] != FORMAT_VERSION:
        raise IncompatibleBundle(f"{path} has bundle format {data['format_version']!r}; this code reads format {FORMAT_VERSION}")
    parsers = {"cube_config": CubeConfig.from_dict, "encoder": EncoderIdentity.from_dict, "bank": lambda bank: int(bank["size"])}
    parsed: dict[str, Any] = {}
    for name, parse in parsers.items():
        try:
            parsed[name] = parse(data.pop(name))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{manifest_path} has a malformed field {name!r}: {exc!r}") from exc
    data.pop("format_version")
    data.pop("code_version", None)
    return Manifest(cube_config=parsed["cube_config"], encoder=parsed["encoder"], bank_size=parsed["bank"], extra=data)


def check_encoder(manifest: Manifest, running: EncoderIdentity, path: Path) -> None:
    """Refuses a bundle trained with another encoder, naming both sides."""
    if not manifest.encoder.same_model(running):
        raise IncompatibleBundle(
            f"bundle {path} was trained with encoder {manifest.encoder.to_dict()} "
            f"but the running encoder is {running.to_dict()}"
        )
    if manifest.cube_config.dim != running.dim:
        raise IncompatibleBundle(f"bundle {path} maps {manifest.cube_config.dim}-D vectors; the encoder gives {running.dim}-D")


def load_bundle(path: Path, encoder: EncoderIdentity | None = None) -> Bundle:
    """Loads a bundle; with `encoder` given, refuses a mismatch with it."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory {path} does not exist")
    pickles = sorted(p.name for p in path.iterdir() if p.is_file() and (p.suffix.lower() in PICKLE_SUFFIXES or looks_pickled(p)))
    if pickles:
        raise BundleError(f"bundle {path} holds pickle-format file(s) {pickles}; only safetensors weights are loaded")
    manifest = read_manifest(path)
    if encoder is not None:
        check_encoder(manifest, encoder, path)
    try:
        cube = Cube(manifest.cube_config)
    except (RuntimeError, MemoryError) as exc:
        raise IncompatibleBundle(f"{path / MANIFEST}: its cube_config {manifest.cube_config.to_dict()} cannot be built: {exc}") from exc
    try:
        state = load_file(str(path / CUBE_WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise BundleError(f"cannot read {path / CUBE_WEIGHTS}: {exc}") from exc
    try:
        cube.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise IncompatibleBundle(f"weights in {path / CUBE_WEIGHTS} do not fit its cube_config: {exc}") from exc
    recorded = manifest.extra.get("bundle_id")
    if recorded is not None and weights_id(cube) != recorded:
        raise BundleError(
            f"weights in {path / CUBE_WEIGHTS} hash to {weights_id(cube)}, not to the manifest's bundle_id {recorded}: "
            "the file is corrupted or comes from another bundle"
        )
    cube.eval()
    texts = read_bank(path, manifest.bank_size)
    return Bundle(path=path, manifest=manifest, cube=cube, bank_texts=texts, bank_vectors=read_bank_vectors(path, len(texts), manifest.encoder.dim))


def read_bank_vectors(path: Path, count: int, dim: int) -> np.ndarray | None:
    """The bundle's stored bank embeddings, or None when it ships none."""
    vectors_path = Path(path) / BANK_VECTORS
    if not vectors_path.is_file():
        return None
    try:
        vectors = load_numpy(str(vectors_path))["vectors"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise BundleError(f"cannot read {vectors_path}: {exc!r}") from exc
    if vectors.shape != (count, dim):
        raise BundleError(f"{vectors_path} holds {vectors.shape} vectors; the bank needs ({count}, {dim})")
    return vectors


def read_bank(path: Path, expected: int) -> list[str]:
    """Reads `bank.jsonl`, checking every line is a JSON string and the count matches the manifest."""
    bank_path = Path(path) / BANK
    if not bank_path.is_file():
        raise BundleError(f"bundle {path} has no {BANK}")
    texts = [json_value(line, f"{bank_path}:{number}", str, "a string", BundleError) for number, line in numbered_lines(bank_path, BundleError)]
    if len(texts) != expected:
        raise BundleError(f"{bank_path} has {len(texts)} sentences; the manifest says {expected} (truncated?)")
    return texts


def has_decoder(bundle_dir: Path) -> bool:
    """Whether the bundle ships a generative decoder."""
    return (Path(bundle_dir) / DECODER_WEIGHTS).is_file()


def read_hybrid_threshold(bundle_dir: Path) -> float | None:
    """The hybrid threshold recorded in the decoder's record, or None when none was chosen."""
    try:
        record = json.loads((Path(bundle_dir) / DECODER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the decoder config {Path(bundle_dir) / DECODER_CONFIG}: {exc!r}") from exc
    chosen = (record.get("hybrid") or {}).get("threshold") if isinstance(record, dict) else None
    return None if chosen is None else float(chosen)


def save_threshold(bundle_dir: Path, threshold: dict[str, Any]) -> None:
    """Records the chosen hybrid threshold (without its table) in the bundle's decoder record."""
    path = Path(bundle_dir) / DECODER_CONFIG
    record = json.loads(path.read_text(encoding="utf-8"))
    record["hybrid"] = {k: v for k, v in threshold.items() if k != "table"}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
