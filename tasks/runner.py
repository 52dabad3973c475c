"""What every stage task shares: registration, retry policy, message decoding, timing stamp, logs, per-item isolation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Task
from celery.exceptions import Reject
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import CubeQAError
from storage.control import park, stage_control
from tasks import runtime
from tasks.app import STAGES, TASK_NAMES, app
from tasks.errors import TRANSIENT
from tasks.wire import MicroBatch

log = logging.getLogger("tasks.stages")

RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 12,
}
ERROR_CHARS = 500

# body(batch, runtime, stage model) -> what the task returns (the next stage's message, or a report)
StageBody = Callable[[MicroBatch, runtime.Runtime, Any, Callable[[], None]], dict[str, Any]]


def stage_task(stage: str) -> Callable[[StageBody], Task]:
    """Registers `body` as the `stage` task: routed to the stage's queue, acknowledged late, retried with
    exponential backoff on transient faults; it reads the message as a MicroBatch and logs batch and jobs.

    The body gets a `stamp()` to record the stage's host, model version and timings; it calls it when the
    stage's work is done (decode stamps before it writes the results, which carry the timings).
    """

    def register(body: StageBody) -> Task:
        def run(task: Task, message: dict[str, Any]) -> dict[str, Any]:
            started = time.time()
            batch = MicroBatch.from_wire(message)
            rt = runtime.current()
            try:
                model = rt.stage(stage)
            except runtime.StageUnavailable as exc:  # not consumed: back to the queue for a worker that can serve it
                log.error("%s batch=%s refused: %s", stage, batch.batch, exc)
                raise Reject(str(exc), requeue=True) from exc
            if not honour_controls(rt.sessions, batch, stage):
                task.request.chain = None  # every job cancelled or held: the later stages would get none
                return batch.to_wire()
            n = len(batch.jobs)
            attempt = task.request.retries + 1
            log.info("%s batch=%s jobs=%d attempt=%d", stage, batch.batch, n, attempt)
            log.debug("%s batch=%s job_ids=%s", stage, batch.batch, ",".join(batch.jobs))

            def stamp() -> None:
                batch.stamp(stage, task.request.hostname or "", model.model_version, started, n)

            try:
                result = body(batch, rt, model, stamp)
            except Exception as exc:  # logged with its jobs, then retried (transient) or failed by Celery
                log.warning("%s batch=%s attempt=%d job_ids=%s: %s", stage, batch.batch, attempt, ",".join(batch.jobs), describe(exc))
                raise
            log.info("%s batch=%s done failed=%d", stage, batch.batch, len(batch.failed))
            return result

        run.__name__ = run.__qualname__ = body.__name__
        run.__doc__ = body.__doc__
        return app.task(name=TASK_NAMES[stage], bind=True, acks_late=True, **RETRY)(run)

    return register


def honour_controls(sessions: sessionmaker[Session], batch: MicroBatch, stage: str) -> bool:
    """Drops the micro-batch's cancelled jobs and, at the first stage, holds the jobs of a paused batch (park) and
    drops those too; returns whether any job is left to work on or write. Read before the stage works: a micro-batch
    already inside a stage finishes it, and `record_outcomes` writes nothing on a job whose cancel committed first."""
    ids = batch.jobs + [job for job, _ in batch.failed]
    if not ids:
        return False
    with sessions() as session:
        control = stage_control(session=session, batch_id=batch.batch, job_ids=ids)
    gone = set(control.cancelled)
    if control.paused and stage == STAGES[0]:
        with sessions.begin() as session:
            gone |= set(park(session=session, job_ids=batch.jobs))
    if gone:
        log.info("%s batch=%s dropped %d cancelled or held jobs", stage, batch.batch, len(gone))
        batch.drop_jobs(gone)
    return bool(batch.jobs or batch.failed)


def describe(exc: BaseException) -> str:
    """A stored, user-facing error: the message of our typed errors, type and message otherwise."""
    text = str(exc) if isinstance(exc, CubeQAError) else f"{type(exc).__name__}: {exc}"
    return text[:ERROR_CHARS]


def isolate(fn: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> tuple[list[Any], dict[int, str]]:
    """Runs `fn` over all items at once; if that raises (not transiently), runs each item alone
    so that only the items that raise fail. Returns per-item results (None where failed) and errors."""
    try:
        return list(fn(items)), {}
    except TRANSIENT:
        raise
    except Exception as exc:  # any error of one input must not sink the micro-batch
        if len(items) == 1:
            return [None], {0: describe(exc)}
    results: list[Any] = []
    errors: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            results.append(fn([item])[0])
        except TRANSIENT:
            raise
        except Exception as exc:
            results.append(None)
            errors[i] = describe(exc)
    return results, errors


def in_background(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Runs fn(*args) in its own thread, so a SQL round trip overlaps the model's work; `.result()` joins it
    and re-raises its error (marking jobs running is a round trip and a commit on PostgreSQL)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cubeqa-sql")
    future = executor.submit(fn, *args)
    executor.shutdown(wait=False)
    return future
