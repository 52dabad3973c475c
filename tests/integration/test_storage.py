"""The SQL store on real SQLite and PostgreSQL: idempotent result writes, exact counters, summaries, schema checks."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from conftest import migrated
from jobsystem import postgres_database

from storage.db import StorageError, check_schema, make_engine
from storage.repository import (
    JobOutcome,
    NewJob,
    batch_summary,
    create_batch,
    iter_results,
    mark_running,
    record_outcomes,
    stale_jobs,
    unfinished_jobs,
)

pytestmark = pytest.mark.services


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else stack.enter_context(postgres_database())
        factory = migrated(url)
        yield factory
        factory.kw["bind"].dispose()


def done(job_id: str, cube_cos: float) -> JobOutcome:
    return JobOutcome(job_id=job_id, answer="a", decoder_path="bank", score=0.5, metrics={"cube_cos": cube_cos}, timings_ms={"encode": 1.0})


def test_concurrent_writes_of_the_same_results_count_each_job_once(sessions) -> None:
    """Two decode tasks finishing the same redelivered micro-batch at once: the second waits on the first's
    claim and then finds every job final."""
    from concurrent.futures import ThreadPoolExecutor

    batch_id, _ = create_batch(sessions, [NewJob(f"q{i}") for i in range(40)])
    jobs = unfinished_jobs(sessions, batch_id)
    outcomes = [done(j.id, 0.5) if i % 4 else JobOutcome(job_id=j.id, error="bad input") for i, j in enumerate(jobs)]
    for expected in (40, 0):  # four writers race; then four more find everything final
        with ThreadPoolExecutor(max_workers=4) as pool:
            finished = list(pool.map(lambda _: record_outcomes(sessions, outcomes, "default@x"), range(4)))
        assert sum(finished) == expected
    summary = batch_summary(sessions, batch_id)
    assert (summary.done, summary.failed, summary.total, summary.finished) == (30, 10, 40, True)


def test_a_failed_job_stores_sql_null_not_json_null(sessions) -> None:
    from sqlalchemy import select

    from storage.models import Job

    batch_id, _ = create_batch(sessions, [NewJob("q1")])
    (job,) = unfinished_jobs(sessions, batch_id)
    record_outcomes(sessions, [JobOutcome(job_id=job.id, error="bad input")], None)
    with sessions() as session:
        assert session.scalar(select(Job.id).where(Job.metrics.is_(None), Job.hosts.is_(None), Job.timings_ms.is_(None))) == job.id


def test_a_repeated_result_write_changes_nothing(sessions) -> None:
    batch_id, created = create_batch(sessions, [NewJob("q1", "r1"), NewJob("q2"), NewJob("q3")])
    assert created
    jobs = unfinished_jobs(sessions, batch_id)
    mark_running(sessions, [j.id for j in jobs])
    first = [done(jobs[0].id, 0.6), JobOutcome(job_id=jobs[1].id, error="bad input")]
    assert record_outcomes(sessions, first, "default@x") == 2
    assert record_outcomes(sessions, first, "default@x") == 0  # redelivered: no second result
    assert record_outcomes(sessions, [done(jobs[1].id, 0.9)], "default@x") == 0  # a failed job stays failed
    summary = batch_summary(sessions, batch_id)
    assert (summary.done, summary.failed, summary.total, summary.finished) == (1, 1, 3, False)
    assert summary.counts == {"queued": 0, "running": 1, "done": 1, "failed": 1}
    assert record_outcomes(sessions, [done(jobs[2].id, 0.8)], "default@x") == 1
    summary = batch_summary(sessions, batch_id)
    assert summary.finished and summary.finished_at is not None
    assert summary.success_rate == pytest.approx(2 / 3)
    assert summary.metrics["cube_cos"] == {"mean": pytest.approx(0.7), "p50": pytest.approx(0.7), "p90": pytest.approx(0.78), "n": 2}
    rows = list(iter_results(sessions, batch_id))
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert rows[1]["error"] == "bad input" and rows[1]["answer"] is None
    assert rows[0]["attempts"] == 1 and rows[0]["model_version"] == "default@x"


def test_an_idempotency_key_names_one_batch(sessions) -> None:
    first, created = create_batch(sessions, [NewJob("q")], key="k1")
    again, created_again = create_batch(sessions, [NewJob("q"), NewJob("other")], key="k1")
    assert created and not created_again and first == again
    assert batch_summary(sessions, first).total == 1


def backdate(sessions, job_id: str, **ages_s: float) -> None:  # noqa: ANN001
    """Sets a job's timestamps (created_at=..., dispatched_at=..., started_at=..., finished_at=...) to that many seconds ago."""
    from datetime import UTC, datetime, timedelta

    from storage.models import Job

    with sessions.begin() as session:
        session.query(Job).filter(Job.id == job_id).update({name: datetime.now(UTC) - timedelta(seconds=age) for name, age in ages_s.items()})


def stale_ids(sessions, batch_id: str, *, queues_idle: bool) -> list[str]:  # noqa: ANN001
    from datetime import timedelta

    return [job.id for job, _ in stale_jobs(sessions, timedelta(seconds=60), queues_idle=queues_idle) if job.batch_id == batch_id]


def test_stale_jobs_are_unfinished_jobs_untouched_past_the_deadline(sessions) -> None:
    batch_id, _ = create_batch(sessions, [NewJob("q1"), NewJob("q2"), NewJob("q3")])
    finished, old, recent = (job.id for job in unfinished_jobs(sessions, batch_id))
    record_outcomes(sessions, [done(finished, 0.5)], None)
    backdate(sessions, finished, dispatched_at=600)
    backdate(sessions, old, dispatched_at=600)
    backdate(sessions, recent, dispatched_at=600, started_at=5)  # sent long ago, picked up just now
    assert stale_ids(sessions, batch_id, queues_idle=True) == [old]


def test_a_healthy_backlog_is_not_resent_while_the_queues_hold_messages(sessions) -> None:
    batch_id, _ = create_batch(sessions, [NewJob("q1"), NewJob("q2")])
    first, second = (job.id for job in unfinished_jobs(sessions, batch_id))
    backdate(sessions, first, dispatched_at=600)
    backdate(sessions, second, dispatched_at=599)
    assert stale_ids(sessions, batch_id, queues_idle=False) == []  # still waiting their turn in a long queue
    assert stale_ids(sessions, batch_id, queues_idle=True) == [first, second]  # nothing waits: their messages are gone


def test_an_overtaken_job_is_resent_even_while_the_queues_are_busy(sessions) -> None:
    batch_id, _ = create_batch(sessions, [NewJob("q1"), NewJob("q2"), NewJob("q3")])
    lost, later, never_sent = (job.id for job in unfinished_jobs(sessions, batch_id))
    backdate(sessions, lost, dispatched_at=600)
    record_outcomes(sessions, [done(later, 0.5)], None)
    backdate(sessions, later, dispatched_at=500, finished_at=400)  # sent after `lost`, finished long ago
    backdate(sessions, never_sent, created_at=600)  # stored, never sent (the broker was down)
    assert sorted(stale_ids(sessions, batch_id, queues_idle=False)) == sorted([lost, never_sent])


def test_an_unmigrated_database_is_refused_with_the_command_to_run(tmp_path) -> None:
    with pytest.raises(StorageError, match="cubeqa db upgrade"):
        check_schema(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))


def test_a_junk_database_url_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="invalid database URL"):
        make_engine("not a url")
