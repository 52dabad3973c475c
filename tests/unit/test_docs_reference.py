"""The generated reference pages (docs/hooks/reference.py) list every setting and every command option."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer
import typer.main

from cubeqa.cli import app
from cubeqa.settings import Settings

HOOK = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "reference.py"


def hook():  # a module loaded from its file: the hook is not a package
    spec = importlib.util.spec_from_file_location("docs_reference_hook", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_has_a_described_row() -> None:
    reference = hook()
    rows = {line.split("|")[1].strip(): line for line in reference.settings_page().splitlines() if line.startswith("| `CUBEQA_")}
    assert set(rows) == {f"`CUBEQA_{name.upper()}`" for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description: its reference row would say nothing"
        assert reference.cell(field.description) in rows[f"`CUBEQA_{name.upper()}`"]


def test_every_command_and_option_has_its_place() -> None:
    page = hook().commands_page()
    group = typer.main.get_command(app)
    ctx = typer.Context(group, info_name="cubeqa")
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        subs = getattr(command, "list_commands", None)
        paths += [([name, sub], command.get_command(ctx, sub)) for sub in subs(ctx)] if subs else [([name], command)]
    assert len(paths) >= 10
    for path, command in paths:
        assert f"## `cubeqa {' '.join(path)}`" in page
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert f"`{' / '.join(param.opts + param.secondary_opts)}`" in page, (path, param.name)
