"""The front door's modules: no import circles, no lint comments that silence nothing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
CLI_FILES = ("cubeqa/cli.py", "cubeqa/cli_base.py", "cubeqa/decoder_cli.py", "cubeqa/render.py")


def test_no_cubeqa_module_imports_one_that_imports_it_back() -> None:
    graph = grimp.build_graph("cubeqa")
    circles = sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    )
    assert circles == []


def test_the_command_modules_register_on_one_app_without_the_cli_module() -> None:
    graph = grimp.build_graph("cubeqa")
    for module in ("cubeqa.cli_base", "cubeqa.decoder_cli", "cubeqa.jobs_cli", "cubeqa.services_cli", "cubeqa.render"):
        assert not graph.chain_exists(importer=module, imported="cubeqa.cli"), module


def test_noqa_comments_name_only_rules_ruff_selects_and_nothing_is_type_ignored() -> None:
    selected = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["select"]
    for name in CLI_FILES:
        text = (ROOT / name).read_text()
        assert "type: ignore" not in text, name
        for codes in re.findall(r"#\s*noqa:\s*([A-Z0-9, ]+)", text):
            for code in re.split(r"[,\s]+", codes.strip()):
                assert re.match(r"[A-Z]+", code)[0] in selected, f"{name}: noqa {code} names a rule ruff does not run"


def test_evidence_names_the_file_the_title_and_the_section_once() -> None:
    from cubeqa.cli import evidence_place

    full = {"doc_id": "d1", "source": "/docs/guide/timeouts.md", "title": "Timeouts", "section": ["Timeouts", "Write timeout"]}
    assert evidence_place(full) == "timeouts.md › Timeouts › Write timeout"
    assert evidence_place({"doc_id": "d2", "source": None, "title": None, "section": []}) == "d2"
    assert evidence_place({"doc_id": "d3", "title": "Kenya"}) == "Kenya"
