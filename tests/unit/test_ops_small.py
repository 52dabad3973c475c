"""Small operational promises: a failed bank build leaves no folder, `bank remove` asks, Flower's busy port is one
line, the bank root is the same whatever the database, and a stalled batch is noticed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_knowledge_helpers import IDENTITY, hash_embed
from typer.testing import CliRunner

from cubeqa.cli import app
from cubeqa.services_cli import check_free
from cubeqa.settings import Settings
from cubeqa.waiting import Stall
from cubeqa.wiring import bank_root, legacy_hint
from pipeline.errors import InputError
from pipeline.knowledge.store import BankStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "pumps.txt").write_text("The pump runs on twelve volts. Check the fuse first.\n", encoding="utf-8")
    return folder


def test_a_failed_first_build_leaves_no_bank_folder(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path / "banks")
    with pytest.raises(InputError):
        store.build("empty", [tmp_path / "nothing-here"], embed=hash_embed, encoder_identity=IDENTITY)

    def broken(texts: list[str]):
        raise RuntimeError("embedding failed")

    with pytest.raises(RuntimeError):
        store.build("broken", [docs], embed=broken, encoder_identity=IDENTITY)
    assert not (tmp_path / "banks" / "empty").exists() and not (tmp_path / "banks" / "broken").exists()
    assert store.build("broken", [docs], embed=hash_embed, encoder_identity=IDENTITY).sentences == 2  # the name is free


def test_a_failed_rebuild_keeps_the_bank(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path / "banks")
    version = store.build("manual", [docs], embed=hash_embed, encoder_identity=IDENTITY).version
    with pytest.raises(InputError):
        store.build("manual", [tmp_path / "nothing-here"], embed=hash_embed, encoder_identity=IDENTITY, replace=True)
    assert store.resolve("manual") == version


def cli(root: Path, *args: str, answer: str | None = None):
    env = {"CUBEQA_BANK_ROOT": str(root), "CUBEQA_DATABASE_URL": f"sqlite:///{root.parent / 'x.db'}", "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env, input=answer)


def test_bank_remove_asks_unless_yes(tmp_path: Path, docs: Path) -> None:
    root = tmp_path / "banks"
    store = BankStore(root)
    store.build("manual", [docs], embed=hash_embed, encoder_identity=IDENTITY)
    kept = cli(root, "bank", "remove", "manual", answer="n\n")
    assert kept.exit_code == 1 and "remove bank manual (1 versions, 2 sentences)" in kept.output
    assert "nothing removed" in kept.output and store.resolve("manual")
    assert cli(root, "bank", "remove", "manual", answer="").exit_code == 1  # no answer (end of input) is no
    assert store.resolve("manual")
    removed = cli(root, "bank", "remove", "manual", answer="y\n")
    assert removed.exit_code == 0 and not (root / "manual").exists()
    store.build("manual", [docs], embed=hash_embed, encoder_identity=IDENTITY)
    assert cli(root, "bank", "remove", "manual", "--yes").exit_code == 0 and not (root / "manual").exists()
    missing = cli(root, "bank", "remove", "manual")
    assert missing.exit_code == 1 and f"no bank named 'manual' in {root}" in " ".join(missing.output.split())


def test_flower_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*in use"):
            check_free("127.0.0.1", port)
        run = CliRunner().invoke(app, ["flower", "--port", str(port)], env={"CUBEQA_FLOWER_HOST": "127.0.0.1"})
    assert run.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in run.output
    assert "Traceback" not in run.output and len(run.output.strip().splitlines()) == 1


def test_the_bank_root_ignores_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("CUBEQA_BANK_ROOT", raising=False)
    roots = {bank_root(Settings(database_url=url)) for url in
             ("sqlite:///cubeqa.db", f"sqlite:///{tmp_path}/a/b.db", "postgresql+psycopg://u@db/cubeqa")}
    assert roots == {tmp_path / "data" / "cubeqa" / "banks"}
    assert bank_root(Settings(bank_root=tmp_path / "shared")) == tmp_path / "shared"


def test_banks_in_the_old_location_get_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docs: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cubeqa.db'}", cache_dir=tmp_path / "cache")
    assert legacy_hint(settings) == ""
    BankStore(tmp_path / "cubeqa-banks").build("old", [docs], embed=hash_embed, encoder_identity=IDENTITY)
    hint = legacy_hint(settings)
    assert f"old location {tmp_path / 'cubeqa-banks'}" in hint and f"CUBEQA_BANK_ROOT={tmp_path / 'cubeqa-banks'}" in hint


def test_a_stall_is_told_after_the_setting_and_again_every_period() -> None:
    now = [0.0]
    stall = Stall(60, clock=lambda: now[0])
    told = []
    for second, progress in [(10, 0), (50, 0), (69, 0), (71, 0), (100, 0), (131, 0), (140, 1), (150, 1), (201, 1)]:
        now[0] = second
        told.append(stall.update(progress))
    assert told == [None, None, None, 71 - 10, None, 131 - 10, None, None, 201 - 140]
