"""Operations: liveness, readiness (database, broker), every stage's health, Prometheus metrics (no auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from cubeqa.api.deps import Services, ServicesDep
from tasks.health import StageHealth, probe_stages

router = APIRouter(tags=["operations"])


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process serves requests (for liveness probes; says nothing about the database or broker)."""
    return {"status": "ok"}


def service_checks(services: Services) -> dict[str, str]:
    """The database and the broker: "ok" or the error's type."""
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
    return checks


def verdict(checks: dict[str, str]) -> JSONResponse:
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """This API can take jobs: database and broker reachable (the readiness probe; says nothing about the workers)."""
    return verdict(service_checks(services))


@router.get("/healthz")
def healthz(
    services: ServicesDep,
    timeout: Annotated[float, Query(gt=0, le=30, description="seconds each stage has to answer its ping")] = 5.0,
) -> JSONResponse:
    """The whole system: database, broker, and each stage proven by a ping through its queue within `timeout`;
    503 naming what failed (a stage with no live worker: "error: no live worker on queue encode")."""
    checks = service_checks(services)
    if checks["broker"] == "ok":
        try:
            for result in probe_stages(timeout, services.stages):
                checks[result.stage] = "ok" if result.ok else f"error: {stage_problem(result, timeout)}"
        except Exception as exc:  # the broker went away mid-probe
            checks["stages"] = f"error: {type(exc).__name__}"
    return verdict(checks)


def stage_problem(result: StageHealth, timeout: float) -> str:
    if result.worker is None:
        return f"no live worker on queue {result.stage} answered within {timeout:g} s"
    return f"{result.worker}: {result.problem}"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus exposition: jobs by status, stage latencies, queue depth and backlog."""
    return PlainTextResponse(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)
