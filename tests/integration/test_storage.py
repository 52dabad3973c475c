"""The SQL store on real SQLite and PostgreSQL: idempotent result writes, exact counters, summaries, schema checks."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
from conftest import migrated
from jobsystem import postgres_database, store_at

from storage.db import StorageError, check_schema, make_engine
from storage.models import METRIC_COLUMNS
from storage.repository import (
    CreatedBatch,
    JobOutcome,
    NewJob,
    Pin,
    create_batch,
    iter_results,
    mark_running,
    record_outcomes,
    stale_jobs,
    unfinished_jobs,
)
from storage.summary import batch_summary, count_batches, list_batches

pytestmark = pytest.mark.services


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def sessions(request, tmp_path):
    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else stack.enter_context(postgres_database())
        factory = migrated(url)
        yield factory
        factory.kw["bind"].dispose()


def new_batch(sessions, items: list[NewJob], key: str | None = None) -> CreatedBatch:
    with sessions.begin() as session:
        return create_batch(session=session, items=items, key=key)


def queued(sessions, batch_id: str) -> list:
    with sessions() as session:
        return unfinished_jobs(session=session, batch_id=batch_id)


def write(sessions, outcomes: list[JobOutcome], model_version: str | None) -> int:
    with sessions.begin() as session:
        return record_outcomes(session=session, outcomes=outcomes, model_version=model_version).finished


def summary(sessions, batch_id: str):
    with sessions() as session:
        return batch_summary(session=session, batch_id=batch_id)


def done(job_id: str, cube_cos: float) -> JobOutcome:
    return JobOutcome(job_id=job_id, answer="a", decoder_path="bank", score=0.5, metrics={"cube_cos": cube_cos}, timings_ms={"encode": 1.0})


def test_concurrent_writes_of_the_same_results_count_each_job_once(sessions) -> None:
    """Two decode tasks finishing the same redelivered micro-batch at once: the second waits on the first's
    claim and then finds every job final."""
    from concurrent.futures import ThreadPoolExecutor

    batch_id = new_batch(sessions, [NewJob(f"q{i}") for i in range(40)]).id
    jobs = queued(sessions, batch_id)
    outcomes = [done(j.id, 0.5) if i % 4 else JobOutcome(job_id=j.id, error="bad input") for i, j in enumerate(jobs)]
    for expected in (40, 0):  # four writers race; then four more find everything final
        with ThreadPoolExecutor(max_workers=4) as pool:
            finished = list(pool.map(lambda _: write(sessions, outcomes, "default@x"), range(4)))
        assert sum(finished) == expected
    result = summary(sessions, batch_id)
    assert (result.done, result.failed, result.total, result.finished) == (30, 10, 40, True)


def test_a_failed_job_stores_sql_null_not_json_null(sessions) -> None:
    from sqlalchemy import select

    from storage.models import Job

    batch_id = new_batch(sessions, [NewJob("q1")]).id
    (job,) = queued(sessions, batch_id)
    write(sessions, [JobOutcome(job_id=job.id, error="bad input")], None)
    with sessions() as session:
        assert session.scalar(select(Job.id).where(Job.metrics.is_(None), Job.hosts.is_(None), Job.timings_ms.is_(None))) == job.id


def test_a_repeated_result_write_changes_nothing(sessions) -> None:
    batch = new_batch(sessions, [NewJob("q1", "r1"), NewJob("q2"), NewJob("q3")])
    batch_id = batch.id
    assert batch.created
    jobs = queued(sessions, batch_id)
    assert batch.job_ids == [j.id for j in jobs]  # the ids come back from the write, in input order
    with sessions.begin() as session:
        mark_running(session=session, job_ids=[j.id for j in jobs])
    first = [done(jobs[0].id, 0.6), JobOutcome(job_id=jobs[1].id, error="bad input")]
    assert write(sessions, first, "default@x") == 2
    assert write(sessions, first, "default@x") == 0  # redelivered: no second result
    assert write(sessions, [done(jobs[1].id, 0.9)], "default@x") == 0  # a failed job stays failed
    result = summary(sessions, batch_id)
    assert (result.done, result.failed, result.total, result.finished) == (1, 1, 3, False)
    assert result.counts == {"queued": 0, "running": 1, "paused": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert write(sessions, [done(jobs[2].id, 0.8)], "default@x") == 1
    result = summary(sessions, batch_id)
    assert result.finished and result.finished_at is not None
    assert result.no_error_rate == pytest.approx(2 / 3)
    assert result.metrics["cube_cos"] == {"mean": pytest.approx(0.7), "p50": pytest.approx(0.7), "p90": pytest.approx(0.78), "n": 2}
    with sessions() as session:
        rows = list(iter_results(session=session, batch_id=batch_id))
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert rows[1]["error"] == "bad input" and rows[1]["answer"] is None
    assert rows[0]["attempts"] == 1 and rows[0]["model_version"] == "default@x"


def metric_rows(sessions, job_ids: list[str]) -> list[dict]:
    """The METRIC_COLUMNS of these jobs, in this order."""
    from sqlalchemy import select

    from storage.models import METRIC_COLUMNS, Job

    with sessions() as session:
        found = {row.id: row._asdict() for row in session.execute(select(Job.id, *(getattr(Job, name) for name in METRIC_COLUMNS)))}
    return [{name: found[job_id][name] for name in METRIC_COLUMNS} for job_id in job_ids]


def test_a_stored_result_fills_the_metric_columns_from_its_metrics(sessions) -> None:
    every = {"cube_cos": 0.61, "identity_cos": 0.52, "e2e_cos": 0.73, "decode_fidelity": 0.84, "echo": 1.0}
    unanswered = {"decode_fidelity": 0.25, "cube_cos": -0.125, "identity_cos": 0.0}  # no decoder answer: no e2e_cos, no echo
    batch = new_batch(sessions, [NewJob("q1"), NewJob("q2"), NewJob("q3"), NewJob("q4")])
    outcomes = [
        JobOutcome(job_id=batch.job_ids[0], answer="a", decoder_path="bank", score=0.5, metrics=every | {"truncated": 1.0}),
        JobOutcome(job_id=batch.job_ids[1], decoder_path="none", score=0.1, metrics=unanswered),
        JobOutcome(job_id=batch.job_ids[2], error="bad input", metrics=every),  # a failed job keeps no metrics
    ]
    assert write(sessions, outcomes, "default@x") == 3
    none = dict.fromkeys(METRIC_COLUMNS)  # no reference: no right_answer either
    assert metric_rows(sessions, batch.job_ids) == [none | every, none | unanswered, none, none]


def test_the_quality_summary_counts_answered_refused_failed_and_right_answers_once_for_every_surface(sessions) -> None:
    from storage.dashboard_queries import batch_rows

    refs = ["The sky is blue.", "Water is wet.", "Grass is green.", "Fire is hot.", None]
    batch = new_batch(sessions, [NewJob(f"q{i}", ref) for i, ref in enumerate(refs)])
    ids = batch.job_ids
    outcomes = [
        # right: case and spaces do not count
        JobOutcome(job_id=ids[0], answer="the  sky is BLUE.", decoder_path="bank", confidence=0.9),
        JobOutcome(job_id=ids[1], answer="Grass is green.", decoder_path="bank", confidence=0.5),  # wrong
        JobOutcome(job_id=ids[2], answer="Grass is green.", decoder_path="none", confidence=0.1),  # refused: not judged
        JobOutcome(job_id=ids[3], error="bad input"),
        JobOutcome(job_id=ids[4], answer="Anything.", decoder_path="bank", confidence=0.7),  # answered, no reference
    ]
    assert write(sessions, outcomes, "default@x") == 5
    assert [row["right_answer"] for row in metric_rows(sessions, ids)] == [1.0, 0.0, None, None, None]
    result = summary(sessions, batch.id)
    quality = result.quality
    assert (quality.answered, quality.refused, quality.failed) == (3, 1, 1)
    assert (quality.with_reference, quality.judged, quality.right) == (3, 2, 1)
    assert quality.precision == pytest.approx(1 / 2) and quality.coverage == pytest.approx(3 / 4)
    assert quality.right_rate == pytest.approx(1 / 3) and quality.mean_confidence == pytest.approx(2.2 / 4)
    assert result.no_error_rate == pytest.approx(4 / 5)  # a refusal is no error; quality says how good
    assert result.to_dict()["quality"]["precision"] == pytest.approx(0.5)  # the API's JSON
    assert result.metrics["right_answer"]["n"] == 2 and result.metrics["right_answer"]["mean"] == pytest.approx(0.5)
    with sessions() as session:
        (row,) = batch_rows(session, batch_id=batch.id)
    assert row.quality == quality  # the dashboard reads the same summary
    assert row.progress()["quality_texts"]["precision"] == "50.0 %"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_migration_0005_decides_right_answers_of_stored_rows(backend: str, tmp_path) -> None:
    """Done rows stored at 0004 get right_answer (column and JSON) by the summary's own rule; others stay NULL."""
    from sqlalchemy import insert, select

    from storage.db import session_factory, upgrade
    from storage.models import Batch, Job

    rows = [  # (status, decoder path, answer, reference, expected)
        ("done", "bank", "Water  is WET.", "water is wet.", 1.0),
        ("done", "bank", "Fire is hot.", "water is wet.", 0.0),
        ("done", "none", "no confident answer", "water is wet.", None),
        ("done", "bank", "Fire is hot.", None, None),
        ("failed", None, None, "water is wet.", None),
    ]
    ids = [f"{i:032x}" for i in range(len(rows))]
    with store_at(backend, tmp_path, "0004") as (url, engine):
        created = datetime.now(UTC)
        with engine.begin() as connection:  # only the columns 0004 has
            batch = {"id": "b" * 32, "total": 5, "done_count": 4, "failed_count": 1, "created_at": created}
            connection.execute(insert(Batch.__table__), [batch])
            connection.execute(insert(Job.__table__), [
                {"id": job_id, "batch_id": "b" * 32, "position": i, "question": f"q{i}", "status": status,
                 "attempts": 1, "dispatches": 1, "decoder_path": path, "answer": answer, "reference": reference,
                 "metrics": {"e2e_cos": 0.5} if status == "done" else None, "created_at": created}
                for i, (job_id, (status, path, answer, reference, _)) in enumerate(zip(ids, rows))
            ])
        upgrade(url)
        with session_factory(engine)() as session:
            stored = session.execute(select(Job.right_answer, Job.metrics).order_by(Job.position)).all()
        assert [right for right, _ in stored] == [expected for *_, expected in rows]
        assert stored[0][1] == {"e2e_cos": 0.5, "right_answer": 1.0} and stored[3][1] == {"e2e_cos": 0.5}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_migration_0004_fills_the_metric_columns_of_stored_rows_and_reverts(backend: str, tmp_path) -> None:
    """Rows stored at 0003 (metrics JSON only) get their columns from the JSON; the downgrade drops the columns
    and keeps the JSON, and a second upgrade fills them again."""
    from alembic import command
    from sqlalchemy import JSON, insert, inspect

    from storage.db import alembic_config, session_factory, upgrade
    from storage.models import METRIC_COLUMNS, Batch, Job

    metrics = [
        {"cube_cos": 0.61, "identity_cos": 0.52, "e2e_cos": 0.73, "decode_fidelity": 0.84, "echo": 1, "truncated": 1.0},
        {"decode_fidelity": 0.25, "cube_cos": -0.125, "identity_cos": 0.0},
        None,  # SQL NULL: a failed job
        JSON.NULL,  # JSON null (what a JSON column without none_as_null writes for None)
    ]
    expected = [
        {"cube_cos": 0.61, "identity_cos": 0.52, "e2e_cos": 0.73, "decode_fidelity": 0.84, "echo": 1.0}
        | {"right_answer": None},
        {"cube_cos": -0.125, "identity_cos": 0.0, "e2e_cos": None, "decode_fidelity": 0.25, "echo": None}
        | {"right_answer": None},
        dict.fromkeys(METRIC_COLUMNS),
        dict.fromkeys(METRIC_COLUMNS),
    ]
    ids = [f"{i:032x}" for i in range(len(metrics))]
    with store_at(backend, tmp_path, "0003") as (url, engine):
        sessions = session_factory(engine)
        created = datetime.now(UTC)
        with engine.begin() as connection:  # only the columns 0003 has
            connection.execute(insert(Batch.__table__), [{"id": "b" * 32, "total": 4, "done_count": 2, "failed_count": 2, "created_at": created}])
            connection.execute(insert(Job.__table__), [
                {"id": job_id, "batch_id": "b" * 32, "position": i, "question": f"q{i}", "status": "done" if i < 2 else "failed",
                 "attempts": 1, "dispatches": 1, "metrics": m, "created_at": created}
                for i, (job_id, m) in enumerate(zip(ids, metrics))
            ])
        upgrade(url)
        assert metric_rows(sessions, ids) == expected
        command.downgrade(alembic_config(url), "0003")
        engine.dispose()
        assert not set(METRIC_COLUMNS) & {c["name"] for c in inspect(engine).get_columns("job")}
        with engine.connect() as connection:
            assert connection.execute(Job.__table__.select().with_only_columns(Job.metrics).order_by(Job.position)).scalars().all()[:2] == metrics[:2]
        upgrade(url)
        assert metric_rows(sessions, ids) == expected


def test_jobs_keep_their_pinned_bank_for_re_sends_and_their_evidence(sessions) -> None:
    pin = Pin(bank="house", bank_version="ab12cd34ef56ab78", min_confidence=0.4)
    with sessions.begin() as session:
        batch = create_batch(session=session, items=[NewJob("q1"), NewJob("q2")], pin=pin)
    old = new_batch(sessions, [NewJob("q3")])  # as stored before banks: no pin, the bundle's own bank
    assert {job.pin for job in queued(sessions, batch.id)} == {pin} and queued(sessions, old.id)[0].pin == Pin()
    with sessions() as session:
        stale = stale_jobs(session=session, older_than=timedelta(seconds=-1), queues_idle=True)  # what the reconciler re-sends
    assert {job.id: job.pin for job, _ in stale} == {**dict.fromkeys(batch.job_ids, pin), old.job_ids[0]: Pin()}
    evidence = {"sentence": "A.", "score": 0.9, "doc_id": "d.md", "title": "Doc", "position": 2, "before": ["Z."], "after": [],
                "alternatives": [{"sentence": "B.", "score": 0.3, "doc_id": "d.md", "position": 0}]}
    first, second = batch.job_ids
    outcomes = [JobOutcome(job_id=first, answer="A.", decoder_path="bank", score=0.9, confidence=0.8, evidence=evidence),
                JobOutcome(job_id=second, error="bank 'house' (version ab12cd34ef56ab78) no longer exists", confidence=0.1, evidence=evidence)]
    assert write(sessions, outcomes, "default@x") == 2
    with sessions() as session:
        rows = list(iter_results(session=session, batch_id=batch.id))
    assert (rows[0]["bank"], rows[0]["bank_version"], rows[0]["min_confidence"]) == ("house", "ab12cd34ef56ab78", 0.4)
    assert rows[0]["confidence"] == 0.8 and rows[0]["evidence"] == evidence
    assert rows[1]["status"] == "failed" and rows[1]["confidence"] is None and rows[1]["evidence"] is None
    assert summary(sessions, batch.id).banks == ["house@ab12cd34ef56ab78"] and summary(sessions, old.id).banks == []


def test_an_idempotency_key_names_one_batch(sessions) -> None:
    first = new_batch(sessions, [NewJob("q")], key="k1")
    again = new_batch(sessions, [NewJob("q"), NewJob("other")], key="k1")
    assert first.created and not again.created and first.id == again.id and first.job_ids == again.job_ids
    assert summary(sessions, first.id).total == 1


def test_a_batch_and_its_jobs_are_one_transaction_of_the_caller(sessions) -> None:
    """A caller's transaction that fails after create_batch leaves neither the batch nor any job."""
    from sqlalchemy import func, select

    from storage.models import Job

    with pytest.raises(RuntimeError), sessions.begin() as session:
        create_batch(session=session, items=[NewJob("q1"), NewJob("q2")])
        raise RuntimeError("the caller gives up before committing")
    with sessions() as session:
        assert (count_batches(session=session), session.scalar(select(func.count()).select_from(Job))) == (0, 0)


def test_batches_are_listed_newest_first_a_page_at_a_time(sessions) -> None:
    ids = [new_batch(sessions, [NewJob(f"q{i}")]).id for i in range(5)]
    with sessions() as session:
        first = [s.id for s in list_batches(session=session, offset=0, limit=2)]
        rest = [s.id for s in list_batches(session=session, offset=2, limit=10)]
        assert count_batches(session=session) == 5
    assert first + rest == ids[::-1]


def backdate(sessions, job_id: str, **ages_s: float) -> None:
    """Sets a job's timestamps (created_at=..., dispatched_at=..., started_at=..., finished_at=...) to that many seconds ago."""
    from datetime import UTC, datetime, timedelta

    from storage.models import Job

    with sessions.begin() as session:
        session.query(Job).filter(Job.id == job_id).update({name: datetime.now(UTC) - timedelta(seconds=age) for name, age in ages_s.items()})


def stale_ids(sessions, batch_id: str, *, queues_idle: bool) -> list[str]:
    from datetime import timedelta

    with sessions() as session:
        stale = stale_jobs(session=session, older_than=timedelta(seconds=60), queues_idle=queues_idle)
    return [job.id for job, _ in stale if job.batch_id == batch_id]


def test_stale_jobs_are_unfinished_jobs_untouched_past_the_deadline(sessions) -> None:
    batch_id = new_batch(sessions, [NewJob("q1"), NewJob("q2"), NewJob("q3")]).id
    finished, old, recent = (job.id for job in queued(sessions, batch_id))
    write(sessions, [done(finished, 0.5)], None)
    backdate(sessions, finished, dispatched_at=600)
    backdate(sessions, old, dispatched_at=600)
    backdate(sessions, recent, dispatched_at=600, started_at=5)  # sent long ago, picked up just now
    assert stale_ids(sessions, batch_id, queues_idle=True) == [old]


def test_a_healthy_backlog_is_not_resent_while_the_queues_hold_messages(sessions) -> None:
    batch_id = new_batch(sessions, [NewJob("q1"), NewJob("q2")]).id
    first, second = (job.id for job in queued(sessions, batch_id))
    backdate(sessions, first, dispatched_at=600)
    backdate(sessions, second, dispatched_at=599)
    assert stale_ids(sessions, batch_id, queues_idle=False) == []  # still waiting their turn in a long queue
    assert stale_ids(sessions, batch_id, queues_idle=True) == [first, second]  # nothing waits: their messages are gone


def test_an_overtaken_job_is_resent_even_while_the_queues_are_busy(sessions) -> None:
    batch_id = new_batch(sessions, [NewJob("q1"), NewJob("q2"), NewJob("q3")]).id
    lost, later, never_sent = (job.id for job in queued(sessions, batch_id))
    backdate(sessions, lost, dispatched_at=600)
    write(sessions, [done(later, 0.5)], None)
    backdate(sessions, later, dispatched_at=500, finished_at=400)  # sent after `lost`, finished long ago
    backdate(sessions, never_sent, created_at=600)  # stored, never sent (the broker was down)
    assert sorted(stale_ids(sessions, batch_id, queues_idle=False)) == sorted([lost, never_sent])


def test_an_unmigrated_database_is_refused_with_the_command_to_run(tmp_path) -> None:
    with pytest.raises(StorageError, match="cubeqa db upgrade"):
        check_schema(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))


def test_a_junk_database_url_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="invalid database URL"):
        make_engine("not a url")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_the_migrations_build_exactly_the_models(backend: str, tmp_path) -> None:
    """`alembic check` in code: autogenerate (types compared, as env.py does) finds nothing to migrate."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from storage.models import Base

    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'drift.db'}" if backend == "sqlite" else stack.enter_context(postgres_database())
        engine = migrated(url).kw["bind"]
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata) == []
        engine.dispose()


@pytest.mark.services
def test_a_store_from_before_the_naming_convention_gets_its_names() -> None:
    """PostgreSQL databases created before the convention carry default constraint names; 0002 renames them."""
    from sqlalchemy import text

    from storage.db import upgrade

    with postgres_database() as url:
        upgrade(url, "0001")
        engine = make_engine(url)
        old = {"pk_batch": "batch_pkey", "uq_batch_key": "batch_key_key", "fk_job_batch_id_batch": "job_batch_id_fkey"}
        with engine.begin() as connection:
            for new, default in old.items():
                table = "job" if new.startswith("fk_job") else "batch"
                connection.execute(text(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{new}" TO "{default}"'))
        upgrade(url)
        with engine.connect() as connection:
            names = set(connection.execute(text("SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace")).scalars())
        engine.dispose()
    assert set(old) <= names and not set(old.values()) & names


def test_an_id_prefix_of_six_or_more_characters_names_its_batch_and_an_ambiguous_one_lists_the_matches(sessions) -> None:
    from storage.ids import AmbiguousId, resolve_id
    from storage.models import Batch

    ids = ["abcdef" + "0" * 26, "abcdef1" + "0" * 25, "123456" + "f" * 26]
    with sessions.begin() as session:
        for batch_id in ids:
            session.add(Batch(id=batch_id, total=0, done_count=0, failed_count=0, created_at=datetime.now(UTC)))
    with sessions() as session:
        assert resolve_id(session=session, model=Batch, given="123456") == ids[2]
        assert resolve_id(session=session, model=Batch, given="ABCDEF1") == ids[1]  # typed in capitals
        assert resolve_id(session=session, model=Batch, given=ids[0]) == ids[0]
        assert resolve_id(session=session, model=Batch, given="12345") is None  # too short to be a prefix
        assert resolve_id(session=session, model=Batch, given="123456%") is None  # not hex: never reaches SQL as a pattern
        assert resolve_id(session=session, model=Batch, given="999999") is None
        with pytest.raises(AmbiguousId, match=f"{ids[0]}, {ids[1]}"):
            resolve_id(session=session, model=Batch, given="abcdef")
