"""The three stage tasks. Each is a thin wrapper around one `pipeline.stages` method.

A micro-batch travels as one msgpack message (`tasks.wire.MicroBatch`) through encode -> cube -> decode, and on
to rerank for jobs that asked for it; the last task writes every job's outcome to SQL in one idempotent transaction. An item whose input makes
a stage raise fails alone; transient faults (database, broker) retry the whole task with exponential backoff
(`tasks.runner.stage_task`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from storage.repository import JobOutcome, mark_running, record_outcomes
from tasks import hooks
from tasks.runner import describe, in_background, isolate, stage_task
from tasks.runtime import Runtime
from tasks.wire import MicroBatch, pack, unpack

Row = tuple[np.ndarray, np.ndarray | None, bool, np.ndarray | None]  # teacher question vector, tower vector (None: no tower), truncated, reference vector


@stage_task("encode")
def encode(batch: MicroBatch, rt: Runtime, stage: Any, stamp: Callable[[], None]) -> dict[str, Any]:
    """Questions (and references) to unit vectors; marks the jobs running (one more attempt)."""
    marking = in_background(mark_jobs_running, rt.sessions, batch.jobs + [job for job, _ in batch.failed])
    try:
        results, errors = isolate(lambda rows: encode_rows(stage, rows, batch.rerank), list(zip(batch.texts, batch.refs)))
    finally:
        marked = marking.exception()  # joined either way: no write outlives its task
    if marked is not None:
        raise marked  # the jobs are marked running before their vectors move on; a transient error retries the task
    kept = batch.drop_failed(errors, {"results": results, "texts": batch.texts})
    ok: list[Row] = kept["results"]
    batch.dim = int(ok[0][0].shape[0]) if ok else 0
    batch.q = pack(np.stack([q for q, _, _, _ in ok])) if ok else b""
    towered = [x for _, x, _, _ in ok if x is not None]  # every row or none: the encode stage has a tower or not
    batch.tower = pack(np.stack(towered)) if towered else b""
    batch.truncated = [cut for _, _, cut, _ in ok]
    batch.set_refs([r for _, _, _, r in ok])
    batch.texts, batch.refs = kept["texts"], []  # the questions travel on: decode's lexical search reads them
    stamp()
    return batch.to_wire()


@stage_task("cube")
def cube(batch: MicroBatch, rt: Runtime, stage: Any, stamp: Callable[[], None]) -> dict[str, Any]:
    """Question vectors (the tower's, when the encode stage sent them) to answer vectors through the lattice."""
    if batch.jobs:
        questions = list(unpack(batch.q, batch.dim))
        inputs = list(unpack(batch.tower, batch.dim)) if batch.tower else questions
        results, errors = isolate(lambda rows: list(stage.map(np.stack(rows))), inputs)
        rows = {"a": results, "q": questions, "truncated": batch.truncated, "r": batch.refs_by_row(),
                "texts": batch.question_texts()}
        kept = batch.drop_failed(errors, rows)
        batch.texts = kept["texts"]
        batch.q = pack(np.stack(kept["q"])) if kept["q"] else b""
        batch.tower = b""
        batch.a = pack(np.stack(kept["a"])) if kept["a"] else b""
        batch.truncated = kept["truncated"]
        batch.set_refs(kept["r"])
    stamp()
    return batch.to_wire()


@stage_task("decode")
def decode(batch: MicroBatch, rt: Runtime, stage: Any, stamp: Callable[[], None]) -> dict[str, Any]:
    """Answer vectors to text from the micro-batch's pinned bank version, with confidence, evidence and per-item
    quality metrics, and one idempotent SQL write of every outcome. For jobs that asked for the rerank stage (and a
    bank decoder), it retrieves their fused candidates instead and hands them on: the rerank task answers and writes.

    A pinned version this worker cannot load (removed, or built with another encoder) fails the micro-batch's jobs
    with the error naming the bank: retrying would find the same files.
    """
    handing_on = batch.rerank and stage.rerank_depth is not None  # a bank decoder, and a bundle with a reranker
    answers: list[Any] = []
    if batch.jobs:
        ref = bank_ref(batch)
        batch.texts = batch.question_texts()
        rows = list(zip(unpack(batch.q, batch.dim), unpack(batch.a, batch.dim), batch.refs_by_row(), batch.texts))
        unusable = bank_problem(stage, ref)
        if unusable is not None:
            answers, errors = [None] * len(rows), dict.fromkeys(range(len(rows)), unusable)
        elif handing_on:
            answers, errors = isolate(lambda part: retrieve_rows(stage, part, ref, stage.rerank_depth), rows)
        else:
            answers, errors = isolate(lambda part: decode_rows(stage, part, ref, batch.min_confidence), rows)
        kept = batch.drop_failed(errors, {"answers": answers, "truncated": batch.truncated, "texts": batch.texts,
                                          "q": [q for q, _, _, _ in rows], "a": [a for _, a, _, _ in rows],
                                          "r": [r for _, _, r, _ in rows]})
        answers, batch.truncated, batch.texts = kept["answers"], kept["truncated"], kept["texts"]
        if handing_on:
            batch.q = pack(np.stack(kept["q"])) if kept["q"] else b""
            batch.a = pack(np.stack(kept["a"])) if kept["a"] else b""
            batch.set_refs(kept["r"])
            if answers:
                batch.set_hits(np.stack([r for r, _ in answers]), np.stack([v for _, v in answers]))
    stamp()
    if handing_on:
        return batch.to_wire()
    report = write_outcomes(rt, batch, answers)
    if batch.rerank:  # another decoder, or no reranker, answered: the rerank task has nothing left to do
        batch.jobs, batch.failed = [], []
        return batch.to_wire()
    return report


@stage_task("rerank")
def rerank(batch: MicroBatch, rt: Runtime, stage: Any, stamp: Callable[[], None]) -> dict[str, Any]:
    """The decode stage's fused candidates reordered by the bundle's reranker; the final answers with the reranked
    confidence, evidence and quality metrics, and one idempotent SQL write of every outcome."""
    answers: list[Any] = []
    if batch.jobs:
        ref = bank_ref(batch)
        hit_rows, hit_scores = batch.hits()
        texts = batch.question_texts()
        rows = list(zip(unpack(batch.q, batch.dim), unpack(batch.a, batch.dim), batch.refs_by_row(), texts,
                        hit_rows, hit_scores))
        unusable = bank_problem(stage.decode_stage, ref)
        if unusable is None:
            answers, errors = isolate(lambda part: rerank_rows(stage, part, ref, batch.min_confidence), rows)
        else:
            answers, errors = [None] * len(rows), dict.fromkeys(range(len(rows)), unusable)
        kept = batch.drop_failed(errors, {"answers": answers, "truncated": batch.truncated})
        answers, batch.truncated = kept["answers"], kept["truncated"]
    stamp()
    return write_outcomes(rt, batch, answers)


def write_outcomes(rt: Runtime, batch: MicroBatch, answers: list[Any]) -> dict[str, Any]:
    """Every job's outcome in one idempotent transaction; the report the last task of a chain returns."""
    outcomes = outcomes_of(batch, answers)
    versions = sorted(set(batch.versions.values()))
    with rt.sessions.begin() as session:
        recorded = record_outcomes(session=session, outcomes=outcomes, model_version=versions[0] if len(versions) == 1 else " | ".join(versions))
    hooks.send(recorded.hooks)  # only queued here: the hooks worker posts them
    return {"jobs": len(outcomes), "finished": recorded.finished}


def mark_jobs_running(sessions: sessionmaker[Session], job_ids: list[str]) -> None:
    with sessions.begin() as session:
        mark_running(session=session, job_ids=job_ids)


def encode_rows(stage: Any, rows: list[tuple[str, str | None]], every_teacher: bool = False) -> list[Row]:
    """Encodes questions (teacher and, with a tower, tower vectors) and the references present, aligned per row.
    The teacher vector of every question when `every_teacher` (the reranker reads it), else of those with a reference."""
    teacher_rows = None if every_teacher else [r is not None for _, r in rows]
    questions = stage.encode_questions([q for q, _ in rows], teacher_rows=teacher_rows)
    towered = stage.tower is not None
    with_refs = [r for _, r in rows if r is not None]
    refs = iter(stage.encode(with_refs).vectors) if with_refs else iter(())
    return [
        (questions.teacher[i], questions.tower[i] if towered else None, bool(questions.truncated[i]), next(refs) if r is not None else None)
        for i, (_, r) in enumerate(rows)
    ]


def bank_ref(batch: MicroBatch) -> Any:
    """The micro-batch's pinned bank version as a BankRef, or None for the bundle's own bank."""
    if not batch.bank:
        return None
    from pipeline.knowledge.bank_cache import BankRef  # here: producers import this module and need no pipeline

    return BankRef(batch.bank, batch.bank_version or "")


def bank_problem(stage: Any, ref: Any) -> str | None:
    """Why the pinned bank version cannot serve (removed, another encoder, no banks served), or None when it can."""
    if ref is None:
        return None
    from pipeline.errors import BankError

    try:
        stage.decoder_for(ref)
    except (BankError, ValueError) as exc:  # input-class: the same message on every retry
        return describe(exc) if isinstance(exc, BankError) else f"bank {ref}: {exc}"
    return None


def decode_rows(
    stage: Any, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]], bank: Any = None,
    min_confidence: float | None = None,
) -> list[tuple[Any, dict[str, float]]]:
    """Decoded answers (searched by answer vector and question text) with their quality metrics (against the reference
    where there is one)."""
    questions = np.stack([q for q, _, _, _ in rows])
    outputs = np.stack([a for _, a, _, _ in rows])
    texts = [t for _, _, _, t in rows]
    decoded = stage.decode(outputs, bank, min_confidence, texts if all(texts) else None)
    return list(zip(decoded, stage.score(questions, outputs, decoded, [r for _, _, r, _ in rows])))


def retrieve_rows(
    stage: Any, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]], bank: Any, depth: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's fused candidates for the rerank stage: bank rows (k,) and scores (k, 4)."""
    from pipeline.rerank.handoff import hits_to_arrays

    texts = [t for _, _, _, t in rows]
    hits = stage.retrieve(np.stack([a for _, a, _, _ in rows]), bank, texts if all(texts) else None, depth)
    return list(zip(*hits_to_arrays(hits)))


def rerank_rows(stage: Any, rows: list[tuple[Any, ...]], bank: Any, min_confidence: float | None) -> list[tuple[Any, dict[str, float]]]:
    """Reranked answers of rows (question, answer and reference vectors, question, candidates) with their metrics."""
    from pipeline.rerank.handoff import arrays_to_hits

    hits = arrays_to_hits(np.stack([row[4] for row in rows]), np.stack([row[5] for row in rows]))
    questions, outputs = np.stack([row[0] for row in rows]), np.stack([row[1] for row in rows])
    answers = stage.answer(hits, [row[3] for row in rows], questions, bank, min_confidence)
    return list(zip(answers, stage.decode_stage.score(questions, outputs, answers, [row[2] for row in rows])))


def outcomes_of(batch: MicroBatch, answers: list[Any]) -> list[JobOutcome]:
    """Each live job's answer and metrics (timings and hosts of every stage), then each failed job's error."""
    from pipeline.confidence import evidence

    timings = {name: round(value, 3) for name, value in batch.timings.items()}
    outcomes = [
        JobOutcome(
            job_id=job_id, answer=answer.text, decoder_path=answer.path, score=answer.score,
            metrics=metrics | ({"truncated": 1.0} if cut else {}), timings_ms=timings, hosts=dict(batch.hosts),
            confidence=answer.confidence, evidence=evidence(answer),
        )
        for job_id, (answer, metrics), cut in zip(batch.jobs, answers, batch.truncated)
    ]
    return outcomes + [JobOutcome(job_id=job_id, error=error, hosts=dict(batch.hosts)) for job_id, error in batch.failed]
