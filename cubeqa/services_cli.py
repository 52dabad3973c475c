"""Long-running services: stage workers, the HTTP API, Flower, and the embedded demo."""

from __future__ import annotations

import os
import re
import socket
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cubeqa.cli_base import app, console, fail
from cubeqa.settings import Settings
from cubeqa.wiring import worker_options
from storage.db import StorageError

# functional form: a class body member named `encode` would shadow str.encode
Stage = StrEnum(
    "Stage", {"encode": "encode", "cube": "cube", "decode": "decode", "rerank": "rerank", "all": "all", "hooks": "hooks"}
)


class Pool(StrEnum):
    threads = "threads"
    prefork = "prefork"


@app.command("worker")
def worker_command(
    ctx: typer.Context,
    stage: Annotated[Stage, typer.Option(
        help="the stage this worker serves: encode, cube, decode, rerank or all; hooks: the webhook deliveries")],
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default CUBEQA_DEVICE)")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="tasks run at once (threads sharing one model copy, or prefork processes with a copy each); default: one per usable CPU core for encode and all on the CPU, 4 for hooks, else 1"),
    ] = None,
    pool: Annotated[Pool, typer.Option(help="threads: one process; prefork: one child process per slot, hard time limits enforced")] = Pool.threads,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run a Celery worker for one stage's queue; its model loads once per worker process (per child under prefork)."""
    settings: Settings = ctx.obj
    if device is not None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise fail(ValueError(f"--device {device!r}: use cpu, cuda or cuda:N"))
        settings = settings.model_copy(update={"device": device})
    from tasks.runtime import StageUnavailable
    from workers.main import run_worker

    try:
        run_worker(worker_options(settings, stage.value, concurrency, loglevel, pool.value))
    except (StorageError, StageUnavailable) as exc:  # nothing was consumed; a supervisor restarts it and shows why
        raise fail(exc) from exc


@app.command("health")
def health_command(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(min=0.5, help="seconds to wait for each stage's answer")] = 10.0,
    stage: Annotated[list[Stage] | None, typer.Option(help="check only this stage (repeatable)")] = None,
) -> None:
    """Prove each stage is consuming (rerank only for a bundle with a reranker): a ping task goes through its queue;
    exit 1 if a stage does not answer."""
    from cubeqa.wiring import celery_app
    from tasks.app import served_stages
    from tasks.health import probe_stages

    celery_app(ctx.obj)
    stages = tuple(s.value for s in stage or [] if s.value != "all") or served_stages(ctx.obj.bundle_dir)
    try:
        results = probe_stages(timeout, stages)
    except Exception as exc:  # broker unreachable: any transport error is one line
        raise fail(ConnectionError(f"broker unreachable: {exc}")) from exc
    for result in results:
        if result.ok:
            console.print(f"{result.stage:7} ok       answered by {result.worker} in {1000 * (result.seconds or 0.0):.0f} ms")
        elif result.worker:
            problem = escape(f"{result.worker}: {result.problem}")
            console.print(f"{result.stage:7} [red]failing[/red]  {problem}", soft_wrap=True)
        else:
            silent = f"no live worker consumed a ping on queue {result.stage} within {timeout:.1f} s"
            console.print(f"{result.stage:7} [red]silent[/red]   {silent}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command("api")
def api_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="address to listen on (default CUBEQA_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port to listen on (default CUBEQA_API_PORT)")] = None,
) -> None:
    """Serve the HTTP API (FastAPI) and the dashboard at /dashboard; OpenAPI docs at /docs (served offline)."""
    import uvicorn

    from cubeqa.api import create_app

    settings: Settings = with_address(ctx.obj, "api", host, port)
    try:
        application = create_app(settings)
    except StorageError as exc:
        raise fail(exc) from exc
    uvicorn.run(application, host=settings.api_host, port=settings.api_port, log_level="info")


def with_address(settings: Settings, service: str, host: str | None, port: int | None) -> Settings:
    """Settings with the service's listen address replaced by the command-line options given."""
    update = {f"{service}_{name}": value for name, value in (("host", host), ("port", port)) if value is not None}
    return settings.model_copy(update=update) if update else settings


def flower_command_line(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The Flower command and environment; the broker URL and the basic-auth secret go in the environment,
    not argv (any user on the host can read a process's command line)."""
    # -A: an app that accepts the workers' msgpack replies and knows the stage queues (cubeqa/flower_app.py).
    argv = [sys.executable, "-m", "celery", "-A", "cubeqa.flower_app", "flower", f"--port={settings.flower_port}", f"--address={settings.flower_host}"]
    # Flower reads FLOWER_* as options and Celery's --broker reads BROKER_URL: no inherited ones.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_") and k != "BROKER_URL"}
    env["CELERY_BROKER_URL"] = settings.broker_url
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    return argv, env


def check_free(host: str, port: int) -> None:
    """Raises OSError naming the address when nothing could listen on it (Flower would die with a long traceback)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado binds: a TIME_WAIT port is free
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(f"cannot listen on {host}:{port}: {reason} (use --port or CUBEQA_FLOWER_PORT)") from exc


@app.command("flower")
def flower_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="address to listen on (default CUBEQA_FLOWER_HOST)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port to listen on (default CUBEQA_FLOWER_PORT)")] = None,
) -> None:
    """Start Flower on the configured broker (basic auth from CUBEQA_FLOWER_BASIC_AUTH when set)."""
    settings = with_address(ctx.obj, "flower", host, port)
    try:
        check_free(settings.flower_host, settings.flower_port)
    except OSError as exc:
        raise fail(exc) from exc
    argv, env = flower_command_line(settings)
    console.print(f"Flower on {settings.flower_host}:{settings.flower_port}" + (" with basic auth" if settings.flower_basic_auth else " without auth"))
    sys.stdout.flush()
    # This process becomes Flower: a signal to `cubeqa flower` (kill -TERM, a container stop) reaches Flower itself.
    os.execve(sys.executable, argv, env)


@app.command("demo")
def demo_command(
    ctx: typer.Context,
    questions: Annotated[int, typer.Option(min=1, max=5000, help="sample questions to submit")] = 24,
    data: Annotated[
        Path | None, typer.Option(help="Q→A JSONL of questions (with references) about the demo bank's articles; default: the sample shipped in the package")
    ] = None,
) -> None:
    """Run the whole job system on this machine: embedded Redis, SQLite, one worker per stage, a bank built from sample
    documents and questions about them."""
    from cubeqa.demo import SAMPLE_QUESTIONS, DemoError, run_demo

    try:
        run_demo(ctx.obj, questions=questions, data=data or SAMPLE_QUESTIONS, console=console)
    except DemoError as exc:
        raise fail(exc) from exc
