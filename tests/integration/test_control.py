"""Cancel, pause, resume and retry with real stage workers under load (real Redis, PostgreSQL, worker processes)."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import pytest
from conftest import DATA, migrated
from jobsystem import postgres_database, stage_workers, summary_of, wait_for_batch, wait_until_idle
from sqlalchemy import select

from storage.control import ControlError
from storage.models import Batch, Job
from storage.repository import NewJob, Pin
from tasks import control
from tasks.app import app as celery
from tasks.producer import submit

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(900)]
STATE = (Job.id, Job.position, Job.status, Job.answer, Job.attempts, Job.dispatches, Job.attempt_base, Job.finished_at)


@pytest.fixture(scope="module")
def sessions(broker_url, tmp_path_factory):
    """PostgreSQL (a cancel and a result write serialise on the job's row lock) and one worker per stage."""
    logdir = tmp_path_factory.mktemp("control")
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        sessions = migrated(url)
        stack.callback(lambda: sessions.kw["bind"].dispose())
        stack.enter_context(stage_workers(broker_url, url, logdir))
        yield sessions


def questions(count: int, start: int = 0, poisoned: frozenset[int] = frozenset()) -> list[NewJob]:
    """Validation questions with their references; an empty question (the encoder's input error) at `poisoned`."""
    lines = (DATA / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()[start : start + count]
    rows = [json.loads(line) for line in lines]
    return [NewJob(question="" if i in poisoned else r["question"], reference=r["answer"], line=i + 1)
            for i, r in enumerate(rows)]


def jobs(sessions, batch_id: str) -> dict[str, tuple]:
    """Every job of the batch as (status, answer, attempts, dispatches, attempt_base, finished_at), by id."""
    with sessions() as session:
        rows = session.execute(select(*STATE).where(Job.batch_id == batch_id).order_by(Job.position)).all()
    return {row.id: tuple(row[2:]) for row in rows}


def counters(sessions, batch_id: str) -> tuple[int, int, int]:
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        return batch.done_count, batch.failed_count, batch.cancelled_count


def wait_until(check, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def done_count(sessions, batch_id: str) -> int:
    return sum(status == "done" for status, *_ in jobs(sessions, batch_id).values())


def test_cancel_under_load_writes_no_result_after_it_commits(sessions, broker_url) -> None:
    """A 400-job batch cancelled while the workers run it: every job is done once or cancelled, no job changes after
    the cancel returns (micro-batches inside a stage finish it but write nothing), and the counters match the rows."""
    result = submit(sessions, questions(400), micro_batch=16, source="cancel")
    wait_until(lambda: done_count(sessions, result.batch_id) >= 48, what="48 jobs done")
    report = control.cancel(sessions, result.batch_id)
    at_cancel = jobs(sessions, result.batch_id)
    wait_until_idle(broker_url, celery)
    after = jobs(sessions, result.batch_id)
    assert after == at_cancel  # nothing written after the cancel committed
    statuses = [status for status, *_ in after.values()]
    cancelled = statuses.count("cancelled")
    assert report.jobs == cancelled > 0 and statuses.count("done") + cancelled == 400
    assert counters(sessions, result.batch_id) == (400 - cancelled, 0, cancelled)
    for status, answer, attempts, dispatches, *_ in after.values():
        if status == "cancelled":
            assert answer is None
        else:
            assert answer and (attempts, dispatches) == (1, 1)  # done exactly once
    summary = wait_for_batch(sessions, result.batch_id, timeout=5)
    assert (summary.state, summary.cancelled, summary.quality.cancelled, summary.counts["cancelled"]) == (
        "cancelled", cancelled, cancelled, cancelled)
    assert control.cancel(sessions, result.batch_id).jobs == 0  # again: nothing left to cancel
    with pytest.raises(ControlError, match="cancelled: nothing to retry"):
        control.retry(sessions, result.batch_id, 16)


def test_pause_holds_the_work_not_started_and_resume_finishes_it_once(sessions, broker_url) -> None:
    """Paused mid-run, a batch finishes what is past the encode stage and holds the rest (no job runs while paused);
    resumed, the held jobs are sent once more and every job ends done with one attempt."""
    result = submit(sessions, questions(320, start=400), micro_batch=16, source="pause")
    wait_until(lambda: done_count(sessions, result.batch_id) >= 32, what="32 jobs done")
    waiting = control.pause(sessions, result.batch_id).jobs
    wait_until_idle(broker_url, celery)
    held = jobs(sessions, result.batch_id)
    statuses = [status for status, *_ in held.values()]
    assert set(statuses) == {"done", "paused"} and waiting >= statuses.count("paused") > 0
    time.sleep(2)
    assert jobs(sessions, result.batch_id) == held  # nothing runs while paused
    assert summary_of(sessions, result.batch_id).state == "paused"
    resumed = control.resume(sessions, result.batch_id, 16)
    assert resumed.jobs == resumed.sent == statuses.count("paused")
    summary = wait_for_batch(sessions, result.batch_id)
    assert (summary.state, summary.done, summary.failed, summary.cancelled) == ("finished", 320, 0, 0)
    final = jobs(sessions, result.batch_id)
    for job_id, (status, answer, attempts, dispatches, *_) in final.items():
        assert status == "done" and answer and attempts == 1  # no job encoded twice
        assert dispatches == (2 if held[job_id][0] == "paused" else 1)
    with pytest.raises(ControlError, match="finished: nothing to pause"):
        control.pause(sessions, result.batch_id)


def test_retry_makes_new_attempts_of_failed_and_refused_jobs_and_leaves_answered_ones(sessions) -> None:
    """Failed jobs (empty questions) and refused ones (a high threshold) retried keep their ids, count one more
    attempt and end as before; answered jobs keep their rows as they were."""
    poisoned = frozenset({3, 17, 29})
    result = submit(sessions, questions(48, start=800, poisoned=poisoned), micro_batch=16, pin=Pin(min_confidence=0.6))
    first = wait_for_batch(sessions, result.batch_id)
    before = jobs(sessions, result.batch_id)
    refused = {job_id for job_id, (status, answer, *_) in before.items()
               if status == "done" and answer == "no confident answer"}
    failed = {job_id for job_id, (status, *_) in before.items() if status == "failed"}
    assert len(failed) == 3 and 0 < len(refused) < 45 and first.quality.refused == len(refused)

    retried = control.retry(sessions, result.batch_id, 16)  # failed only
    assert (retried.jobs, retried.sent) == (3, 3)
    wait_for_batch(sessions, result.batch_id)
    again = jobs(sessions, result.batch_id)
    assert set(again) == set(before)  # the same ids, no new job
    for job_id in failed:
        status, _, attempts, _, base, _ = again[job_id]
        assert (status, attempts, base) == ("failed", 2, 1)
    assert {j: again[j] for j in set(before) - failed} == {j: before[j] for j in set(before) - failed}

    retried = control.retry(sessions, result.batch_id, 16, failed=False, refused=True)
    assert retried.jobs == len(refused)
    summary = wait_for_batch(sessions, result.batch_id)
    last = jobs(sessions, result.batch_id)
    for job_id in refused:
        assert last[job_id][0] == "done" and last[job_id][2] == 2
    answered = set(before) - failed - refused
    assert {j: last[j] for j in answered} == {j: before[j] for j in answered}  # untouched
    assert counters(sessions, result.batch_id) == (45, 3, 0) and (summary.done, summary.failed) == (45, 3)
