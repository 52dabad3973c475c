"""POST /v1/jobs (one question, optionally waiting for its answer) and GET /v1/jobs/{id}."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from cubeqa.api.deps import ServicesDep, SessionDep, full_id, guarded
from cubeqa.api.routes.intake import callback_of, checked_jobs, enqueue, pinned
from cubeqa.api.schemas import JobIn, JobPublic
from storage.models import FINAL, INTERACTIVE, Job
from storage.repository import job_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=guarded)
POLL = 0.01  # seconds between reads while waiting for an answer


@router.post("", status_code=202, response_model=JobPublic, responses={200: {"model": JobPublic, "description": "the job is final"}})
def create_job(
    item: JobIn,
    services: ServicesDep,
    response: Response,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the answer")] = 0,
) -> JobPublic:
    """Submit one question; with `wait`, return its answer if it is ready within that many seconds (200 once final)."""
    jobs = checked_jobs([item], services, ())
    callback = callback_of(services, item.callback_url, each_job=True)
    pin = pinned(services, item.bank, item.min_confidence, item.rerank)
    accepted = enqueue(services, jobs, None, 1, INTERACTIVE, pin, callback, interactive=True)  # a person waits: ahead of bulk
    job_id = accepted.job_ids[0]
    deadline = time.monotonic() + wait
    while True:
        with services.sessions() as session:  # a new session each time: a held one would return its cached row
            view = job_view(session=session, job_id=job_id)
        assert view is not None  # written before it was sent
        if view["status"] in FINAL or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    if view["status"] in FINAL:
        response.status_code = 200
    return JobPublic(**view)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, session: SessionDep) -> JobPublic:
    """One job: status, answer with its confidence and evidence, decoder path, score, metrics, per-stage timings and hosts."""
    view = job_view(session=session, job_id=full_id(session, Job, job_id))
    if view is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return JobPublic(**view)
