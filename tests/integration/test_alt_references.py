"""Alternative references (a job's `alt_answers`) through the real API, client and store: refused naming the field,
stored and shown back as `alt_references`, counted as right in the batch's quality summary; migration 0009 both ways."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest
from conftest import migrated
from jobsystem import postgres_database, store_at
from sqlalchemy import func, insert, inspect, select

from storage.models import Batch, Job, WebhookDelivery
from storage.repository import JobOutcome, NewJob, create_batch, iter_results, record_outcomes
from storage.summary import batch_summary

pytestmark = pytest.mark.services

REFERENCE = "The tower opened in 1889."
ALTERNATIVES = ["It opened in 1889.", "Its doors opened in March 1889."]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def sessions(request, tmp_path):
    with ExitStack() as stack:
        sqlite = f"sqlite:///{tmp_path / 'store.db'}"
        url = sqlite if request.param == "sqlite" else stack.enter_context(postgres_database())
        factory = migrated(url)
        yield factory
        factory.kw["bind"].dispose()


@pytest.fixture
def api(broker_url: str, tmp_path) -> Iterator[tuple[object, object]]:
    """The package's Client over the API in this process, on a SQLite store and the session's Redis database, with
    that store's sessions; no worker runs: the chains it sends are dropped afterwards."""
    import redis
    from fastapi.testclient import TestClient

    from cubeqa.api import create_app
    from cubeqa.client import Client
    from cubeqa.settings import Settings

    url = f"sqlite:///{tmp_path / 'api.db'}"
    sessions = migrated(url)
    client = Client("http://testserver")
    client.http.close()
    client.http = TestClient(create_app(Settings(database_url=url, broker_url=broker_url, bank_root=tmp_path / "banks")))
    try:
        yield client, sessions
    finally:
        client.close()
        sessions.kw["bind"].dispose()
        redis.Redis.from_url(broker_url).flushdb()


def test_the_api_stores_and_shows_alt_answers_and_refuses_a_bad_list_naming_the_field(api) -> None:
    from cubeqa.client import ClientError

    client, sessions = api
    job = client.ask("When did the tower open?", reference=REFERENCE, alt_answers=ALTERNATIVES, wait=0)
    assert job.alt_references == ALTERNATIVES and client.job(job.id).alt_references == ALTERNATIVES
    accepted = client.submit([{"question": "When?", "reference": REFERENCE, "alt_answers": ALTERNATIVES[:1]}, "Where?"])
    assert [row.alt_references for row in client.results(accepted.batch_id)] == [ALTERNATIVES[:1], None]

    before = batches(sessions)
    refusals = [
        ({"items": [{"question": "Where?"}, {"question": "When?", "reference": REFERENCE, "alt_answers": ["ok.", " "]}]},
         "/v1/batches", ["body", "items", 1, "alt_answers"], "'alt_answers[1]' is empty"),
        ({"question": "When?", "alt_answers": ALTERNATIVES}, "/v1/jobs", ["body", "alt_answers"], "needs a 'reference'"),
        ({"question": "When?", "reference": REFERENCE, "alt_answers": ["s."] * 21}, "/v1/jobs", ["body", "alt_answers"],
         "holds 21 sentences; the limit is 20"),
        ({"question": "When?", "reference": REFERENCE, "alt_answers": "In 1889."}, "/v1/jobs", ["body", "alt_answers"],
         "valid list"),  # pydantic's own check of the type
    ]
    for body, route, loc, message in refusals:
        response = client.http.post(route, json=body)
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == loc and message in error["msg"], error
    with pytest.raises(ClientError) as refused:
        client.ask("When?", reference=REFERENCE, alt_answers=["In 1889.", "\x00"], wait=0)
    assert refused.value.status == 422 and "'alt_answers[1]' contains a NUL character" in str(refused.value.detail)
    assert batches(sessions) == before  # nothing of a refused request is stored


def test_cubeqa_submit_reads_alt_answers_skips_a_bad_line_and_results_show_them(broker_url: str, tmp_path) -> None:
    """The bulk path in this process (typer's runner): a JSONL file in, the CSV and JSONL results out; no worker runs."""
    import csv
    import io
    import json
    import os

    import redis
    from typer.testing import CliRunner

    from cubeqa.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrated(url).kw["bind"].dispose()
    env: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("CUBEQA_")}
    env |= {"CUBEQA_BROKER_URL": broker_url, "CUBEQA_DATABASE_URL": url, "CUBEQA_BANK_ROOT": str(tmp_path / "banks")}
    questions = tmp_path / "alt.jsonl"
    questions.write_text("".join(json.dumps(record) + "\n" for record in [
        {"question": "When did the tower open?", "answer": REFERENCE, "alt_answers": ALTERNATIVES},
        {"question": "When?", "answer": REFERENCE, "alt_answers": [REFERENCE, 1889]},
        {"question": "Where?"},
    ]), encoding="utf-8")
    try:
        run = CliRunner().invoke(app, ["submit", str(questions)], env=env)
        assert run.exit_code == 0, run.output
        squeezed = "".join(run.output.split())  # rich wraps the long temporary path anywhere
        assert "alt.jsonl:2:'alt_answers[1]'mustbeastring,notint" in squeezed
        batch_id = " ".join(run.stdout.split()).split("batch ")[1].split(":")[0]
        table = CliRunner().invoke(app, ["results", batch_id, "--format", "csv"], env=env)
        lines = CliRunner().invoke(app, ["results", batch_id, "--format", "jsonl"], env=env)
    finally:
        redis.Redis.from_url(broker_url).flushdb()
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [(r["line"], r["alt_references"]) for r in rows] == [("1", json.dumps(ALTERNATIVES)), ("3", "")]
    assert [json.loads(line)["alt_references"] for line in lines.stdout.splitlines()] == [ALTERNATIVES, None]


def batches(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Batch))


def test_an_answer_that_is_an_alternative_counts_as_right_in_the_quality_summary(sessions) -> None:
    items = [
        NewJob("q0", REFERENCE, alt_references=tuple(ALTERNATIVES)),  # answered with an alternative: right
        NewJob("q1", REFERENCE, alt_references=tuple(ALTERNATIVES)),  # answered with the reference: right
        NewJob("q2", REFERENCE, alt_references=tuple(ALTERNATIVES)),  # another sentence: wrong
        NewJob("q3", REFERENCE),  # an alternative of the others, not of this job: wrong
        NewJob("q4", REFERENCE, alt_references=tuple(ALTERNATIVES)),  # refused, its best match an alternative: not judged
    ]
    answers = [("its doors  OPENED in march 1889.", "bank"), (REFERENCE, "bank"), ("It opened in 1890.", "bank"),
               (ALTERNATIVES[0], "bank"), (ALTERNATIVES[0], "none")]
    with sessions.begin() as session:
        batch = create_batch(session=session, items=items)
    outcomes = [JobOutcome(job_id=job_id, answer=answer, decoder_path=path, confidence=0.5)
                for job_id, (answer, path) in zip(batch.job_ids, answers)]
    with sessions.begin() as session:
        assert record_outcomes(session=session, outcomes=outcomes, model_version=None).finished == 5
    with sessions() as session:
        quality = batch_summary(session=session, batch_id=batch.id).quality
        rows = list(iter_results(session=session, batch_id=batch.id))
        unset = session.scalars(select(Job.position).where(Job.batch_id == batch.id, Job.alt_references.is_(None))).all()
    assert [row["metrics"].get("right_answer") for row in rows] == [1.0, 1.0, 0.0, 0.0, None]
    assert (quality.answered, quality.refused, quality.judged, quality.right) == (4, 1, 4, 2)
    assert quality.precision == pytest.approx(0.5)
    assert [row["alt_references"] for row in rows] == [ALTERNATIVES, ALTERNATIVES, ALTERNATIVES, None, ALTERNATIVES]
    assert unset == [3]  # SQL NULL, not JSON null


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_migration_0009_keeps_stored_rows_and_their_webhook_deliveries_both_ways(backend: str, tmp_path) -> None:
    """Rows stored at 0008 read as having no alternatives; the downgrade drops the column, and neither step drops
    (or cascades to) a row."""
    from alembic import command

    from storage.db import alembic_config, upgrade

    with store_at(backend, tmp_path, "0008") as (url, engine):
        created = datetime.now(UTC)
        with engine.begin() as connection:  # only the columns 0008 has
            connection.execute(insert(Batch.__table__).values(id="b" * 32, total=1, done_count=0, failed_count=0,
                                                              created_at=created))
            connection.execute(insert(Job.__table__).values(
                id="j" * 32, batch_id="b" * 32, position=0, question="q", reference="r", status="done", attempts=1,
                dispatches=1, created_at=created))
            connection.execute(insert(WebhookDelivery.__table__).values(
                id="d" * 32, batch_id="b" * 32, job_id="j" * 32, url="https://example.com/hook", status="pending",
                attempts=0, created_at=created, next_attempt_at=created))
        upgrade(url)
        with engine.connect() as connection:
            assert connection.execute(select(Job.alt_references)).scalar_one() is None
            assert connection.execute(select(func.count()).select_from(WebhookDelivery)).scalar_one() == 1
        command.downgrade(alembic_config(url), "0008")
        engine.dispose()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM job").scalar_one() == 1
            assert connection.exec_driver_sql("SELECT count(*) FROM webhook_delivery").scalar_one() == 1
        columns = {column["name"] for column in inspect(engine).get_columns("job")}
        assert "alt_references" not in columns and "reference" in columns
