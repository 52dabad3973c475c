"""Saves and loads a question tower: its tuned layers as safetensors plus a JSON config.

The config records the teacher's identity; a tower tuned on another encoder is refused on load,
because its layers expect that encoder's lower-layer states.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from pipeline.encoder import EncoderIdentity, TeacherEncoder
from pipeline.errors import BundleError, IncompatibleBundle
from pipeline.tower import QuestionTower, TowerConfig

WEIGHTS = "tower.safetensors"
CONFIG = "tower.json"
FORMAT = 1


def tower_weights_id(tower: QuestionTower) -> str:
    """A short hash of the tuned layers' weights, recorded in tower.json and checked on load."""
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tower.state_dict().values())).hexdigest()[:12]


def tower_record(tower: QuestionTower, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON config of a tower (what a bundle manifest records about it)."""
    return {
        "format": FORMAT,
        "weights": WEIGHTS,
        "weights_id": tower_weights_id(tower),
        "config": tower.config.to_dict(),
        "encoder": tower.identity.to_dict(),
        "split": tower.split,
        **(extra or {}),
    }


def save_tower(directory: Path, tower: QuestionTower, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes tower.safetensors (the tuned layers only) and tower.json into `directory`; returns the record."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in tower.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    record = tower_record(tower, extra)
    (directory / CONFIG).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def read_record(directory: Path) -> dict[str, Any]:
    """tower.json of a saved tower, or a BundleError naming what is missing or malformed."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise BundleError(f"no {CONFIG} in tower directory {directory}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        record["config"], record["encoder"]  # noqa: B018 - both keys must be present
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{path} is not a tower config ({exc})") from exc
    if record.get("format") != FORMAT:
        raise BundleError(f"{path} has format {record.get('format')!r}; this version reads format {FORMAT}")
    return record


def load_tower(directory: Path, encoder: TeacherEncoder) -> QuestionTower:
    """The saved tower on top of the running teacher; refuses a tower tuned on another encoder."""
    record = read_record(directory)
    trained_on = EncoderIdentity.from_dict(record["encoder"])
    if not trained_on.same_model(encoder.identity):
        raise IncompatibleBundle(
            f"tower in {directory} was tuned on encoder {trained_on.model_id} (weights {trained_on.weights_hash}, "
            f"dim {trained_on.dim}); the running encoder is {encoder.identity.model_id} "
            f"(weights {encoder.identity.weights_hash}, dim {encoder.identity.dim})"
        )
    tower = QuestionTower(encoder, TowerConfig.from_dict(record["config"]))
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise BundleError(f"no {WEIGHTS} in tower directory {directory}")
    try:
        state = load_file(str(weights), device=str(encoder.device))
        tower.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise BundleError(f"{weights} does not fit the tower its config describes: {exc}") from exc
    recorded = record.get("weights_id")
    if recorded is not None and tower_weights_id(tower) != recorded:
        raise BundleError(f"{weights} hashes to {tower_weights_id(tower)}, not to its tower.json's weights_id {recorded}: corrupted or from another tower")
    tower.eval()
    return tower


def remove_tower(directory: Path) -> None:
    """Deletes a tower's files from a directory (a bundle retrained without a tower)."""
    for name in (WEIGHTS, CONFIG):
        (Path(directory) / name).unlink(missing_ok=True)


def has_tower(directory: Path) -> bool:
    """Whether a bundle (or tower directory) holds a question tower."""
    return (Path(directory) / CONFIG).is_file()


def load_tower_if_any(directory: Path, encoder: TeacherEncoder) -> QuestionTower | None:
    """The bundle's tower on top of the running teacher, or None for a bundle without one (the cube takes the teacher's vector)."""
    return load_tower(directory, encoder) if has_tower(directory) else None

