"""`cubeqa cancel`, `pause`, `resume` and `retry`: a batch's (or a job's) fate, written to the SQL store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.orm import Session, sessionmaker

from cubeqa.cli_base import app, console, fail
from cubeqa.jobs_cli import store
from cubeqa.settings import Settings
from cubeqa.wiring import celery_app
from storage.control import ControlError
from storage.ids import AmbiguousId, resolve_id
from storage.models import Batch, Job
from storage.summary import batch_summary
from tasks import control
from tasks.producer import BrokerUnavailable

BatchArg = Annotated[str, typer.Argument(help="batch id printed by `cubeqa submit`, or its first 6+ characters")]
DONE_WORDS = {"cancel": "cancelled", "pause": "waiting", "resume": "resumed", "retry": "retried"}


Model = type[Batch] | type[Job]


def target(sessions: sessionmaker[Session], given: str, models: tuple[Model, ...]) -> tuple[Model, str]:
    """The table and full id of the one batch or job `given` names; fails naming it when none or several do."""
    found: list[tuple[Model, str]] = []
    try:
        with sessions() as session:
            for model in models:
                full = resolve_id(session=session, model=model, given=given)
                if full is not None and session.get(model, full) is not None:  # a full-length id is not looked up
                    found.append((model, full))
    except AmbiguousId as exc:
        raise fail(exc) from exc
    if not found:
        raise fail(LookupError(f"no {' or '.join(m.__tablename__ for m in models)} {given!r}"))
    if len(found) > 1:
        raise fail(LookupError(f"{given!r} is the start of a batch id and a job id: give more characters"))
    return found[0]


Action = Callable[[sessionmaker[Session], str], control.ControlReport]


def run(settings: Settings, given: str, actions: dict[Model, Action]) -> None:
    """Runs the action for what `given` names (a batch, or a job where `actions` has one) and prints what it did and
    the batch's state; one line and exit 1 when the control does not fit the state or the broker is down."""
    sessions = store(settings)
    celery_app(settings)
    model, full_id = target(sessions, given, tuple(actions))
    try:
        report = actions[model](sessions, full_id)
    except (ControlError, BrokerUnavailable) as exc:
        raise fail(exc) from exc
    with sessions() as session:
        summary = batch_summary(session=session, batch_id=report.batch_id)
    assert summary is not None  # batches are never deleted
    what = f"{model.__tablename__} {full_id}"
    sent = f", {report.sent} sent" if report.action in ("resume", "retry") else ""
    console.print(
        f"{escape(what)}: {report.jobs} jobs {DONE_WORDS[report.action]}{sent}; batch {summary.id} is {summary.state} "
        f"({summary.done} done, {summary.failed} failed, {summary.cancelled} cancelled of {summary.total})"
    )


@app.command("cancel")
def cancel_command(
    ctx: typer.Context,
    given: Annotated[str, typer.Argument(metavar="BATCH|JOB", help="a batch or job id, or its first 6+ characters")],
) -> None:
    """Cancel a batch's unfinished jobs, or one job: no result is written for them afterwards."""
    run(ctx.obj, given, {Batch: control.cancel, Job: control.cancel_one})


@app.command("pause")
def pause_command(ctx: typer.Context, batch: BatchArg) -> None:
    """Pause a batch: its micro-batches not yet started wait until `cubeqa resume` (started ones finish)."""
    run(ctx.obj, batch, {Batch: control.pause})


@app.command("resume")
def resume_command(ctx: typer.Context, batch: BatchArg) -> None:
    """Resume a paused batch: the jobs its pause held are sent again."""
    settings: Settings = ctx.obj
    run(settings, batch, {Batch: lambda sessions, full_id: control.resume(sessions, full_id, settings.micro_batch)})


@app.command("retry")
def retry_command(
    ctx: typer.Context,
    batch: BatchArg,
    failed: Annotated[bool, typer.Option("--failed/--no-failed", help="retry the jobs that failed")] = True,
    refused: Annotated[bool, typer.Option(
        "--refused/--no-refused", help="retry the jobs answered 'no confident answer' too")] = False,
) -> None:
    """New attempts of a batch's failed (and refused) jobs: same ids, attempt count up; answered jobs stay."""
    settings: Settings = ctx.obj

    def retry(sessions: sessionmaker[Session], full_id: str) -> control.ControlReport:
        return control.retry(sessions, full_id, settings.micro_batch, failed=failed, refused=refused)

    run(settings, batch, {Batch: retry})
