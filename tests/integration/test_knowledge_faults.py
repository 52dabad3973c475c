"""Bank builds in other processes: a SIGKILLed build leaves the old version serving; a second build is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from test_knowledge_helpers import IDENTITY, hash_embed  # noqa: E402

from pipeline.errors import BankBusy  # noqa: E402
from pipeline.knowledge.store import EMBED_BATCH, BankStore  # noqa: E402

# Builds bank "kb" from argv[2] under root argv[1]; on reaching stage argv[4] (after some work), touches
# the marker argv[3] and sleeps, so the test can kill it there or find its lock held.
BUILDER = """
import sys, time
sys.path[:0] = [{root!r}, {unit!r}]
from test_knowledge_helpers import IDENTITY, hash_embed
from pipeline.knowledge.store import BankStore
root, docs, marker, stage, cache = sys.argv[1:6]

def progress(name, done, total):
    if name == stage and (done > 0 or stage != "embed"):
        open(marker, "w").close()
        time.sleep(600)

BankStore(root).build("kb", [docs], embed=hash_embed, encoder_identity=IDENTITY, replace=True, split=False,
                      cache_dir=cache, progress=progress)
"""


def rows_file(path: Path, count: int, tag: str) -> Path:
    path.write_text("".join(json.dumps({"id": f"{tag}{i}", "text": f"{tag} sentence {i}."}) + "\n" for i in range(count)), encoding="utf-8")
    return path


def start_builder(tmp_path: Path, docs: Path, stage: str) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "builder.py"
    script.write_text(BUILDER.format(root=str(ROOT), unit=str(ROOT / "tests" / "unit")), encoding="utf-8")
    marker = tmp_path / f"reached-{stage}"
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "banks"), str(docs), str(marker), stage, str(tmp_path / "cache")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the builder exited with {process.returncode} before reaching {stage}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the builder never reached {stage}")
        time.sleep(0.05)
    return process, marker


class CountingEmbed:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, texts: list[str]):
        self.count += len(texts)
        return hash_embed(texts)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["embed", "write"])
def test_a_build_killed_mid_way_leaves_the_old_version_serving_and_a_rerun_completes(tmp_path: Path, stage: str) -> None:
    store = BankStore(tmp_path / "banks")
    old = store.build("kb", [rows_file(tmp_path / "old.jsonl", 10, "old")], embed=hash_embed, encoder_identity=IDENTITY, split=False)
    new_docs = rows_file(tmp_path / "new.jsonl", 3 * EMBED_BATCH, "new")
    process, _ = start_builder(tmp_path, new_docs, stage)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL

    assert store.resolve("kb") == old.version
    bank = store.load("kb", encoder_identity=IDENTITY)
    assert bank.texts[0] == "old sentence 0." and len(bank) == 10
    if stage == "write":
        assert list((tmp_path / "banks" / "kb").glob(".build-*"))  # the killed build's half-written version

    embed = CountingEmbed()
    new = store.build("kb", [new_docs], embed=embed, encoder_identity=IDENTITY, replace=True, split=False, cache_dir=tmp_path / "cache")
    assert store.resolve("kb") == new.version != old.version and new.sentences == 3 * EMBED_BATCH
    assert not list((tmp_path / "banks" / "kb").glob(".build-*"))
    assert embed.count <= 2 * EMBED_BATCH  # the killed build's first batch (or all of them) came from the cache
    assert store.load("kb", old.version, encoder_identity=IDENTITY).texts == bank.texts  # kept for pinned jobs


@pytest.mark.slow
def test_a_second_build_of_one_name_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    docs = rows_file(tmp_path / "rows.jsonl", 5, "row")
    process, _ = start_builder(tmp_path, docs, "read")
    try:
        store = BankStore(tmp_path / "banks")
        with pytest.raises(BankBusy, match=rf"bank 'kb' is being built, added to or removed by another process \(pid {process.pid}\)"):
            store.build("kb", [docs], embed=hash_embed, encoder_identity=IDENTITY, replace=True)
        with pytest.raises(BankBusy):
            store.remove("kb")
        other = store.build("other", [docs], embed=hash_embed, encoder_identity=IDENTITY)  # other names are free
        assert other.sentences == 5
    finally:
        process.kill()
        process.wait(timeout=60)
    info = BankStore(tmp_path / "banks").build("kb", [docs], embed=hash_embed, encoder_identity=IDENTITY)  # the kernel dropped the lock
    assert info.sentences == 5
