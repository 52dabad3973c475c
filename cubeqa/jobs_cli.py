"""Job-system commands: db upgrade/check, submit, status, batches, results, reconcile."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterable
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cubeqa.cli_base import app, console, errors, fail
from cubeqa.intake import MAX_MICRO_BATCH, IntakeError, check_callback_url, check_key, read_bulk
from cubeqa.render import confidence_text, progress_bar
from cubeqa.settings import Settings
from cubeqa.waiting import Stall, queued_too_long, why_waiting
from cubeqa.wiring import celery_app, hook_policy, open_store, pin_bank
from pipeline.errors import BankError, InputError
from storage.db import StorageError, upgrade
from storage.hooks import deliveries_of
from storage.ids import AmbiguousId, resolve_id
from storage.models import SOURCE_LENGTH, Batch, is_id
from storage.quality import QUALITY_FIGURES, quality_texts
from storage.repository import iter_results
from storage.summary import BatchSummary, batch_summary, count_batches, list_batches
from tasks.producer import BrokerUnavailable, reconcile, submit

db_app = typer.Typer(help="The SQL store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

MAX_SHOWN_REJECTS = 20


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to this version (Alembic)."""
    settings: Settings = ctx.obj
    try:
        upgrade(settings.database_url)
    except Exception as exc:  # driver and Alembic errors differ per backend
        raise fail(StorageError(f"cannot upgrade {safe_url(settings.database_url)}: {exc}")) from exc
    console.print(f"database {safe_url(settings.database_url)} is at the current schema")


@db_app.command("check")
def db_check(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(min=0, help="keep checking for up to this many seconds (e.g. in an init container)")] = 0,
) -> None:
    """Exit 0 when the database answers and its schema is current, 1 otherwise (saying why)."""
    settings: Settings = ctx.obj
    deadline = time.monotonic() + wait
    while True:
        try:
            open_store(settings).kw["bind"].dispose()
            console.print(f"database {safe_url(settings.database_url)} is at the current schema")
            return
        except StorageError as exc:
            if time.monotonic() >= deadline:
                raise fail(exc) from exc
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


@app.command("submit")
def submit_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="questions: .jsonl objects or .csv rows with a 'question' (and optional 'reference') field; .jsonl objects may add 'alt_answers'")],
    wait: Annotated[bool, typer.Option(help="show progress until every job is final")] = False,
    batch_size: Annotated[int | None, typer.Option(min=1, max=MAX_MICRO_BATCH, help="jobs per micro-batch task (default CUBEQA_MICRO_BATCH)")] = None,
    key: Annotated[str | None, typer.Option(help="idempotency key: resubmitting with the same key is a no-op")] = None,
    bank: Annotated[str | None, typer.Option(help="knowledge bank to answer from (default CUBEQA_BANK); its current version is pinned")] = None,
    min_confidence: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="answers less likely right than this become 'no confident answer' (default CUBEQA_MIN_CONFIDENCE)")
    ] = None,
    rerank: Annotated[bool | None, typer.Option(
        "--rerank/--no-rerank", help="answer through the rerank stage (default CUBEQA_RERANK, when the bundle has a reranker)")] = None,
    callback: Annotated[str | None, typer.Option(
        metavar="URL", help="POST the batch's summary here, signed, once every job is final (see docs/user-guide.md, Webhooks)")] = None,
) -> None:
    """Submit a bulk file: bad lines are reported with their line numbers; the good ones are queued."""
    settings: Settings = ctx.obj
    try:
        key = None if key is None else check_key(key)
        hook = check_callback_url(callback, hook_policy(settings))
        pin = pin_bank(settings, bank, min_confidence, rerank)  # an unknown bank is refused before anything is read or stored
        intake = read_bulk(file, max_chars=settings.max_question_chars, max_items=settings.max_batch_items)
    except (ValueError, IntakeError, BankError, InputError) as exc:
        raise fail(exc) from exc
    show_rejected(file, intake.rejected)
    if not intake.jobs:
        raise fail(ValueError(f"{file}: no valid questions to submit"))
    source = str(file)[-SOURCE_LENGTH:]  # a label; the store keeps its last SOURCE_LENGTH characters
    try:
        sessions = open_store(settings)
        celery_app(settings)
        with progress_bar(console, transient=True) as bar:
            sending = bar.add_task("send", total=len(intake.jobs))
            result = submit(
                sessions, intake.jobs, micro_batch=batch_size or settings.micro_batch, key=key, source=source, pin=pin,
                on_sent=lambda n: bar.advance(sending, n), callback=hook,
            )
    except (StorageError, BrokerUnavailable) as exc:
        raise fail(exc) from exc
    if result.created:
        console.print(
            f"batch [bold]{result.batch_id}[/bold]: {result.sent} jobs queued, {len(intake.rejected)} lines skipped "
            f"(bank {escape(f'{pin.bank}@{pin.bank_version}')})"
        )
    else:
        console.print(f"batch [bold]{result.batch_id}[/bold] already exists for key {escape(repr(key))}: nothing submitted")
        existing = summary_of(sessions, result.batch_id)
        if existing is not None and (existing.total != len(intake.jobs) or existing.source != source):
            errors.print(
                "[yellow]warning:[/yellow] "
                + escape(
                    f"key {key!r} belongs to a batch of {existing.total} jobs from {existing.source}; "
                    f"this submission has {len(intake.jobs)} from {file}. Use a new key to submit it."
                )
            )
    if wait:
        summary = watch(sessions, result.batch_id, warn_after=settings.queue_wait_warn)
        console.print(summary_table(summary))


def show_rejected(file: Path, rejected: list[tuple[int, str]]) -> None:
    """The bad lines of a bulk file, the first MAX_SHOWN_REJECTS by number, then how many more."""
    for line, reason in rejected[:MAX_SHOWN_REJECTS]:
        errors.print(f"[yellow]skipped[/yellow] {escape(f'{file}:{line}: {reason}')}")
    if len(rejected) > MAX_SHOWN_REJECTS:
        errors.print(f"[yellow]skipped[/yellow] {len(rejected) - MAX_SHOWN_REJECTS} more bad lines")


def summary_of(sessions: sessionmaker[Session], batch_id: str) -> BatchSummary | None:
    """The batch's summary, read in a session of its own (None if unknown)."""
    if not is_id(batch_id):
        return None
    with sessions() as session:
        return batch_summary(session=session, batch_id=batch_id)


def watch(
    sessions: sessionmaker[Session], batch_id: str, poll: float = 0.5, warn_after: float | None = None
) -> BatchSummary:
    """A progress bar with rate and ETA until every job of the batch is final; after `warn_after` seconds
    without progress, a line saying why it waits (the stage queues no live worker consumes)."""
    summary = summary_of(sessions, batch_id)
    assert summary is not None
    stall = Stall(warn_after) if warn_after else None
    with progress_bar(console) as bar:
        task = bar.add_task(f"batch {batch_id}", total=summary.total, completed=final_jobs(summary))
        while not summary.finished:
            time.sleep(poll)
            summary = summary_of(sessions, batch_id)
            assert summary is not None
            bar.update(task, completed=final_jobs(summary), description=f"batch {batch_id} ({summary.failed} failed)")
            progress = (summary.done, summary.failed, summary.counts.get("running"), summary.state)
            if stall and (idle := stall.update(progress)) is not None:
                paused = f"the batch is paused: `cubeqa resume {batch_id}` sends its held jobs"
                reason = paused if summary.state == "paused" else why_waiting(idle)
                bar.console.print(f"[yellow]waiting:[/yellow] {escape(reason)}", soft_wrap=True)
    return summary


def final_jobs(summary: BatchSummary) -> int:
    """Jobs done, failed or cancelled."""
    return summary.done + summary.failed + summary.cancelled


def summary_table(summary: BatchSummary) -> Table:
    """Counts, the quality summary (storage.quality), throughput and quality metrics of a batch."""
    table = Table(title=f"batch {summary.id}" + (f" ({summary.source})" if summary.source else ""), title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("state", summary.state)
    for status, count in summary.counts.items():
        table.add_row(f"jobs {status}", str(count))
    table.add_row("bank", escape(", ".join(summary.banks) or "bundle"))
    texts = quality_texts(summary.quality)
    for key, label, _ in QUALITY_FIGURES:
        table.add_row(label, texts[key])
    table.add_row("jobs/s", "-" if summary.jobs_per_second is None else f"{summary.jobs_per_second:.1f}")
    for name, stats in summary.metrics.items():
        table.add_row(f"{name} mean / p50 / p90 (n={int(stats['n'])})", f"{stats['mean']:.4f} / {stats['p50']:.4f} / {stats['p90']:.4f}")
    return table


def load_summary(settings: Settings, given: str) -> tuple[sessionmaker[Session], BatchSummary]:
    """Sessions on the store and the summary of the batch `given` names (its id or a unique prefix of 6+ characters);
    fails naming the batch if it is unknown, or listing the matches if the prefix is ambiguous."""
    sessions = store(settings)
    try:
        with sessions() as session:
            batch_id = resolve_id(session=session, model=Batch, given=given)
    except AmbiguousId as exc:
        raise fail(exc) from exc
    summary = summary_of(sessions, batch_id) if batch_id else None
    if summary is None:
        raise fail(LookupError(f"no batch {given!r} in {safe_url(settings.database_url)}"))
    return sessions, summary


@app.command("status")
def status_command(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="batch id printed by `cubeqa submit`, or its first 6+ characters")],
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    wait: Annotated[bool, typer.Option(help="show progress until every job is final")] = False,
) -> None:
    """Progress and quality aggregates of a batch."""
    settings: Settings = ctx.obj
    sessions, summary = load_summary(settings, batch)
    if wait:
        celery_app(settings)
        summary = watch(sessions, summary.id, warn_after=settings.queue_wait_warn)
    elif not summary.finished:
        celery_app(settings)
        if note := queued_too_long(sessions, settings.queue_wait_warn, summary.id):
            errors.print(f"[yellow]waiting:[/yellow] {escape(note)}", soft_wrap=True)
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        console.print(summary_table(summary))
        with sessions() as session:
            for line in webhook_lines(deliveries_of(session=session, batch_id=summary.id)):
                console.print(line, soft_wrap=True)


def webhook_lines(deliveries: list[dict[str, Any]]) -> list[str]:
    """One line per webhook delivery of the batch (its own and its jobs'): where, its state, attempts, last outcome."""
    lines = []
    for d in deliveries:
        outcome = d["last_error"] or (f"HTTP {d['last_status_code']}" if d["last_status_code"] else "not tried yet")
        whose = "batch" if d["job_id"] is None else f"job {d['job_id'][:SHORT_ID]}"
        lines.append(escape(f"webhook ({whose}) {d['url']}: {d['status']} after {d['attempts']} attempt(s), {outcome}"))
    return lines


def store(settings: Settings) -> sessionmaker[Session]:
    try:
        return open_store(settings)
    except StorageError as exc:
        raise fail(exc) from exc


@app.command("batches")
def batches_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=500, help="batches to show")] = 20,
    offset: Annotated[int, typer.Option(min=0, max=2**31 - 1, help="newest batches to skip")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the batches as JSON")] = False,
    interactive: Annotated[bool, typer.Option(
        "--interactive", help="also list the one-job batches of single questions (POST /v1/jobs, ask --api)")] = False,
) -> None:
    """Batches newest first, with their progress (single questions' one-job batches with --interactive)."""
    with store(ctx.obj)() as session:
        page = list_batches(session=session, offset=offset, limit=limit, interactive=interactive)
        total = count_batches(session=session, interactive=interactive)
    if as_json:
        print(json.dumps({"batches": [s.to_dict() for s in page], "total": total, "offset": offset, "limit": limit}, indent=2))
        return
    title = f"batches {offset + 1 if page else offset}-{offset + len(page)} of {total}, newest first, times UTC"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("id", no_wrap=True)  # the dashboard's short id; every command takes it
    table.add_column("created", no_wrap=True)
    table.add_column("source", overflow="ellipsis", max_width=24)
    table.add_column("bank", overflow="ellipsis", max_width=16)
    for column in ("jobs", "done", "failed"):
        table.add_column(column, justify="right")
    table.add_column("state", no_wrap=True)
    for s in page:
        table.add_row(
            s.id[:SHORT_ID], s.created_at.strftime("%m-%d %H:%M"), escape(Path(s.source).name if s.source else ""),
            escape(", ".join(b.split("@")[0] for b in s.banks) or "bundle"), str(s.total), str(s.done), str(s.failed),
            s.state,
        )
    console.print(table)


SHORT_ID = 12  # characters of an id shown in listings, as on the dashboard


class ResultFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


CSV_FIELDS = (
    "line", "question", "reference", "alt_references", "status", "answer", "confidence", "decoder_path", "score", "error",
    "model_version", "bank", "bank_version", "min_confidence", "rerank", "id",
)
NESTED = ("metrics", "timings_ms", "hosts")  # one CSV column per key: metrics.e2e_cos, timings_ms.encode, hosts.decode
# evidence.<name> columns; section: the headings joined by " › "; context: before + after
EVIDENCE = ("sentence", "doc_id", "title", "source", "position", "section", "context", "rerank")


def csv_columns(sessions: sessionmaker[Session], batch_id: str) -> list[str]:
    """The flat columns, with one per metric, timing and host key any job of the batch has (a first pass over it)."""
    keys: dict[str, dict[str, None]] = {name: {} for name in NESTED}
    with sessions() as session:
        for row in iter_results(session=session, batch_id=batch_id):
            for name in NESTED:
                keys[name].update(dict.fromkeys(row[name]))
    evidence = [f"evidence.{name}" for name in EVIDENCE]
    return [*CSV_FIELDS[:-1], *evidence, *(f"{name}.{key}" for name in NESTED for key in keys[name]), CSV_FIELDS[-1]]


def flat(row: dict[str, object]) -> dict[str, object]:
    """A result row with its evidence, metrics, timings and hosts as columns of their own (alternatives stay in the JSONL)."""
    out = {k: v for k, v in row.items() if k not in NESTED and k != "evidence"}
    if row.get("alt_references"):  # a JSON list in one cell: a sentence may hold any separator
        out["alt_references"] = json.dumps(row["alt_references"], ensure_ascii=False)
    for name in NESTED:
        nested = row[name]
        assert isinstance(nested, dict)
        out.update({f"{name}.{key}": value for key, value in nested.items()})
    evidence = row.get("evidence")
    if isinstance(evidence, dict):
        out.update({f"evidence.{name}": evidence.get(name) for name in EVIDENCE[:-2]})
        out["evidence.section"] = " › ".join(str(part) for part in listed(evidence.get("section")))
        out["evidence.context"] = " ".join(str(part) for part in (*listed(evidence.get("before")), *listed(evidence.get("after"))))
    return out


def listed(value: object) -> list[object]:
    """Neighbouring sentences as a list, whether stored as one string or several."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def results_table(rows: Iterable[dict[str, Any]]) -> Table:
    """Line, status, answer (or error) and confidence of each job, for reading at a terminal."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="--format jsonl|csv or --out FILE for every field", caption_justify="left")
    table.add_column("line", justify="right")
    table.add_column("status")
    table.add_column("question", ratio=1, overflow="fold")
    table.add_column("answer", ratio=2, overflow="fold")
    table.add_column("conf.", justify="right")
    for row in rows:
        confidence = row.get("confidence")
        table.add_row(
            str(row.get("line") or ""), str(row["status"]), escape(str(row.get("question") or "")),
            escape(str(row.get("error") or row.get("answer") or "")), "-" if confidence is None else confidence_text(confidence),
        )
    return table


@app.command("results")
def results_command(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="batch id, or its first 6+ characters")],
    fmt: Annotated[
        ResultFormat | None, typer.Option("--format", help="jsonl or csv; default: a table on a terminal, else jsonl")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write here instead of standard output")] = None,
) -> None:
    """Every job of a batch in input order, with answers, metrics, timings and hosts."""
    sessions, summary = load_summary(ctx.obj, batch)
    batch = summary.id
    if fmt is None and out is None and sys.stdout.isatty():
        with sessions() as session:
            console.print(results_table(iter_results(session=session, batch_id=batch)))
        return
    fmt = fmt or ResultFormat.jsonl
    handle = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        if fmt == ResultFormat.jsonl:
            with sessions() as session:
                for row in iter_results(session=session, batch_id=batch):
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(handle, fieldnames=csv_columns(sessions, batch), extrasaction="ignore")
            writer.writeheader()
            with sessions() as session:
                for row in iter_results(session=session, batch_id=batch):
                    writer.writerow(flat(row))
    finally:
        if out:
            handle.close()


@app.command("reconcile")
def reconcile_command(
    ctx: typer.Context,
    every: Annotated[float | None, typer.Option(min=1, help="repeat every SECONDS until interrupted")] = None,
    after: Annotated[int | None, typer.Option(min=1, help="re-send jobs unfinished this many seconds (default CUBEQA_RECONCILE_AFTER)")] = None,
) -> None:
    """Re-send jobs stuck in a non-final state past a deadline, from SQL (Redis may have lost them)."""
    settings: Settings = ctx.obj
    sessions = store(settings)
    celery_app(settings)
    deadline = timedelta(seconds=after or settings.reconcile_after)
    while True:
        try:
            report = reconcile(sessions, after=deadline, max_attempts=settings.max_attempts, micro_batch=settings.micro_batch)
            console.print(f"re-sent {report.resent} stuck jobs, failed {report.failed} after {settings.max_attempts} attempts"
                          + (f", re-sent {report.hooks} webhook deliveries" if report.hooks else ""))
        except (BrokerUnavailable, OperationalError) as exc:
            if every is None:
                raise fail(exc) from exc
            errors.print(f"[yellow]will retry:[/yellow] {str(exc).splitlines()[0]}")
        if every is None:
            return
        time.sleep(every)
