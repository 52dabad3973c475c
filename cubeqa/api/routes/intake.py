"""Request items to jobs through `cubeqa.intake` (the CLI's checks), refused as FastAPI's own 422 or a 413."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from cubeqa.api.deps import Services
from cubeqa.api.schemas import Accepted, QuestionIn
from cubeqa.intake import TooManyItems, check_callback_url, check_count, item_problems
from pipeline.errors import BankNotFound, InputError
from storage.hooks import Callback
from storage.repository import NewJob, Pin
from tasks.hooks import UnsafeCallback
from tasks.producer import BrokerUnavailable, submit


def checked_jobs(items: Sequence[QuestionIn], services: Services, where: tuple[str | int, ...]) -> list[NewJob]:
    """Jobs from the items, or a 422 naming every bad field (at `where` + index + field) or a 413 for too many."""
    try:
        check_count(len(items), services.max_batch_items)
    except TooManyItems as exc:
        raise HTTPException(413, str(exc)) from exc
    jobs: list[NewJob] = []
    errors: list[dict[str, object]] = []
    for i, item in enumerate(items):
        job = item_problems(item.question, item.reference, services.max_question_chars, alt_answers=item.alt_answers)
        if isinstance(job, list):
            at = (*where, i) if where else ()
            errors += [{"type": "value_error", "loc": ("body", *at, problem.field), "msg": str(problem)} for problem in job]
        else:
            jobs.append(job)
    if errors:
        raise RequestValidationError(errors)
    return jobs


def pinned(services: Services, bank: str | None, min_confidence: float | None, rerank: bool | None = None) -> Pin:
    """The bank named (None: the configured one) at its current version, or a 422 naming it when there is no such bank
    (or a rerank this server cannot give)."""
    try:
        return services.pin(bank, min_confidence, rerank)
    except BankNotFound as exc:  # the message names the server's bank directory: not for clients
        shown = bank if bank is not None else "(the configured default)"
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "bank"), "msg": f"no knowledge bank named {shown!r}"}]) from exc
    except InputError as exc:
        field = "rerank" if str(exc).startswith("cannot rerank") else "bank"
        raise RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": str(exc)}]) from exc


def callback_of(services: Services, url: str | None, *, each_job: bool = False) -> Callback | None:
    """The submission's callback, or a 422 naming `callback_url` and why this service will not post there."""
    try:
        return check_callback_url(url, services.hooks, each_job=each_job)
    except UnsafeCallback as exc:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "callback_url"), "msg": str(exc)}]) from exc


def enqueue(services: Services, jobs: list[NewJob], key: str | None, micro_batch: int | None, source: str, pin: Pin,
            callback: Callback | None = None, *, interactive: bool = False) -> Accepted:
    """Stores and sends the jobs pinned to `pin` (ahead of bulk work when `interactive`); 503 when the broker is down
    (they stay stored for the reconciler)."""
    try:
        result = submit(services.sessions, jobs, micro_batch=micro_batch or services.micro_batch, key=key, source=source, pin=pin,
                        callback=callback, interactive=interactive)
    except BrokerUnavailable as exc:
        raise HTTPException(503, "queue unavailable; the jobs are stored and will be sent by the reconciler") from exc
    return Accepted(batch_id=result.batch_id, job_ids=result.job_ids, created=result.created, jobs=result.jobs)
