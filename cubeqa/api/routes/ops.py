"""Operations: liveness, health of the database and broker, Prometheus metrics (no auth: probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from cubeqa.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process serves requests (for liveness probes; says nothing about the database or broker)."""
    return {"status": "ok"}


@router.get("/healthz")
def healthz(services: ServicesDep) -> JSONResponse:
    """Database and broker reachable."""
    checks: dict[str, str] = {}
    try:
        with services.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure is reported, not raised
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        services.broker.ping()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus exposition: jobs by status, stage latencies, queue depth and backlog."""
    return PlainTextResponse(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)
