"""The distributed path end to end: real Redis, real SQLite and PostgreSQL, three real stage worker processes."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import DATA, migrated
from jobsystem import postgres_database, stage_workers, wait_for_batch, wait_until_idle

from storage.models import Job
from storage.repository import CreatedBatch, NewJob, Pin, create_batch, iter_results
from tasks.app import app as celery
from tasks.producer import dispatch, reconcile, submit

pytestmark = [pytest.mark.slow, pytest.mark.services]


@dataclass
class Stack:
    backend: str
    database_url: str
    sessions: object
    logdir: Path
    pool: str
    processes: list
    runtime: str  # the encode workers' CUBEQA_RUNTIME


# The default threads pool on both stores, and the prefork pool (a child process per slot) on one, on the torch
# runtime (answers exactly as in one process); the default runtime (int8 with the shipped bundle) on one.
SETUPS = [("sqlite", "threads", "torch"), ("postgresql", "threads", "torch"), ("sqlite", "prefork", "torch"),
          ("sqlite", "threads", "auto")]


@pytest.fixture(scope="module", params=SETUPS, ids=[f"{store}-{pool}-{runtime}" for store, pool, runtime in SETUPS])
def stack(request, broker_url, tmp_path_factory) -> Stack:
    backend, pool, runtime = request.param
    logdir = tmp_path_factory.mktemp(f"jobs-{backend}-{pool}-{runtime}")
    with ExitStack() as stack:
        url = f"sqlite:///{logdir / 'jobs.db'}" if backend == "sqlite" else stack.enter_context(postgres_database())
        sessions = migrated(url)
        processes = stack.enter_context(stage_workers(broker_url, url, logdir, ["--pool", pool], CUBEQA_RUNTIME=runtime))
        yield Stack(backend, url, sessions, logdir, pool, processes, runtime)
        stack.callback(lambda: sessions.kw["bind"].dispose())


def val_items(count: int, start: int = 0) -> list[NewJob]:
    lines = (DATA / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()[start : start + count]
    return [NewJob(question=r["question"], reference=r["answer"], line=i + 1) for i, r in enumerate(map(json.loads, lines))]


def stored(stack: Stack, items: list[NewJob]) -> CreatedBatch:
    """The batch written, not sent."""
    with stack.sessions.begin() as session:
        return create_batch(session=session, items=items)


def results(stack: Stack, batch_id: str) -> list[dict]:
    with stack.sessions() as session:
        return list(iter_results(session=session, batch_id=batch_id))


@pytest.mark.parametrize("rerank", [False, True], ids=["fused", "reranked"])
def test_bulk_through_stage_workers_matches_in_process(stack: Stack, request, rerank: bool) -> None:
    """240 validation questions through the stage workers (with the rerank stage, or without) give the answers,
    scores, confidences and metrics ProductionPipeline gives in one process on the same runtime (int8: what `auto`
    serves with the shipped bundle, one text per call, so its micro-batches do not change a vector)."""
    in_process = request.getfixturevalue("in_process" if stack.runtime == "torch" else "in_process_int8")
    items = val_items(240)
    result = submit(stack.sessions, items, micro_batch=32, source="test", pin=Pin(rerank=rerank))
    summary = wait_for_batch(stack.sessions, result.batch_id)
    assert (summary.done, summary.failed, summary.total) == (240, 0, 240)
    assert summary.counts["done"] == 240 and summary.no_error_rate == 1.0
    assert 0.6 < summary.metrics["cube_cos"]["mean"] < 0.7  # the default bundle's validation figure is 0.659

    rows = results(stack, result.batch_id)
    assert [row["id"] for row in rows] == result.job_ids
    expected = in_process.process_batch([i.question for i in items], [i.reference for i in items], rerank=rerank)
    assert [row["question"] for row in rows] == [i.question for i in items]  # input order
    assert [row["answer"] for row in rows] == [e.answer for e in expected]
    stages = ("encode", "cube", "decode", *(("rerank",) if rerank else ()))
    for row, local in zip(rows, expected):
        assert row["status"] == "done" and row["decoder_path"] == local.path and row["rerank"] is rerank
        assert row["score"] == pytest.approx(local.score, abs=1e-4)
        assert row["confidence"] == pytest.approx(local.confidence, abs=1e-6)
        assert row["metrics"]["cube_cos"] == pytest.approx(local.metrics["cube_cos"], abs=1e-4)
        assert row["model_version"] == in_process.model_version
        assert {s: row["hosts"][s].split("-")[0] for s in row["hosts"]} == {s: s for s in stages}
        assert row["timings_ms"]["encode"] > 0 and "wait_cube" in row["timings_ms"]
        assert row["attempts"] == 1
        assert row["evidence"]["reranked"] is rerank and ("rerank" in row["evidence"]) is rerank
        if rerank:
            assert row["evidence"]["rerank"] == pytest.approx(local.evidence["rerank"], abs=1e-9)
            assert [a["rerank"] for a in row["evidence"]["alternatives"]] == sorted(
                (a["rerank"] for a in row["evidence"]["alternatives"]), reverse=True)
    if rerank:  # the reranker changed some answers: it is in the path, not only in the hosts
        plain = in_process.process_batch([i.question for i in items], rerank=False)
        assert sum(p.answer != e.answer for p, e in zip(plain, expected)) >= 5


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_each_worker_runs_the_pool_it_was_given(stack: Stack) -> None:
    """threads: the worker is one process holding its model; prefork: the model lives in a child process per slot."""
    for process in stack.processes:
        assert process.poll() is None
        assert (len(children(process.pid)) > 0) == (stack.pool == "prefork")


def test_resubmitting_with_the_same_key_is_a_no_op(stack: Stack) -> None:
    items = val_items(40, start=300)
    first = submit(stack.sessions, items, micro_batch=16, key=f"nightly-{stack.backend}")
    wait_for_batch(stack.sessions, first.batch_id)
    again = submit(stack.sessions, items, micro_batch=16, key=f"nightly-{stack.backend}")
    assert (again.batch_id, again.created, again.sent) == (first.batch_id, False, 0)
    with stack.sessions() as session:
        assert session.query(Job).filter(Job.batch_id == first.batch_id).count() == 40
        assert {j.dispatches for j in session.query(Job).filter(Job.batch_id == first.batch_id)} == {1}


def test_a_redelivered_chain_does_not_duplicate_results(stack: Stack, broker_url: str) -> None:
    items = val_items(64, start=400)
    batch = stored(stack, items)
    batch_id, jobs = batch.id, batch.jobs
    dispatch(stack.sessions, jobs, 32)
    dispatch(stack.sessions, jobs, 32)  # every message delivered twice, as after a redelivery
    summary = wait_for_batch(stack.sessions, batch_id)
    wait_until_idle(broker_url, celery)  # the second copies have run too
    with stack.sessions() as session:
        batch_jobs = session.query(Job).filter(Job.batch_id == batch_id).all()
        from storage.models import Batch

        batch = session.get(Batch, batch_id)
    assert len(batch_jobs) == 64 and {j.status for j in batch_jobs} == {"done"}
    assert (batch.done_count, batch.failed_count) == (64, 0)
    assert summary.done == 64
    assert {j.dispatches for j in batch_jobs} == {2}


def test_the_reconciler_resends_jobs_whose_messages_were_lost(stack: Stack) -> None:
    items = val_items(20, start=500)
    batch_id = stored(stack, items).id  # stored, never sent: as if Redis lost the messages
    report = reconcile(stack.sessions, after=timedelta(0), max_attempts=5, micro_batch=8)
    assert report.resent >= 20
    summary = wait_for_batch(stack.sessions, batch_id)
    assert (summary.done, summary.failed) == (20, 0)


def test_the_reconciler_fails_a_job_after_its_last_attempt(stack: Stack) -> None:
    batch_id = stored(stack, val_items(1, start=600)).id
    with stack.sessions.begin() as session:
        session.query(Job).filter(Job.batch_id == batch_id).update({"attempts": 3})
    report = reconcile(stack.sessions, after=timedelta(0), max_attempts=3, micro_batch=8)
    assert report.failed == 1
    (row,) = results(stack, batch_id)
    assert row["status"] == "failed" and "gave up after 3 delivery attempts" in row["error"]
