"""The typer app every command module registers on, and the helpers they share."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local directories only

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from cubeqa.settings import Settings
from cubeqa.wiring import encoder_config

if TYPE_CHECKING:
    from pipeline.encoder import EncoderConfig, TeacherEncoder

app = typer.Typer(help="Question answering through a trained 3D lattice of cells.", no_args_is_help=True, add_completion=False)
console = Console()
errors = Console(stderr=True)
DATA_DIR = Path("data")  # where the commands look for the Q→A splits by default

def print_version(asked: bool) -> None:
    """`cubeqa --version`: the installed distribution's version, then exit."""
    if asked:
        console.print(f"cubeqa {version('cubeqa')}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    show_version: Annotated[
        bool, typer.Option("--version", callback=print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Reads settings from CUBEQA_* environment variables."""
    try:
        ctx.obj = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ", ".join(f"CUBEQA_{str(part).upper()}" for part in error["loc"]) or "settings"
            errors.print(f"[red]invalid setting[/red] {where}: {error['msg']}")
        raise typer.Exit(2) from exc


def fail(exc: Exception) -> typer.Exit:
    """A domain error as one line on stderr, exit status 1 (its text is never read as console markup:
    file names, keys and ids come from the user)."""
    errors.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # one line, however narrow the terminal
    return typer.Exit(1)


def embed_progress(bar: Progress) -> Callable[[str, int, int], None]:
    """A progress callback that keeps one bar per (file, text count)."""
    tasks: dict[tuple[str, int], TaskID] = {}

    def on_embed(label: str, done: int, total: int) -> None:
        if (label, total) not in tasks:  # at the first report: its texts' time is unknown, the rate counts from here
            tasks[(label, total)] = bar.add_task(f"embed {label} ({total} texts)", total=total, completed=done)
        bar.update(tasks[(label, total)], completed=done)

    return on_embed


def build_encoder_config(settings: Settings) -> EncoderConfig:
    """EncoderConfig from settings, with the thread cap applied to this process."""
    from pipeline.production import set_threads

    set_threads(settings.threads)
    return encoder_config(settings)


def build_encoder(settings: Settings) -> TeacherEncoder:
    """The teacher encoder the settings describe (pipeline is imported here: `--help` stays quick)."""
    from pipeline.encoder import TeacherEncoder

    return TeacherEncoder(build_encoder_config(settings))
