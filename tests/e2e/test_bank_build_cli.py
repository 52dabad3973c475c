"""`cubeqa bank build` on a folder with an unsupported and an unreadable file: one line for each, not silence."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cubeqa.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_a_folder_build_lists_unsupported_files_and_skip_bad_reads_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    page = ROOT / "tests" / "data" / "docs" / "starlette" / "lifespan.md"
    (folder / "lifespan.md").write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "notes.txt").write_bytes("Caf\xe9 ouvert.\n".encode("latin-1"))
    (folder / "logo.png").write_bytes(b"\x89PNG")
    env = {"CUBEQA_BANK_ROOT": str(tmp_path / "banks"), "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}
    refused = CliRunner().invoke(app, ["bank", "build", "docs", str(folder)], env=env)
    assert refused.exit_code == 1 and "notes.txt: not UTF-8 text" in refused.stderr
    built = CliRunner().invoke(app, ["bank", "build", "docs", str(folder), "--skip-bad"], env=env)
    assert built.exit_code == 0, built.output
    lines = built.stdout.splitlines()
    assert f"1 unsupported file(s) not read: {folder / 'logo.png'}" in lines
    [skipped] = [line for line in lines if line.startswith("skipped: ")]
    assert skipped.startswith(f"skipped: {folder / 'notes.txt'}: not UTF-8 text at or after line 1")
    assert lines.index(f"1 unsupported file(s) not read: {folder / 'logo.png'}") > next(
        i for i, line in enumerate(lines) if line.startswith("bank docs version"))
