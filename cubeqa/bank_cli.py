"""`cubeqa bank`: build, extend, list, show and remove the knowledge banks jobs answer from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from cubeqa.bank_build import BuildOptions, build_bank, build_errors
from cubeqa.cli_base import app, console, errors, fail
from cubeqa.render import STARTED_AT, progress_bar
from cubeqa.settings import Settings
from cubeqa.wiring import bank_root, bank_store, hinted, legacy_hint

bank_app = typer.Typer(help="Knowledge banks: the user's documents, split into sentences, embedded and indexed.", no_args_is_help=True)
app.add_typer(bank_app, name="bank")

PathsArg = Annotated[list[Path], typer.Argument(
    help="files (.md .rst .html .docx .txt .pdf .jsonl .csv) or folders (searched recursively)")]
KindOption = Annotated[str | None, typer.Option("--index", help="flat, hnsw or ivfpq; default: chosen by the number of sentences")]
ParamsOption = Annotated[str | None, typer.Option("--index-params", help='JSON object overriding index parameters, e.g. \'{"ef_search": 256}\'')]
SplitOption = Annotated[bool, typer.Option("--split/--no-split", help=(
    "split texts into sentences (--no-split: each line of a .txt, row of a .jsonl/.csv, paragraph or list item of a "
    "structured document, or paragraph of a PDF is one sentence, as written)"))]
SkipBadOption = Annotated[bool, typer.Option(
    "--skip-bad", help="leave out a file that cannot be read instead of stopping; the files left out are listed at the end")]
DistributedOption = Annotated[bool, typer.Option("--distributed", help="embed on the encode workers (the bank root must be on a volume they share)")]
ChunkOption = Annotated[int, typer.Option("--chunk", min=1, help="sentences per task sent to the encode workers (with --distributed)")]
WaitOption = Annotated[float, typer.Option("--wait", min=1, help="seconds without a finished chunk before --distributed gives up on the workers")]


def stage_progress(bar: Progress) -> Callable[[str, int, int], None]:
    """One bar per build stage (read, embed, index, write); a total of 0 means not yet known. What a stage's first
    report already holds was done before its bar existed (read and write report once, at their end; embed's first
    count is the cached sentences): it is counted, but not as speed, so those show no rate instead of millions a second."""
    tasks: dict[str, TaskID] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            counted: dict[str, Any] = {STARTED_AT: done}  # a task field (cubeqa.render.task_rate)
            tasks[stage] = bar.add_task(stage, total=total or None, **counted)
        bar.update(tasks[stage], completed=done, total=total or None)

    return on_progress


def index_overrides(params: str | None) -> dict[str, Any] | None:
    """--index-params as a dict, or a clear error."""
    if params is None:
        return None
    try:
        value = json.loads(params)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--index-params is not JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(value, dict):
        raise ValueError("--index-params must be a JSON object")
    return value


def run_build(
    settings: Settings, name: str, paths: list[Path], *, add: bool, replace: bool, kind: str | None, params: str | None, split: bool,
    distributed: bool = False, chunk: int = 128, wait: float = 180.0, skip_bad: bool = False,
) -> None:
    """Builds (or extends) a bank with the teacher encoder, showing progress; domain errors end as one line."""
    try:
        options = BuildOptions(add=add, replace=replace, kind=kind, index_params=index_overrides(params), split=split,
                               skip_bad=skip_bad, distributed=distributed, chunk=chunk, wait=wait)
        with progress_bar(console) as bar:
            info = build_bank(settings, name, paths, options, progress=stage_progress(bar))
    except build_errors() as exc:
        raise fail(exc) from exc
    console.print(
        f"bank [bold]{info.name}[/bold] version {info.version}: {info.sentences:,} sentences from {info.documents:,} documents, "
        f"{info.index['kind']} index, {info.size_bytes / 1e6:.1f} MB in {info.path}"
    )
    for note in info.notes:
        console.print(escape(note), style="yellow", soft_wrap=True)


def build_or_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="bank name (letters, digits, '_', '.', '-'); for add, an existing bank")],
    paths: PathsArg,
    replace: Annotated[bool, typer.Option(help="build only: replace an existing bank of this name with a new version")] = False,
    index: KindOption = None,
    index_params: ParamsOption = None,
    split: SplitOption = True,
    distributed: DistributedOption = False,
    chunk: ChunkOption = 128,
    wait: WaitOption = 180.0,
    skip_bad: SkipBadOption = False,
) -> None:
    """`bank build` and `bank add`: one set of options, told apart by the command's name."""
    add = ctx.info_name == "add"
    if add and replace:
        raise fail(ValueError("--replace is for `cubeqa bank build`; `bank add` always keeps the bank's sentences and adds a version"))
    run_build(ctx.obj, name, paths, add=add, replace=replace, kind=index, params=index_params, split=split,
              distributed=distributed, chunk=chunk, wait=wait, skip_bad=skip_bad)


bank_app.command("build", help="Build a bank from documents: sentences with their provenance, teacher embeddings, a FAISS index.")(build_or_add)
bank_app.command("add", help="Add documents to a bank as a new version (only new sentences are embedded).")(build_or_add)


@bank_app.command("list")
def list_command(ctx: typer.Context) -> None:
    """The banks: name, current version, sentences, documents, index and size."""
    from pipeline import CubeQAError

    try:
        banks = bank_store(ctx.obj).infos()
    except (CubeQAError, OSError) as exc:
        raise fail(exc) from exc
    if hint := legacy_hint(ctx.obj):
        errors.print(f"[yellow]note:[/yellow] {escape(hint)}", soft_wrap=True)
    table = Table(title=f"banks in {escape(str(bank_root(ctx.obj)))} (CUBEQA_BANK_ROOT)", title_justify="left")
    for column in ("name", "version", "sentences", "documents", "index", "MB", "built"):
        table.add_column(column, justify="right" if column in ("sentences", "documents", "MB") else "left")
    for info in banks:
        if info.problem:
            table.add_row(info.name, "-", "-", "-", "-", "-", f"[red]{info.problem}[/red]")
            continue
        built = "built in" if info.builtin else info.built_at
        table.add_row(info.name, info.version, f"{info.sentences:,}", f"{info.documents:,}", info.index["kind"], f"{info.size_bytes / 1e6:.1f}", built)
    console.print(table)


@bank_app.command("show")
def show_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="bank name")],
    as_json: Annotated[bool, typer.Option("--json", help="print the bank's record as JSON")] = False,
) -> None:
    """A bank's counts, version, size on disk, encoder, index and a few sample sentences."""
    from pipeline import CubeQAError

    try:
        with hinted(ctx.obj):
            info = bank_store(ctx.obj).show(name)
    except (CubeQAError, OSError) as exc:
        raise fail(exc) from exc
    if as_json:
        console.print_json(json.dumps(info.to_dict()))
        return
    table = Table(title=f"bank {info.name}", title_justify="left", show_header=False)
    rows = {
        "version": info.version, "versions kept": ", ".join(info.versions), "sentences": f"{info.sentences:,}",
        "documents": f"{info.documents:,}", "size on disk": f"{info.size_bytes / 1e6:.1f} MB",
        "encoder": f"{info.encoder.get('model_id')} (weights {info.encoder.get('weights_hash')})",
        "index": f"{info.index['kind']} {json.dumps(info.index.get('params', {}))}", "built": "built in" if info.builtin else info.built_at,
        "sources": ", ".join(info.sources), "path": info.path,
    }
    for key, value in rows.items():
        table.add_row(key, value)
    for i, sample in enumerate(info.samples):
        table.add_row("sample" if i == 0 else "", sample)
    console.print(table)


@bank_app.command("remove")
def remove_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="bank name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="remove without asking (scripts, no terminal)")] = False,
) -> None:
    """Remove a bank and all its versions (jobs pinned to it then fail, naming the bank); asks first unless --yes."""
    from pipeline import CubeQAError

    store = bank_store(ctx.obj)
    try:
        with hinted(ctx.obj):
            if not yes:
                info = store.show(name, samples=0)
                if info.builtin:
                    store.remove(name)  # refused with the store's own message
                versions = f"{len(info.versions)} versions, {info.sentences:,} sentences"
                question = f"remove bank {name} ({versions}) from {bank_root(ctx.obj)}?"
                if not confirmed(question):
                    raise fail(ValueError(f"bank {name} kept: nothing removed (--yes removes without asking)"))
            store.remove(name)
    except (CubeQAError, OSError) as exc:
        raise fail(exc) from exc
    console.print(f"bank {name} removed")


def confirmed(question: str) -> bool:
    """The user's yes or no (read from standard input); no answer at all (end of input) counts as no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        return False
