"""The HTTP API (FastAPI): submit jobs and batches, read progress and results, health and metrics."""

# No `from __future__ import annotations`: FastAPI must see the real annotations of the nested endpoints.

import hmac
import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import text

from cubeqa.dashboard import add_dashboard, offline_docs
from cubeqa.intake import check_characters, check_key
from cubeqa.metrics import StoreCollector
from cubeqa.settings import Settings
from cubeqa.wiring import celery_app, open_store, redis_client
from storage.models import KEY_LENGTH, is_id
from storage.repository import NewJob, batch_summary, iter_results, job_view
from tasks.producer import BrokerUnavailable, submit


class QuestionIn(BaseModel):
    """One question, optionally with a reference answer to score against."""

    question: str = Field(min_length=1, description="the question text")
    reference: str | None = Field(None, description="a reference answer; adds quality metrics to the result")

    @field_validator("question")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is empty or whitespace only")
        check_characters(value, "question")
        return value

    @field_validator("reference")
    @classmethod
    def blank_reference_is_none(cls, value: str | None) -> str | None:
        if value is not None:
            check_characters(value, "reference")
        return value if value and value.strip() else None


class BatchIn(BaseModel):
    items: list[QuestionIn] = Field(min_length=1, description="the questions")
    key: str | None = Field(None, max_length=KEY_LENGTH, description="idempotency key: resubmitting with it is a no-op")
    micro_batch: int | None = Field(None, ge=1, le=1024, description="jobs per stage task")

    @field_validator("key")
    @classmethod
    def storable_key(cls, value: str | None) -> str | None:
        return None if value is None else check_key(value)


class Accepted(BaseModel):
    batch_id: str
    job_ids: list[str] = Field(default_factory=list)
    created: bool
    jobs: int


def create_app(settings: Settings) -> FastAPI:
    """The API for these settings: its own store sessions, Celery producer and metrics registry."""
    sessions = open_store(settings)
    celery_app(settings)
    broker = redis_client(settings.broker_url)
    registry = CollectorRegistry()
    registry.register(StoreCollector(sessions, broker))
    token = settings.api_token.get_secret_value().encode() if settings.api_token else None
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="cubeqa", version="1", description="Question answering jobs through encode → cube → decode workers.",
                  docs_url=None, redoc_url=None)
    offline_docs(app)
    add_dashboard(app, sessions, settings)
    guarded = [Depends(authorised)]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """422 naming each invalid field, as FastAPI's own, but ASCII-escaped: the input it echoes may hold
        lone surrogates, which UTF-8 cannot encode."""
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette middleware signature
        length = request.headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return JSONResponse({"detail": f"invalid Content-Length header {length[:40]!r}"}, status_code=400)
        if length is not None and int(length) > settings.max_request_bytes:
            return JSONResponse({"detail": f"request body larger than {settings.max_request_bytes} bytes"}, status_code=413)
        return await call_next(request)

    def check_items(items: list[QuestionIn]) -> list[NewJob]:
        if len(items) > settings.max_batch_items:
            raise HTTPException(413, f"{len(items)} items; a batch holds at most {settings.max_batch_items}")
        jobs = []
        for i, item in enumerate(items):
            for name, value in (("question", item.question), ("reference", item.reference)):
                if value is not None and len(value) > settings.max_question_chars:
                    raise HTTPException(422, f"items[{i}].{name} has {len(value)} characters; the limit is {settings.max_question_chars}")
            jobs.append(NewJob(question=item.question, reference=item.reference))
        return jobs

    def enqueue(jobs: list[NewJob], key: str | None, micro_batch: int | None, source: str) -> Accepted:
        try:
            result = submit(sessions, jobs, micro_batch=micro_batch or settings.micro_batch, key=key, source=source)
        except BrokerUnavailable as exc:
            raise HTTPException(503, "queue unavailable; the jobs are stored and will be sent by the reconciler") from exc
        return Accepted(batch_id=result.batch_id, created=result.created, jobs=result.jobs)

    @app.post("/v1/jobs", status_code=202, dependencies=guarded, response_model=dict[str, Any])
    def create_job(item: QuestionIn, wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the answer")] = 0) -> dict[str, Any]:
        """Submit one question; with `wait`, return its answer if it is ready within that many seconds."""
        accepted = enqueue(check_items([item]), None, 1, "api:job")
        job_id = next(iter_results(sessions, accepted.batch_id))["id"]
        deadline = time.monotonic() + wait
        view = job_view(sessions, job_id)
        while view and view["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.02)
            view = job_view(sessions, job_id)
        return view or {}

    @app.post("/v1/batches", status_code=202, dependencies=guarded, response_model=Accepted)
    def create_batch(batch: BatchIn) -> Accepted:
        """Submit many questions as one batch; a repeated idempotency key returns the existing batch."""
        return enqueue(check_items(batch.items), batch.key, batch.micro_batch, "api:batch")

    @app.get("/v1/jobs/{job_id}", dependencies=guarded)
    def get_job(job_id: str) -> dict[str, Any]:
        """One job: status, answer, decoder path, score, metrics, per-stage timings and hosts."""
        view = job_view(sessions, job_id) if is_id(job_id) else None
        if view is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return view

    @app.get("/v1/batches/{batch_id}", dependencies=guarded)
    def get_batch(batch_id: str) -> dict[str, Any]:
        """Progress (counts by status) and quality aggregates of a batch."""
        summary = batch_summary(sessions, batch_id) if is_id(batch_id) else None
        if summary is None:
            raise HTTPException(404, f"no batch {batch_id!r}")
        return summary.to_dict()

    @app.get("/v1/batches/{batch_id}/results", dependencies=guarded, response_class=StreamingResponse)
    def get_results(batch_id: str) -> StreamingResponse:
        """Every job of the batch in input order, streamed as JSON lines."""
        if not is_id(batch_id) or batch_summary(sessions, batch_id) is None:
            raise HTTPException(404, f"no batch {batch_id!r}")

        def lines() -> Iterator[bytes]:
            for row in iter_results(sessions, batch_id):
                yield (json.dumps(row, ensure_ascii=False) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/livez")
    def livez() -> dict[str, str]:
        """The process serves requests (for liveness probes; says nothing about the database or broker)."""
        return {"status": "ok"}

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Database and broker reachable."""
        checks: dict[str, str] = {}
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            broker.ping()
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = f"error: {type(exc).__name__}"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus exposition: jobs by status, stage latencies, queue depth and backlog."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
