"""Cancel, pause, resume and retry in the SQL store (real SQLite and PostgreSQL), the stage check every task runs
before it works, and the producer's and reconciler's handling of paused and cancelled batches (real Redis)."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis
from conftest import migrated
from jobsystem import postgres_database, store_at
from sqlalchemy import insert, select

from storage.control import (
    ControlError,
    cancel_batch,
    cancel_job,
    orphaned_parks,
    park,
    pause_batch,
    resume_batch,
    retry_batch,
)
from storage.models import Batch, Job
from storage.repository import JobOutcome, NewJob, Recorded, create_batch, record_outcomes
from storage.summary import batch_summary
from tasks.app import STAGES
from tasks.priority import queue_keys, queue_length
from tasks.producer import dispatch, reconcile
from tasks.runner import honour_controls
from tasks.wire import MicroBatch, pack

pytestmark = pytest.mark.services


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def sessions(request, tmp_path):
    with ExitStack() as stack:
        sqlite = f"sqlite:///{tmp_path / 'store.db'}"
        url = sqlite if request.param == "sqlite" else stack.enter_context(postgres_database())
        factory = migrated(url)
        yield factory
        factory.kw["bind"].dispose()


def stored(sessions, count: int):
    with sessions.begin() as session:
        return create_batch(session=session, items=[NewJob(f"question {i}?") for i in range(count)])


def write(sessions, outcomes: list[JobOutcome]) -> int:
    with sessions.begin() as session:
        return record_outcomes(session=session, outcomes=outcomes, model_version=None).finished


def statuses(sessions, batch_id: str) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Job.status).where(Job.batch_id == batch_id).order_by(Job.position)))


def in_transaction(sessions, fn):
    with sessions.begin() as session:
        return fn(session)


def answer(job_id: str) -> JobOutcome:
    return JobOutcome(job_id=job_id, answer="An answer.", decoder_path="bank", score=0.7)


def test_a_result_written_after_a_cancel_claims_nothing_and_the_counters_stay_exact(sessions) -> None:
    batch = stored(sessions, 4)
    first, second, third, fourth = batch.job_ids
    assert write(sessions, [answer(first)]) == 1
    assert in_transaction(sessions, lambda s: cancel_job(session=s, job_id=second)) == (batch.id, Recorded(1))
    assert in_transaction(sessions, lambda s: cancel_batch(session=s, batch_id=batch.id)) == Recorded(2)
    assert write(sessions, [answer(job_id) for job_id in batch.job_ids]) == 0  # a late micro-batch: nothing lands
    assert statuses(sessions, batch.id) == ["done", "cancelled", "cancelled", "cancelled"]
    with sessions() as session:
        summary = batch_summary(session=session, batch_id=batch.id)
        assert session.scalar(select(Job.answer).where(Job.id == fourth)) is None
    assert (summary.done, summary.failed, summary.cancelled) == (1, 0, 3)
    assert (summary.finished, summary.state) == (True, "cancelled")
    with pytest.raises(ControlError, match="is done: nothing to cancel"):
        in_transaction(sessions, lambda s: cancel_job(session=s, job_id=first))


def test_a_result_write_racing_a_cancel_waits_for_its_row_lock_and_writes_nothing() -> None:
    """PostgreSQL: the cancel holds the job rows; the worker's conditional claim waits, then finds them final."""
    with postgres_database() as url:
        sessions = migrated(url)
        batch = stored(sessions, 3)
        written: list[int] = []
        with sessions.begin() as session:
            assert cancel_batch(session=session, batch_id=batch.id) == Recorded(3)  # not committed yet: the rows are locked
            late = [answer(job_id) for job_id in batch.job_ids]
            writer = threading.Thread(target=lambda: written.append(write(sessions, late)))
            writer.start()
            writer.join(1.0)
            assert writer.is_alive()  # blocked on the cancel's row locks
        writer.join(10)
        assert written == [0] and statuses(sessions, batch.id) == ["cancelled"] * 3
        sessions.kw["bind"].dispose()


def test_pause_resume_and_retry_move_the_rows_and_counters(sessions) -> None:
    batch = stored(sessions, 5)
    ids = batch.job_ids
    write(sessions, [answer(ids[0]), JobOutcome(job_id=ids[1], error="boom"),
                     JobOutcome(job_id=ids[2], answer="no confident answer", decoder_path="none")])
    assert in_transaction(sessions, lambda s: pause_batch(session=s, batch_id=batch.id)) == 2
    assert in_transaction(sessions, lambda s: park(session=s, job_ids=ids)) == ids[3:]  # final jobs stay as they are
    assert statuses(sessions, batch.id)[3:] == ["paused", "paused"]
    resumed = in_transaction(sessions, lambda s: resume_batch(session=s, batch_id=batch.id))
    assert sorted(j.id for j in resumed) == sorted(ids[3:]) and statuses(sessions, batch.id)[3:] == ["queued"] * 2
    assert in_transaction(sessions, lambda s: park(session=s, job_ids=ids)) == []  # no longer paused: nothing held
    write(sessions, [answer(ids[3]), answer(ids[4])])
    with sessions() as session:
        assert batch_summary(session=session, batch_id=batch.id).finished

    retried = in_transaction(sessions, lambda s: retry_batch(session=s, batch_id=batch.id, refused=True))
    assert sorted(j.id for j in retried) == sorted(ids[1:3])
    with sessions() as session:
        summary = batch_summary(session=session, batch_id=batch.id)
        rows = {j.id: j for j in session.scalars(select(Job).where(Job.batch_id == batch.id))}
    assert (summary.done, summary.failed, summary.finished, summary.finished_at) == (3, 0, False, None)
    assert rows[ids[1]].status == rows[ids[2]].status == "queued" and rows[ids[1]].error is None
    assert rows[ids[2]].answer is None and rows[ids[2]].right_answer is None and rows[ids[0]].answer == "An answer."
    with pytest.raises(ControlError, match="nothing to retry: ask for"):
        in_transaction(sessions, lambda s: retry_batch(session=s, batch_id=batch.id, failed=False))


def micro_batch(batch_id: str, jobs: list[str], dim: int = 4) -> MicroBatch:
    """A message as the cube stage receives it: vectors, flags and references of every row."""
    vectors = np.arange(len(jobs) * dim, dtype=np.float32).reshape(len(jobs), dim)
    message = MicroBatch(batch=batch_id, jobs=list(jobs), texts=[f"t{i}" for i in range(len(jobs))], dim=dim,
                         q=pack(vectors), a=pack(-vectors), truncated=[False, True, False])
    message.set_refs([vectors[0], None, vectors[2] * 2])
    return message


def test_each_stage_drops_cancelled_jobs_with_their_rows_and_encode_holds_a_paused_batch(sessions) -> None:
    batch = stored(sessions, 3)
    first, second, third = batch.job_ids
    in_transaction(sessions, lambda s: cancel_job(session=s, job_id=second))
    message = micro_batch(batch.id, batch.job_ids)
    assert honour_controls(sessions, message, "cube")
    assert message.jobs == [first, third] and message.texts == ["t0", "t2"] and message.truncated == [False, False]
    assert np.array_equal(np.frombuffer(message.a, "<f4").reshape(2, 4), -np.array([[0, 1, 2, 3], [8, 9, 10, 11]]))
    assert [None if r is None else r.tolist() for r in message.refs_by_row()] == [[0, 1, 2, 3], [16, 18, 20, 22]]

    in_transaction(sessions, lambda s: pause_batch(session=s, batch_id=batch.id))
    assert honour_controls(sessions, micro_batch(batch.id, batch.job_ids), "decode")  # past encode: it finishes
    held = micro_batch(batch.id, batch.job_ids)
    assert not honour_controls(sessions, held, STAGES[0]) and held.jobs == []  # encode: held, nothing left to do
    assert statuses(sessions, batch.id) == ["paused", "cancelled", "paused"]


def test_the_producer_and_the_reconciler_send_nothing_of_a_paused_or_cancelled_batch(sessions, broker_url) -> None:
    """dispatch holds a paused batch's jobs; the reconciler neither re-sends them nor resurrects cancelled jobs, and it
    sends the jobs a park left held after their batch resumed."""
    client = redis.Redis.from_url(broker_url)
    try:
        paused, cancelled = stored(sessions, 6), stored(sessions, 2)
        in_transaction(sessions, lambda s: pause_batch(session=s, batch_id=paused.id))
        in_transaction(sessions, lambda s: cancel_batch(session=s, batch_id=cancelled.id))
        assert dispatch(sessions, paused.jobs + cancelled.jobs, micro_batch=4) == 0
        assert statuses(sessions, paused.id) == ["paused"] * 6 and queue_length(client, "encode") == 0
        report = reconcile(sessions, after=timedelta(seconds=0), max_attempts=3, micro_batch=4)
        assert (report.resent, report.failed, queue_length(client, "encode")) == (0, 0, 0)
        assert statuses(sessions, cancelled.id) == ["cancelled"] * 2

        with sessions.begin() as session:  # a resume whose park lost the race: held jobs of a running batch
            session.execute(Batch.__table__.update().where(Batch.id == paused.id).values(paused_at=None))
        with sessions.begin() as session:
            assert orphaned_parks(session=session) and orphaned_parks(session=session) == []
        with sessions.begin() as session:
            session.execute(Job.__table__.update().where(Job.batch_id == paused.id).values(status="paused"))
        report = reconcile(sessions, after=timedelta(seconds=0), max_attempts=3, micro_batch=4)
        assert report.resent == 6 and queue_length(client, "encode") == 2 and statuses(sessions, paused.id) == ["queued"] * 6
    finally:
        client.delete(*(key for stage in STAGES for key in queue_keys(stage)))
        client.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_migration_0007_keeps_stored_rows_both_ways(backend: str, tmp_path) -> None:
    """Rows stored at 0006 read as never cancelled, paused or retried; the downgrade drops the columns, not the rows."""
    from alembic import command

    from storage.db import alembic_config, upgrade

    with store_at(backend, tmp_path, "0006") as (url, engine):
        created = datetime.now(UTC)
        with engine.begin() as connection:  # only the columns 0006 has
            connection.execute(insert(Batch.__table__).values(id="b" * 32, total=1, done_count=1, failed_count=0,
                                                              created_at=created))
            connection.execute(insert(Job.__table__).values(
                id="j" * 32, batch_id="b" * 32, position=0, question="q", status="done", attempts=2, dispatches=1,
                created_at=created))
        upgrade(url)
        with engine.connect() as connection:
            added = select(Batch.cancelled_count, Batch.paused_at, Batch.cancelled_at)
            assert connection.execute(added).one() == (0, None, None)
            assert connection.execute(select(Job.attempt_base)).scalar_one() == 0
        command.downgrade(alembic_config(url), "0006")
        engine.dispose()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM job").scalar_one() == 1
