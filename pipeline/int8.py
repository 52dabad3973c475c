"""int8 serving runtime: the teacher and the question tower as quantised ONNX graphs run by ONNX Runtime.

Torch-free: tokenises with the `tokenizers` package from the model directory's tokenizer.json, so a
worker on this runtime never imports torch or transformers. The files, written by
pipeline.runtime_export (`cubeqa export`, and `cubeqa train` at its end):

    bundle/runtime/
      runtime.json        format, opset, quantisation config, the hashes of the torch weights each
                          graph came from and of the graph files themselves, parity figures
      encoder.int8.onnx   teacher: token ids -> unit vector (mean pooling and L2 norm in the graph)
      tower_lower.int8.onnx   the tower's shared lower layers: token ids -> hidden states (B, L, D)
      tower_tuned.int8.onnx   its tuned top: hidden states -> tower vector
      tower_frozen.int8.onnx  the teacher's frozen top: hidden states -> teacher vector
                          (three graphs because ONNX Runtime runs a whole graph whatever outputs are asked for:
                          one graph with both tops costs 10 layers for a job that needs only the tower's 6)

Loading refuses graphs whose recorded torch-weight hash or own hash does not match, naming both sides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.encoding import (
    DEFAULT_MODEL_ID,
    Encoded,
    EncoderConfig,
    EncoderIdentity,
    TowerEncoded,
    check_texts,
    default_model_dir,
    hash_weights,
)
from pipeline.errors import BundleError, EncoderError, IncompatibleBundle

RUNTIMES = ("auto", "torch", "int8")  # auto: int8 on the CPU when the bundle has its files, else torch
# Texts per int8 call. Activations are quantised per call (one scale over the whole input), so a text's vector
# would depend on the texts beside it: in micro-batches of 16, 3 of 240 answers changed with their neighbours (9
# reranked). One text a call keeps every vector its own, and the job system's throughput is the same
# (docs/performance.md: 315 against 317 questions/s).
TEXTS_PER_CALL = 1
RUNTIME_DIR = "runtime"
RUNTIME_MANIFEST = "runtime.json"
FORMAT = 1
ENCODER_FILE = "encoder.int8.onnx"
TOWER_FILES = {part: f"tower_{part}.int8.onnx" for part in ("lower", "tuned", "frozen")}
TOWER_WEIGHTS = "tower.safetensors"  # pipeline.tower_io.WEIGHTS, named here without importing torch
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

Features = dict[str, list[np.ndarray]]


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, first 16 hex digits."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def has_runtime(bundle_dir: Path) -> bool:
    """Whether a bundle holds exported int8 runtime files."""
    return (Path(bundle_dir) / RUNTIME_DIR / RUNTIME_MANIFEST).is_file()


def read_runtime(bundle_dir: Path) -> dict[str, Any]:
    """runtime.json of a bundle, or a BundleError saying how to make it."""
    path = Path(bundle_dir) / RUNTIME_DIR / RUNTIME_MANIFEST
    if not path.is_file():
        raise BundleError(
            f"bundle {bundle_dir} has no int8 runtime ({path} is missing): run `cubeqa export --bundle {bundle_dir}`"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        record["encoder"]["file"], record["encoder"]["torch_weights"]  # noqa: B018 - both keys must be present
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{path} is not an int8 runtime manifest ({exc!r})") from exc
    if record.get("format") != FORMAT:
        raise BundleError(f"{path} has format {record.get('format')!r}; this version reads format {FORMAT}")
    return record


def check_graph(bundle_dir: Path, entry: dict[str, Any], torch_weights: str, what: str) -> Path:
    """The graph file of one runtime.json entry, refused unless it and the torch weights it came from match."""
    check_weights(bundle_dir, entry, torch_weights, what)
    return check_file(bundle_dir, entry)


def check_weights(bundle_dir: Path, entry: dict[str, Any], torch_weights: str, what: str) -> None:
    """Refuses graphs exported from other torch weights than the bundle's, naming both hashes."""
    if entry["torch_weights"] != torch_weights:
        raise IncompatibleBundle(
            f"the int8 {what} graph(s) in {Path(bundle_dir) / RUNTIME_DIR} were exported from {what} weights "
            f"{entry['torch_weights']}, but the {what} weights here hash to "
            f"{torch_weights}: re-export with `cubeqa export --bundle {bundle_dir}`"
        )


def check_file(bundle_dir: Path, entry: dict[str, Any]) -> Path:
    """A graph file whose own hash is the one runtime.json records."""
    path = Path(bundle_dir) / RUNTIME_DIR / str(entry["file"])
    if not path.is_file():
        raise BundleError(f"{path} is missing: re-export with `cubeqa export --bundle {bundle_dir}`")
    found = file_hash(path)
    if found != entry.get("sha256"):
        raise BundleError(
            f"{path} hashes to {found}, but runtime.json records {entry.get('sha256')}: corrupted, or another export's"
        )
    return path


class Tokenizer:
    """The teacher's tokenizer (tokenizer.json) cut to max_length, as pipeline.encoder cuts it."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise EncoderError(
                f"encoder directory {model_dir} has no tokenizer.json (the int8 runtime needs a fast tokenizer)"
            )
        self.tokenizer = RustTokenizer.from_file(str(path))
        self.tokenizer.no_padding()  # padding is per batch, to the batch's longest
        self.tokenizer.enable_truncation(max_length)
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> tuple[Features, np.ndarray]:
        """Token ids (and type ids) of every text, cut to max_length, and which texts were cut."""
        check_texts(texts)
        encodings = self.tokenizer.encode_batch(texts)
        features = {
            "input_ids": [np.asarray(e.ids, np.int64) for e in encodings],
            "token_type_ids": [np.asarray(e.type_ids, np.int64) for e in encodings],
        }
        return features, np.array([bool(e.overflowing) for e in encodings], bool)


def pad(features: Features, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One batch of the given rows, zero-padded to its longest: each input (B, L) int64."""
    width = max(len(features["input_ids"][r]) for r in rows)
    batch = {name: np.zeros((len(rows), width), np.int64) for name in TOKEN_INPUTS}
    for i, r in enumerate(rows):
        n = len(features["input_ids"][r])
        batch["input_ids"][i, :n] = features["input_ids"][r]
        batch["token_type_ids"][i, :n] = features["token_type_ids"][r]
        batch["attention_mask"][i, :n] = 1
    return batch


def by_length(features: Features, size: int) -> list[np.ndarray]:
    """Row batches of at most `size`, longest texts first, so each batch pads little."""
    order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
    return [order[start : start + size] for start in range(0, len(order), size)]


def make_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session; `threads` intra-op threads (0: ORT's default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graphs are one chain of layers: nothing to run side by side
    options.log_severity_level = 3  # warnings would print below the edge
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_identity(model_dir: Path) -> EncoderIdentity:
    """The encoder identity pipeline.encoder gives the same directory, read without transformers."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    default = Path(model_dir).resolve() == default_model_dir().resolve()
    name = str(config.get("_name_or_path") or "")
    model_id = (
        DEFAULT_MODEL_ID if default else (name if name and not Path(name).is_absolute() else Path(model_dir).name)
    )
    return EncoderIdentity(
        model_id=model_id, dim=int(config["hidden_size"]), weights_hash=hash_weights(Path(model_dir))
    )


def max_length_of(model_dir: Path, wanted: int) -> int:
    """The configured length capped by the tokenizer's model_max_length, as pipeline.encoder caps it."""
    path = Path(model_dir) / "tokenizer_config.json"
    limit = json.loads(path.read_text(encoding="utf-8")).get("model_max_length") if path.is_file() else None
    return min(wanted, int(limit)) if isinstance(limit, int | float) and limit > 0 else wanted


class Int8Encoder:
    """The teacher on the int8 runtime: the same `encode` and `identity` as pipeline.encoder.TeacherEncoder."""

    def __init__(self, bundle_dir: Path, config: EncoderConfig | None = None, threads: int = 0) -> None:
        self.config = config or EncoderConfig()
        model_dir = Path(self.config.model_dir) if self.config.model_dir else default_model_dir()
        if not (model_dir / "config.json").is_file():
            raise EncoderError(f"encoder directory {model_dir} has no config.json")
        self.model_dir = model_dir
        self.identity = model_identity(model_dir)
        self.record = read_runtime(bundle_dir)
        path = check_graph(bundle_dir, self.record["encoder"], self.identity.weights_hash, "encoder")
        self.tokenizer = Tokenizer(model_dir, max_length_of(model_dir, self.config.max_length))
        self.session = make_session(path, threads)

    @property
    def dim(self) -> int:
        return self.identity.dim

    def tokenize(self, texts: list[str]) -> tuple[Features, np.ndarray]:
        """Token ids of every text, cut to max_length, and which texts were cut."""
        return self.tokenizer(texts)

    def encode(self, texts: list[str], progress: Callable[[int], None] | None = None) -> Encoded:
        """Unit vectors (N, D) in input order, batched by token count; raises InputError on empty text."""
        features, truncated = self.tokenizer(texts)
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for rows in by_length(features, self.config.batch_size):
            vectors[rows] = self.session.run(["vector"], pad(features, rows))[0]
            if progress:
                progress(len(rows))
        return Encoded(vectors, truncated)


class Int8Tower:
    """The question tower on the int8 runtime: the same `encode_both` as pipeline.tower.QuestionTower."""

    def __init__(self, bundle_dir: Path, encoder: Int8Encoder, threads: int = 0) -> None:
        entry = encoder.record.get("tower")
        if entry is None:
            raise BundleError(f"bundle {bundle_dir} has a question tower but its int8 runtime has none: re-export it")
        check_weights(bundle_dir, entry, file_hash(Path(bundle_dir) / TOWER_WEIGHTS), "tower")
        self.encoder = encoder
        self.sessions = {
            part: make_session(check_file(bundle_dir, graph), threads) for part, graph in entry["graphs"].items()
        }

    def encode_both(
        self, texts: list[str], batch_size: int | None = None, teacher_rows: Sequence[bool] | None = None
    ) -> TowerEncoded:
        """Teacher and tower vectors (N, D) from one pass of the shared layers; rows not in `teacher_rows` get a zero
        teacher vector, as the torch tower gives them."""
        dim = self.encoder.dim
        features, truncated = self.encoder.tokenize(texts)
        wanted = np.ones(len(texts), bool) if teacher_rows is None else np.asarray(teacher_rows, bool)
        if wanted.shape != (len(texts),):
            raise ValueError(f"teacher_rows has {wanted.shape[0]} entries for {len(texts)} texts")
        teacher = np.zeros((len(texts), dim), np.float32)
        tower = np.zeros((len(texts), dim), np.float32)
        for rows in by_length(features, batch_size or self.encoder.config.batch_size):
            tokens = pad(features, rows)
            hidden = self.sessions["lower"].run(["hidden"], tokens)[0]  # (B, L, D)
            mask = tokens["attention_mask"]
            tower[rows] = self.sessions["tuned"].run(["vector"], {"hidden": hidden, "attention_mask": mask})[0]
            keep = wanted[rows]
            if keep.any():
                feed = {"hidden": hidden[keep], "attention_mask": mask[keep]}
                teacher[rows[keep]] = self.sessions["frozen"].run(["vector"], feed)[0]
        return TowerEncoded(teacher, tower, truncated)
