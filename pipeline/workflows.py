"""End-to-end model workflows the CLI calls: train a bundle, evaluate a bundle on a split.

Long steps report through callbacks (embedding progress, finished epochs); nothing here prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import load_bundle, load_reference_cube, save_bundle, weights_id
from pipeline.cube import Cube, CubeConfig, apply_map
from pipeline.data import EmbeddedPairs, embed_cached, embed_pairs, file_hash, load_pairs, numbered_lines
from pipeline.encoder import TeacherEncoder
from pipeline.errors import InputError
from pipeline.evaluation import EvalReport, evaluate
from pipeline.tower import QuestionTower, TowerConfig
from pipeline.tower_io import load_tower_if_any, remove_tower, save_tower, tower_record
from pipeline.training.cube_trainer import EpochCallback, EpochReport, TrainConfig, train_cube
from pipeline.training.tower_trainer import EpochCallback as TowerEpochCallback
from pipeline.training.tower_trainer import (
    StepCallback,
    TowerEpochReport,
    TowerTrainConfig,
    lower_states,
    tower_vectors,
    train_tower,
    validation_figures,
)

EmbedProgress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class TrainOutcome:
    """A trained bundle's path, its training curve and its validation report."""

    bundle_dir: Path
    epochs: list[EpochReport]
    validation: EvalReport
    tower_epochs: list[TowerEpochReport] = field(default_factory=list)


def embedder(encoder: TeacherEncoder, label: str, on_embed: EmbedProgress | None) -> Callable[[list[str]], np.ndarray]:
    """A texts -> vectors function that reports its progress under `label`."""

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, progress=counted(label, len(texts), on_embed)).vectors

    return embed


def counted(label: str, total: int, on_embed: EmbedProgress | None) -> Callable[[int], None]:
    """A progress callback taking batch sizes that reports the running count of `total` under `label`."""
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if on_embed:
            on_embed(label, done, total)

    return step


def embed_texts(encoder: TeacherEncoder, texts: list[str], label: str, cache_dir: Path | None, on_embed: EmbedProgress | None) -> np.ndarray:
    """Vectors of `texts` from the embedding cache (keyed by the encoder's weights), embedding what is missing."""
    return embed_cached(texts, embedder(encoder, label, on_embed), cache_dir, f"enc-{encoder.identity.weights_hash}")


def load_embedded(path: Path, encoder: TeacherEncoder, cache_dir: Path | None, on_embed: EmbedProgress | None = None) -> EmbeddedPairs:
    """Reads a Q→A JSONL file and embeds it (cached by encoder hash and text hash)."""
    pairs = load_pairs(path)
    return embed_pairs(pairs, embedder(encoder, Path(path).name, on_embed), cache_dir=cache_dir, encoder_hash=encoder.identity.weights_hash)


def read_bank_file(path: Path) -> list[str]:
    """Sentences from a .txt file (one per line) or JSONL ({"answer"} or {"text"} per line)."""
    texts = []
    for number, line in numbered_lines(path):
        if Path(path).suffix != ".jsonl":
            texts.append(line.strip())
            continue
        try:
            record = json.loads(line)
            text = record.get("answer") or record.get("text")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise InputError(f"{path}:{number}: not a JSON object ({exc})") from exc
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}:{number}: no 'answer' or 'text' string")
        texts.append(text)
    return texts


def data_record(path: Path, split: EmbeddedPairs) -> dict[str, object]:
    """What the manifest says about a data file: name, content hash, size."""
    return {"file": Path(path).name, "sha256_16": file_hash(path), "pairs": len(split.pairs), "pairs_hash": split.data_hash}


def train_bundle(
    train_path: Path,
    val_path: Path,
    out_dir: Path,
    *,
    encoder: TeacherEncoder,
    cube_config: CubeConfig,
    train_config: TrainConfig,
    cache_dir: Path | None,
    tower: TowerStage | None = None,
    extra_bank: list[Path] | tuple[Path, ...] = (),
    on_embed: EmbedProgress | None = None,
    on_epoch: EpochCallback | None = None,
    resamples: int = 2000,
) -> TrainOutcome:
    """Embeds the data, trains (with `tower`) the question tower and then the cube on its vectors, each with a fixed
    schedule, evaluates on validation, writes the bundle. With a tower the bundle also keeps a cube trained the same
    way on the teacher's vectors, so `cubeqa eval` can show what the tower adds."""
    if cube_config.dim != encoder.dim:
        raise InputError(f"cube dim {cube_config.dim} differs from the encoder's {encoder.dim}")
    extra_texts = {Path(path): read_bank_file(path) for path in extra_bank}  # bad files fail before any training
    # Embedding too runs on the training thread count: float sums differ in the 7th digit between
    # thread counts, and the bundle must be the same for the same seed whatever ran before in this process.
    torch.set_num_threads(train_config.threads)
    train = load_embedded(train_path, encoder, cache_dir, on_embed)
    val = load_embedded(val_path, encoder, cache_dir, on_embed)
    tuned = None if tower is None else train_question_tower(tower, encoder, train, val, cache_dir, on_embed)
    torch.manual_seed(train_config.seed)  # the initial weights too come from the seed
    cube = Cube(cube_config)
    cube_train, cube_val = (train, val) if tuned is None else (tuned.train, tuned.val)
    epochs = train_cube(cube, cube_train, train_config, val=cube_val, on_epoch=on_epoch)
    rows: dict[str, np.ndarray] = {}
    reference = None
    if tuned is not None:
        rows["tower"] = tuned.val.q
    if tuned is not None and tower is not None and tower.reference_cube:
        torch.manual_seed(train_config.seed)
        reference = Cube(cube_config)
        train_cube(reference, train, train_config)
        rows["cube_only"] = apply_map(reference, val.q)
    report = evaluate(lambda q: apply_map(cube, q), train, val, inputs=cube_val.q, rows=rows, resamples=resamples)

    bank_texts, bank_vectors = train_bank(train)
    for path, texts in extra_texts.items():
        known = set(bank_texts)
        extra = [t for t in dict.fromkeys(texts) if t not in known]
        if extra:
            vectors = embed_texts(encoder, extra, Path(path).name, cache_dir, on_embed)
            bank_texts, bank_vectors = bank_texts + extra, np.concatenate([bank_vectors, vectors])
    save_bundle(
        out_dir,
        cube,
        bank_texts,
        encoder.identity,
        bank_vectors=bank_vectors,
        reference_cube=reference,
        extra={
            "bundle_id": weights_id(cube),
            "train_config": train_config.to_dict(),
            "data": {"train": data_record(train_path, train), "validation": data_record(val_path, val)},
            "bank_sources": [Path(train_path).name, *(Path(p).name for p in extra_bank)],
            "metrics": {"split": "validation", "file": Path(val_path).name, "size": len(val.pairs), **report.to_dict()},
            "curve": [{"epoch": e.epoch, "train_loss": e.train_loss, "val_cos": e.val_cos} for e in epochs],
            **({} if tuned is None else {"tower": tower_record(tuned.tower, tuned.record)}),
        },
    )
    if tuned is None:
        remove_tower(out_dir)  # a retrained bundle without a tower must not keep an old one
    else:
        save_tower(out_dir, tuned.tower, tuned.record)
    return TrainOutcome(bundle_dir=Path(out_dir), epochs=epochs, validation=report, tower_epochs=[] if tuned is None else tuned.epochs)


@dataclass(frozen=True)
class TowerStage:
    """The question tower's shape and training schedule, for `train_bundle`."""

    config: TowerConfig
    train: TowerTrainConfig
    on_step: StepCallback | None = None
    on_epoch: TowerEpochCallback | None = None
    reference_cube: bool = True  # also train the cube on the teacher's vectors, for eval's "cube without the tower" row


@dataclass(frozen=True)
class TunedTower:
    """A trained tower, the splits with its vectors in place of the teacher's questions, its curve and its record."""

    tower: QuestionTower
    train: EmbeddedPairs
    val: EmbeddedPairs
    epochs: list[TowerEpochReport]
    record: dict[str, object]


def train_question_tower(
    stage: TowerStage, encoder: TeacherEncoder, train: EmbeddedPairs, val: EmbeddedPairs, cache_dir: Path | None, on_embed: EmbedProgress | None
) -> TunedTower:
    """Trains a tower on `train` (lower-layer states cached once per question set) and returns both splits' tower vectors."""
    torch.manual_seed(stage.train.seed)
    tower = QuestionTower(encoder, stage.config)
    train_states, val_states = (
        lower_states(tower, texts, cache_dir=cache_dir, progress=counted(f"tower: {label}", len(texts), on_embed))
        for label, texts in (("train questions", [p.question for p in train.pairs]), ("validation questions", [p.question for p in val.pairs]))
    )
    started = time.perf_counter()
    epochs = train_tower(tower, train, train_states, stage.train, val=val, val_states=val_states, on_step=stage.on_step, on_epoch=stage.on_epoch)
    val_vectors = tower_vectors(tower, val_states)
    record = {
        "train_config": stage.train.to_dict(),
        "train_seconds": round(time.perf_counter() - started, 1),
        "validation": validation_figures(val_vectors, train, val),
        "curve": [{"epoch": e.epoch, "train_loss": e.train_loss, "seconds": e.seconds} for e in epochs],
        "data": {"train": train.data_hash, "validation": val.data_hash},
    }
    return TunedTower(
        tower=tower,
        train=replace(train, q=tower_vectors(tower, train_states)),
        val=replace(val, q=val_vectors),
        epochs=epochs,
        record=record,
    )


def train_bank(train: EmbeddedPairs) -> tuple[list[str], np.ndarray]:
    """The unique training answers in first-seen order, with their vectors."""
    rows: dict[str, int] = {}
    for row, pair in enumerate(train.pairs):
        rows.setdefault(pair.answer, row)
    return list(rows), train.a[list(rows.values())]


def evaluate_bundle(
    bundle_dir: Path,
    data_path: Path,
    train_path: Path,
    *,
    encoder: TeacherEncoder,
    cache_dir: Path | None,
    on_embed: EmbedProgress | None = None,
    resamples: int = 2000,
) -> EvalReport:
    """The bundle's cube against every baseline on one split (baselines fit on `train_path`)."""
    bundle = load_bundle(bundle_dir, encoder.identity)
    train = load_embedded(train_path, encoder, cache_dir, on_embed)
    split = load_embedded(data_path, encoder, cache_dir, on_embed)
    tower = load_tower_if_any(bundle_dir, encoder)
    inputs, rows = None, {}
    if tower is not None:
        inputs = tower.encode_both([pair.question for pair in split.pairs], batch_size=encoder.config.batch_size).tower
        rows["tower"] = inputs
        reference = load_reference_cube(bundle_dir, bundle.manifest.cube_config)
        if reference is not None:
            rows["cube_only"] = apply_map(reference, split.q)
    report = evaluate(lambda q: apply_map(bundle.cube, q), train, split, inputs=inputs, rows=rows, resamples=resamples)
    trained_on = bundle.manifest.extra.get("data", {}).get("train", {}).get("pairs_hash")
    if trained_on and trained_on != train.data_hash:
        report.warnings.append(f"baselines are fit on {Path(train_path).name}, which is not the data the bundle was trained on")
    return report
