"""The app factory: services from settings, request-size and validation-error handling, the routers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry

from cubeqa import dashboard
from cubeqa.api.bank_builds import bank_service
from cubeqa.api.deps import Services
from cubeqa.api.routes import banks, batches, control, jobs, ops
from cubeqa.metrics import StoreCollector
from cubeqa.settings import Settings
from cubeqa.wiring import celery_app, hook_policy, open_store, pin_bank, redis_client
from tasks.app import served_stages


def create_app(settings: Settings) -> FastAPI:
    """The API for these settings: its own store sessions, Celery producer and metrics registry."""
    sessions = open_store(settings)
    celery_app(settings)
    broker = redis_client(settings.broker_url)
    registry = CollectorRegistry()
    registry.register(StoreCollector(sessions, broker, settings.queue_wait_warn))
    app = FastAPI(title="cubeqa", version="1",
                  description="Question answering jobs through encode → cube → decode workers.",
                  docs_url=None, redoc_url=None)  # served from installed files by offline_docs: no CDN
    app.state.services = Services(
        sessions=sessions, broker=broker, registry=registry,
        token=settings.api_token.get_secret_value().encode() if settings.api_token else None,
        micro_batch=settings.micro_batch, max_question_chars=settings.max_question_chars,
        max_batch_items=settings.max_batch_items,
        pin=lambda bank, min_confidence, rerank: pin_bank(settings, bank, min_confidence, rerank),
        stages=served_stages(settings.bundle_dir), hooks=hook_policy(settings),
    )
    max_bytes = settings.max_request_bytes

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """422 naming each invalid field, as FastAPI's own, but ASCII-escaped: the input it echoes may hold
        lone surrogates, which UTF-8 cannot encode."""
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """400 for a malformed Content-Length, 413 for one over the limit, before the body is read."""
        length = request.headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return JSONResponse({"detail": f"invalid Content-Length header {length[:40]!r}"}, status_code=400)
        if length is not None and int(length) > max_bytes:
            return JSONResponse({"detail": f"request body larger than {max_bytes} bytes"}, status_code=413)
        return await call_next(request)

    app.state.finished_batches = dashboard.FinishedBatches(dashboard.batch_view)  # the dashboard's, per app
    app.state.banks = bank_service(settings, broker)
    for router in (jobs.router, batches.router, control.batches, control.jobs, ops.router, banks.router, dashboard.router):
        app.include_router(router)
    dashboard.offline_docs(app)
    return app
