"""POST /v1/batches/{id}/cancel, /pause, /resume, /retry and POST /v1/jobs/{id}/cancel (tasks.control)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.orm import Session, sessionmaker

from cubeqa.api.deps import ServicesDep, full_id, guarded
from cubeqa.api.schemas import BatchPublic, Controlled
from storage.control import ControlError
from storage.models import Batch, Job
from storage.summary import batch_summary
from tasks import control
from tasks.producer import BrokerUnavailable

batches = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=guarded)
jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=guarded)
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the control does not fit the batch's or job's state (e.g. retry of a cancelled batch)"},
}
Action = Callable[[sessionmaker[Session], str], control.ControlReport]


def controlled(services: ServicesDep, model: type[Batch] | type[Job], given: str, action: Action) -> Controlled:
    """Runs `action` on the batch or job `given` names (an id or a unique prefix); 409 when it does not fit its state,
    503 when jobs it queued could not be sent (they are stored: the reconciler sends them)."""
    with services.sessions() as session:
        target = full_id(session, model, given)
    try:
        report = action(services.sessions, target)
    except LookupError as exc:  # a full-length id is not looked up by full_id
        raise HTTPException(404, str(exc)) from exc
    except ControlError as exc:
        raise HTTPException(409, str(exc)) from exc
    except BrokerUnavailable as exc:
        raise HTTPException(503, "queue unavailable; the jobs are stored and will be sent by the reconciler") from exc
    with services.sessions() as session:
        summary = batch_summary(session=session, batch_id=report.batch_id)
    assert summary is not None  # batches are never deleted
    return Controlled(action=report.action, jobs=report.jobs, sent=report.sent, batch=BatchPublic.of(summary))


@batches.post("/{batch_id}/cancel", response_model=Controlled, responses=CONFLICT)
def cancel_batch(batch_id: str, services: ServicesDep) -> Controlled:
    """Cancel every unfinished job of the batch: no result is written for them once this returns."""
    return controlled(services, Batch, batch_id, control.cancel)


@batches.post("/{batch_id}/pause", response_model=Controlled, responses=CONFLICT)
def pause_batch(batch_id: str, services: ServicesDep) -> Controlled:
    """Pause the batch: its micro-batches not yet started wait (work already past the encode stage finishes)."""
    return controlled(services, Batch, batch_id, control.pause)


@batches.post("/{batch_id}/resume", response_model=Controlled, responses=CONFLICT)
def resume_batch(batch_id: str, services: ServicesDep) -> Controlled:
    """Resume a paused batch: the jobs its pause held are sent again."""
    def resume(sessions: sessionmaker[Session], target: str) -> control.ControlReport:
        return control.resume(sessions, target, services.micro_batch)

    return controlled(services, Batch, batch_id, resume)


@batches.post("/{batch_id}/retry", response_model=Controlled, responses=CONFLICT)
def retry_batch(
    batch_id: str,
    services: ServicesDep,
    failed: Annotated[bool, Query(description="retry the jobs that failed")] = True,
    refused: Annotated[bool, Query(description="retry the jobs answered 'no confident answer' too")] = False,
) -> Controlled:
    """New attempts of the batch's failed (and refused) jobs: same ids, attempt count up; answered jobs stay."""
    def retry(sessions: sessionmaker[Session], target: str) -> control.ControlReport:
        return control.retry(sessions, target, services.micro_batch, failed=failed, refused=refused)

    return controlled(services, Batch, batch_id, retry)


@jobs.post("/{job_id}/cancel", response_model=Controlled, responses=CONFLICT)
def cancel_job(job_id: str, services: ServicesDep) -> Controlled:
    """Cancel one job that is not final: no result is written for it once this returns."""
    return controlled(services, Job, job_id, control.cancel_one)
