"""mkdocs hook: writes the commands and settings reference pages from the code at build time.

The pages come from the typer app (`cubeqa.cli.app`) and the `Settings` class, so they cannot
drift from what `cubeqa --help` and the environment accept. They are generated in memory
(`File.generated`), never written into docs/.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Any

COMMANDS_PAGE = "reference/commands.md"
SETTINGS_PAGE = "reference/settings.md"


def cell(text: object) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def shown_default(value: Any) -> str:
    """A default as a user would type it; nothing for no default."""
    if value is None or value == () or value == []:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def param_type(param: Any, ctx: Any) -> str:
    """The parameter's type as `--help` shows it (typer >= 0.20 renders it itself)."""
    if hasattr(param, "display_type"):
        return param.display_type(ctx)
    return f"<{param.type.name}>"


def command_section(command: Any, ctx: Any, path: list[str]) -> list[str]:
    """One command's usage, help and parameter table; a group recurses into its subcommands."""
    import typer

    lines = [f"## `{' '.join(path)}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    lines += ["```", command.get_usage(ctx), "```", ""]
    params = [p for p in command.get_params(ctx) if p.name != "help" and not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument or option | type | default | meaning |", "|---|---|---|---|"]
        for param in params:
            name = " / ".join(param.opts + param.secondary_opts) if param.param_type_name == "option" else param.name.upper()
            required = " (required)" if param.required else ""
            repeat = " (repeatable)" if getattr(param, "multiple", False) else ""
            lines.append(
                f"| `{cell(name)}`{required}{repeat} | `{cell(param_type(param, ctx))}` "
                f"| {cell(shown_default(param.get_default(ctx)))} | {cell(getattr(param, 'help', '') or '')} |"
            )
        lines.append("")
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        lines += command_section(sub, typer.Context(sub, info_name=name, parent=ctx), [*path, name])
    return lines


def commands_page() -> str:
    """Every `cubeqa` command and option, from the typer app."""
    import typer
    import typer.main

    from cubeqa.cli import app

    group = typer.main.get_command(app)
    ctx = typer.Context(group, info_name="cubeqa")
    lines = [
        "# Commands",
        "",
        "Generated from the typer app (`cubeqa.cli.app`) when the site is built; `cubeqa COMMAND --help` "
        "prints the same. Every command reads its settings from `CUBEQA_*` variables ([Settings](settings.md)). "
        "An error is one line on stderr with exit status 1 (2 for a bad setting).",
        "",
    ]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if not getattr(command, "hidden", False):
            lines += command_section(command, typer.Context(command, info_name=name, parent=ctx), ["cubeqa", name])
    return "\n".join(lines) + "\n"


def settings_default(field: Any) -> str:
    """A field's default: the value, or what its default factory says it returns."""
    if field.default_factory is not None:
        return cell((field.default_factory.__doc__ or "computed").strip().rstrip("."))
    return shown_default(field.default)


def constraints(field: Any) -> str:
    """Bounds and patterns the field enforces, as `ge 1`, `pattern ...`."""
    shown = []
    for item in field.metadata:
        for key in ("ge", "gt", "le", "lt", "pattern"):
            if getattr(item, key, None) is not None:
                shown.append(f"{key} {getattr(item, key)}")
    return cell(", ".join(shown))


def settings_page() -> str:
    """Every `CUBEQA_*` variable, from the `Settings` class."""
    from cubeqa.settings import Settings

    lines = [
        "# Settings",
        "",
        "Generated from `cubeqa.settings.Settings` when the site is built. Each field is read from the "
        "environment variable `CUBEQA_<FIELD>`; a misspelt `CUBEQA_*` variable is an error, not silently "
        "ignored. Model hyperparameters (lattice shape, channels, steps, boundary) live in the bundle's "
        "`manifest.json`, not here.",
        "",
        "| variable | type | default | limits | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        kind = field.annotation.__name__ if isinstance(field.annotation, type) else str(field.annotation)
        for module in ("typing.", "pathlib.", "pydantic.types."):
            kind = kind.replace(module, "")
        lines.append(
            f"| `CUBEQA_{name.upper()}` | `{cell(kind)}` | {settings_default(field)} | {constraints(field)} "
            f"| {cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def on_files(files: Any, config: Any) -> Any:
    """Adds the two generated pages to the site's files before the nav is built."""
    from mkdocs.structure.files import File

    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # the checkout's code, also when the project is not installed
    for uri, content in ((COMMANDS_PAGE, commands_page()), (SETTINGS_PAGE, settings_page())):
        files.append(File.generated(config, uri, content=content))
    return files
