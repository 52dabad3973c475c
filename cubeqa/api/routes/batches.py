"""POST /v1/batches, GET /v1/batches (newest first), GET /v1/batches/{id} and its results as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from cubeqa.api.deps import ServicesDep, SessionDep, full_id, guarded
from cubeqa.api.routes.intake import checked_jobs, enqueue, pinned
from cubeqa.api.schemas import Accepted, BatchIn, BatchList, BatchPublic
from storage.models import Batch
from storage.repository import iter_results
from storage.summary import batch_summary, count_batches, list_batches

router = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=guarded)
PAGE = 50
MAX_PAGE = 500
MAX_OFFSET = 2**31 - 1  # within every backend's integer


@router.post("", status_code=202, response_model=Accepted)
def create_batch(batch: BatchIn, services: ServicesDep) -> Accepted:
    """Submit many questions as one batch, answered from one pinned bank version; a repeated idempotency key returns the existing batch."""
    jobs = checked_jobs(batch.items, services, ("items",))
    return enqueue(services, jobs, batch.key, batch.micro_batch, "api:batch", pinned(services, batch.bank, batch.min_confidence, batch.rerank))


@router.get("", response_model=BatchList)
def get_batches(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="batches to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="batches to return")] = PAGE,
    interactive: Annotated[bool, Query(description="also list the one-job batches of single questions (POST /v1/jobs)")] = False,
) -> BatchList:
    """Batches newest first, a page at a time, each with its progress and quality aggregates."""
    page = list_batches(session=session, offset=offset, limit=limit, interactive=interactive)
    total = count_batches(session=session, interactive=interactive)
    return BatchList(batches=[BatchPublic.of(s) for s in page], total=total, offset=offset, limit=limit)


@router.get("/{batch_id}", response_model=BatchPublic)
def get_batch(batch_id: str, session: SessionDep) -> BatchPublic:
    """Progress (counts by status) and quality aggregates of a batch."""
    summary = batch_summary(session=session, batch_id=full_id(session, Batch, batch_id))
    if summary is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return BatchPublic.of(summary)


@router.get("/{batch_id}/results", response_class=StreamingResponse)
def get_results(batch_id: str, services: ServicesDep) -> StreamingResponse:
    """Every job of the batch in input order, streamed as JSON lines."""
    with services.sessions() as session:
        batch_id = full_id(session, Batch, batch_id)

    def lines() -> Iterator[bytes]:
        with services.sessions() as session:  # its own session: it outlives the request's dependencies
            for row in iter_results(session=session, batch_id=batch_id):
                yield (json.dumps(row, ensure_ascii=False) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
