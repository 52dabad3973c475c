"""The dashboard's pages and the JSON its pages poll: batches, one batch (live), one job, compare, login."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from cubeqa.api.deps import ServicesDep, SessionDep, guarded
from cubeqa.api.routes.banks import BanksDep
from cubeqa.dashboard import charts
from cubeqa.dashboard.assets import asset_response, dashboard_files
from cubeqa.dashboard.auth import LOGIN, log_in, log_out, login_required, safe_next, token_matches
from cubeqa.dashboard.cache import FinishedBatches
from cubeqa.dashboard.compare import RATE_TEXTS, Side, comparison
from cubeqa.dashboard.pages import PER_PAGE, BatchView, CacheDep, PagesDep, embed
from pipeline.errors import BankNotFound
from pipeline.knowledge.store import BankInfo, BankStore, VersionInfo
from storage import dashboard_queries as q
from storage import metrics as registry
from storage.comparison import outcomes, version_setup, with_defaults
from storage.evidence import job_detail
from storage.models import STATUSES, Job, is_id
from storage.quality import RIGHT_COLUMN
from storage.summary import count_batches

router = APIRouter(prefix="/dashboard", include_in_schema=False)
LOGGED_IN = [Depends(login_required)]  # HTML pages: a visitor without the token goes to the login form
SideParam = Annotated[str | None, Query(max_length=300, description="batch id, or v:MODEL_VERSION")]
# the metrics compared where both sides answered (right answers are the outcome rates' business)
COMPARED = tuple(m.name for m in registry.METRICS if m.name != RIGHT_COLUMN)
SHARES_AXIS = "difference of shares, B − A (95% bootstrap interval)"


@functools.cache
def static_files() -> dict[str, Path]:
    """The files under /dashboard/static, found once per process."""
    return dashboard_files()


def one_batch(session: Session, cache: FinishedBatches[BatchView], batch_id: str) -> q.BatchRow:
    """The batch's row, or 404."""
    rows = cache.batch_rows(session, batch_id=batch_id) if is_id(batch_id) else []
    if not rows:
        raise HTTPException(404, "no such batch")
    return rows[0]


def pages_of(count: int) -> int:
    """Pages of PER_PAGE lines that `count` lines fill (at least one)."""
    return max(1, math.ceil(count / PER_PAGE))


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    """Our CSS, JS and icon, and plotly.js."""
    return asset_response(static_files(), name)


@router.get("", dependencies=LOGGED_IN, response_class=HTMLResponse)
def batches(
    pages: PagesDep, session: SessionDep, cache: CacheDep, number: Annotated[int, Query(alias="page", ge=1)] = 1,
    interactive: Annotated[bool, Query(description="also list the one-job batches of single questions")] = False,
) -> HTMLResponse:
    """Batches newest first."""
    rows = cache.batch_rows(session, limit=PER_PAGE, offset=(number - 1) * PER_PAGE, interactive=interactive)
    total = count_batches(session=session, interactive=interactive)
    return pages.render("batches.html", rows=rows, page=number, pages=pages_of(total), total=total,
                        interactive=interactive)


@router.get("/batches/{batch_id}", dependencies=LOGGED_IN, response_class=HTMLResponse)
def batch(
    pages: PagesDep,
    session: SessionDep,
    cache: CacheDep,
    batch_id: str,
    status: Annotated[str | None, Query(description="only jobs in this status")] = None,
    text: Annotated[str | None, Query(max_length=200, description="only jobs with it in question/answer/error")] = None,
    number: Annotated[int, Query(alias="page", ge=1)] = 1,
) -> HTMLResponse:
    """One batch: progress, quality distributions, stage times, workers and its jobs."""
    status = status if status in STATUSES else None
    row = one_batch(session, cache, batch_id)
    view = cache.batch_figures(session, row)
    jobs, matching = q.job_page(
        session, batch_id, status=status, text=text, page=number, per_page=PER_PAGE, counts=row.counts
    )
    filters = {k: v for k, v in (("status", status), ("text", text)) if v}
    return pages.render(
        "batch.html", row=row, view=view, charts_json=embed(view.charts), jobs=jobs, matching=matching, page=number,
        pages=pages_of(matching), status=status, text=text or "", statuses=STATUSES,
        query=lambda **extra: urlencode({**filters, **extra}),
    )


@router.get("/batches/{batch_id}/progress.json", dependencies=guarded)
def progress(session: SessionDep, cache: CacheDep, batch_id: str) -> JSONResponse:
    """Counts by status and throughput (polled every second by a running batch's page)."""
    return JSONResponse(one_batch(session, cache, batch_id).progress(), headers={"Cache-Control": "no-store"})


@router.get("/batches/{batch_id}/charts.json", dependencies=guarded)
def batch_charts(session: SessionDep, cache: CacheDep, batch_id: str) -> JSONResponse:
    """The batch page's charts and the numbers beside them, for its live refresh."""
    view = cache.batch_figures(session, one_batch(session, cache, batch_id))
    return JSONResponse(view.json(), headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}", dependencies=LOGGED_IN, response_class=HTMLResponse)
def job(pages: PagesDep, session: SessionDep, job_id: str) -> HTMLResponse:
    """A job: its answer judged (confidence against its threshold), evidence and alternatives, and its full record."""
    record = q.job_record(session, job_id) if is_id(job_id) else None
    detail = job_detail(session, job_id) if record is not None else None
    if record is None or detail is None:
        raise HTTPException(404, "no such job")
    return pages.render("job.html", job=detail, record_json=json.dumps(record, indent=2, ensure_ascii=False))


def side(session: Session, cache: FinishedBatches[BatchView], name: str, value: str) -> Side:
    """One side of a comparison: a batch id or `v:MODEL_VERSION`, with its setup and its questions' outcomes."""
    if value.startswith("v:"):
        version = value[2:]
        setup = with_defaults(session, version_setup(session, version), Job.model_version == version)
        return Side(f"model version {version}", setup, outcomes(session, version=version))
    if is_id(value):
        row = one_batch(session, cache, value)
        title = f"batch {row.id[:12]}" + (f" ({row.source})" if row.source else "")
        return Side(title, with_defaults(session, row.setup, Job.batch_id == value), outcomes(session, batch_id=value))
    raise HTTPException(422, f"{name}: give a batch id or v:MODEL_VERSION")


@router.get("/compare", dependencies=LOGGED_IN, response_class=HTMLResponse)
def compare_page(
    pages: PagesDep, session: SessionDep, cache: CacheDep, a: SideParam = None, b: SideParam = None
) -> HTMLResponse:
    """Two batches or two model versions on the questions they share: outcome rates and metric differences with
    paired intervals, and the questions whose outcome differs."""
    sides = {name: side(session, cache, name, value) for name, value in (("a", a), ("b", b)) if value}
    result, drawn = None, {}
    if len(sides) == 2:
        result = comparison(sides["a"].outcomes, sides["b"].outcomes, COMPARED)
        rate_labels = {k: label for k, (label, _) in RATE_TEXTS.items()}
        drawn = {"rates": charts.diff_chart(result.rates, rate_labels, SHARES_AXIS, "figure"),
                 "diff": charts.diff_chart(result.metrics, {m.name: m.label for m in registry.METRICS})}
    return pages.render(
        "compare.html", options=cache.batch_rows(session, limit=200), versions=q.model_versions(session),
        a=a or "", b=b or "", sides=sides, result=result, rate_texts=RATE_TEXTS, charts_json=embed(drawn),
    )


@router.get("/banks", dependencies=LOGGED_IN, response_class=HTMLResponse)
def banks_page(pages: PagesDep, banks: BanksDep) -> HTMLResponse:
    """The knowledge banks with their versions and sizes."""
    return pages.render("banks.html", banks=[(info, kept_versions(banks.store, info)) for info in banks.store.infos()])


def kept_versions(store: BankStore, info: BankInfo) -> list[VersionInfo]:
    """A bank's versions, none for one that cannot be read or was removed a moment ago."""
    try:
        return [] if info.problem else store.versions(info.name)
    except BankNotFound:
        return []


@router.get("/login", response_class=HTMLResponse)
def login_form(
    pages: PagesDep, services: ServicesDep, next_page: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The login form (without a token configured, straight on)."""
    if services.token is None:
        return RedirectResponse(safe_next(next_page), status_code=303)
    return pages.render("login.html", next_page=safe_next(next_page), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, pages: PagesDep, services: ServicesDep) -> Response:
    """Checks the token from the form; sets the login cookie (the form's values are never echoed)."""
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    target = safe_next(form.get("next", [""])[0])
    if services.token is None:
        return RedirectResponse(target, status_code=303)
    if not token_matches(services, (form.get("token") or [""])[0]):
        return pages.render("login.html", status_code=401, next_page=target, error="Wrong token.")
    response = RedirectResponse(target, status_code=303)
    log_in(response, services.token, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    """Forgets the login and goes back to the form."""
    response = RedirectResponse(LOGIN, status_code=303)
    log_out(response)
    return response
