"""POST /v1/batches, GET /v1/batches (newest first), GET /v1/batches/{id}, its results as JSON lines and its webhooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from cubeqa.api.deps import ServicesDep, SessionDep, full_id, guarded
from cubeqa.api.routes.intake import callback_of, checked_jobs, enqueue, pinned
from cubeqa.api.schemas import Accepted, BatchIn, BatchList, BatchPublic, WebhookDeliveryPublic
from storage.hooks import deliveries_of
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
    callback = callback_of(services, batch.callback_url)
    pin = pinned(services, batch.bank, batch.min_confidence, batch.rerank)
    return enqueue(services, jobs, batch.key, batch.micro_batch, "api:batch", pin, callback)


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


@router.get("/{batch_id}/webhooks", response_model=list[WebhookDeliveryPublic])
def get_webhooks(batch_id: str, session: SessionDep) -> list[WebhookDeliveryPublic]:
    """The webhook deliveries of the batch and its jobs, oldest first: attempts, last status or error, delivery time."""
    found = full_id(session, Batch, batch_id)
    return [WebhookDeliveryPublic(**row) for row in deliveries_of(session=session, batch_id=found)]
