"""The dashboard's pages and the JSON its pages poll: batches, one batch (live), one job, compare."""

# No `from __future__ import annotations`: FastAPI must see the real annotations of the nested endpoints.

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from cubeqa.dashboard import charts
from cubeqa.dashboard.assets import asset_response, dashboard_files
from cubeqa.dashboard.auth import COOKIE, SESSION_DAYS, DashboardAuth, safe_next
from cubeqa.dashboard.cache import FinishedBatches
from cubeqa.dashboard.compare import compare
from cubeqa.settings import Settings
from storage import dashboard_queries as q
from storage.models import STATUSES, is_id

HERE = Path(__file__).resolve().parent
PER_PAGE = 50
# Scripts and styles from this app only (nothing from a CDN); plotly.js sets inline styles on its SVG.
CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
METRIC_LABELS = {
    "score": "answer score", "e2e_cos": "e2e_cos", "cube_gain": "cube_cos − identity_cos", "cube_cos": "cube_cos",
    "identity_cos": "identity_cos", "decode_fidelity": "decode_fidelity", "echo": "echo share",
}


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "–"


def number(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def embed(value: Any) -> str:
    """JSON safe inside a <script type="application/json"> element (no "</script>" can end it early)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def batch_charts(session: Session, row: q.BatchRow) -> dict[str, Any]:
    """Every chart of the batch page, plus the figures shown beside them."""
    figures = q.batch_figures(session, row)
    return {
        "charts": {
            "score": charts.histogram_chart(figures["score"], "answer score (the decoder's score, a cosine)"),
            "e2e_cos": charts.histogram_chart(figures["e2e_cos"], "e2e_cos (cosine of answer to reference)", charts.COLOURS["green"]),
            "cube_gain": charts.histogram_chart(figures["cube_gain"], "cube_cos − identity_cos (cosine difference)", charts.COLOURS["b"]),
            "paths": charts.paths_chart(figures["paths"]),
            "stages": charts.stage_chart(figures["times"]),
            "throughput": charts.throughput_chart(figures["throughput"]),
        },
        "means": {name: figures[name]["mean"] for name in ("score", "e2e_cos", "cube_gain")},
        "counts": {name: figures[name]["n"] for name in ("score", "e2e_cos", "cube_gain")},
        **{name: figures[name] for name in ("echo", "paths", "times", "workers")},
    }


def add_dashboard(app: FastAPI, sessions: sessionmaker[Session], settings: Settings) -> None:
    """Adds the /dashboard pages on this store to the app; they need the API token when one is set.

    Routes go on the app itself, not an included APIRouter: FastAPI's included routers are not plain routes
    (no `.path`), which code listing `app.routes` expects."""
    auth = DashboardAuth(settings.api_token.get_secret_value().encode() if settings.api_token else None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(when=when, number=number)
    templates.env.globals.update(auth_enabled=auth.enabled, labels=METRIC_LABELS, path_labels=charts.PATH_LABELS)
    files = dashboard_files()
    cache = FinishedBatches(batch_charts)

    def route(method: str, path: str, **options: Any) -> Any:
        return getattr(app, method)("/dashboard" + path, include_in_schema=False, **options)

    page = [Depends(auth.page)]
    data = [Depends(auth.data)]

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        response = templates.TemplateResponse(request, template, context, status_code=status_code)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def one_batch(session: Session, batch_id: str) -> q.BatchRow:
        rows = cache.batch_rows(session, batch_id=batch_id) if is_id(batch_id) else []
        if not rows:
            raise HTTPException(404, "no such batch")
        return rows[0]

    @route("get", "/static/{name}")
    def asset(name: str) -> FileResponse:
        return asset_response(files, name)

    @route("get", "", dependencies=page, response_class=HTMLResponse)
    def batches(request: Request, page_number: Annotated[int, Query(alias="page", ge=1)] = 1) -> HTMLResponse:
        """Batches newest first."""
        with sessions() as session:
            rows = cache.batch_rows(session, limit=PER_PAGE, offset=(page_number - 1) * PER_PAGE)
            total = q.batch_count(session)
        return render(request, "batches.html", rows=rows, page=page_number, pages=max(1, math.ceil(total / PER_PAGE)), total=total)

    @route("get", "/batches/{batch_id}", dependencies=page, response_class=HTMLResponse)
    def batch(
        request: Request,
        batch_id: str,
        status: Annotated[str | None, Query(description="only jobs in this status")] = None,
        text: Annotated[str | None, Query(max_length=200, description="only jobs whose question, answer or error holds this")] = None,
        page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
    ) -> HTMLResponse:
        """One batch: progress, quality distributions, stage times, workers and its jobs."""
        status = status if status in STATUSES else None
        with sessions() as session:
            row = one_batch(session, batch_id)
            figures = cache.batch_figures(session, row)
            jobs, matching = q.job_page(
                session, batch_id, status=status, text=text, page=page_number, per_page=PER_PAGE, counts=row.counts
            )
        filters = {k: v for k, v in (("status", status), ("text", text)) if v}
        return render(
            request, "batch.html", row=row, figures=figures, charts_json=embed(figures["charts"]), workers=figures["workers"], jobs=jobs,
            matching=matching, page=page_number, pages=max(1, math.ceil(matching / PER_PAGE)), status=status, text=text or "",
            statuses=STATUSES, query=lambda **extra: urlencode({**filters, **extra}),
        )

    @route("get", "/batches/{batch_id}/progress.json", dependencies=data)
    def progress(batch_id: str) -> JSONResponse:
        """Counts by status and throughput (polled every second by a running batch's page)."""
        with sessions() as session:
            return JSONResponse(one_batch(session, batch_id).progress(), headers={"Cache-Control": "no-store"})

    @route("get", "/batches/{batch_id}/charts.json", dependencies=data)
    def batch_chart_data(batch_id: str) -> JSONResponse:
        """The batch page's charts and figures, for its live refresh."""
        with sessions() as session:
            figures = cache.batch_figures(session, one_batch(session, batch_id))
        return JSONResponse(figures, headers={"Cache-Control": "no-store"})

    @route("get", "/jobs/{job_id}", dependencies=page, response_class=HTMLResponse)
    def job(request: Request, job_id: str) -> HTMLResponse:
        """A job's full record."""
        with sessions() as session:
            record = q.job_record(session, job_id) if is_id(job_id) else None
        if record is None:
            raise HTTPException(404, "no such job")
        return render(request, "job.html", record=record, record_json=json.dumps(record, indent=2, ensure_ascii=False))

    @route("get", "/compare", dependencies=page, response_class=HTMLResponse)
    def compare_page(
        request: Request,
        a: Annotated[str | None, Query(max_length=300, description="batch id, or v:MODEL_VERSION")] = None,
        b: Annotated[str | None, Query(max_length=300, description="batch id, or v:MODEL_VERSION")] = None,
    ) -> HTMLResponse:
        """Two batches or two model versions on the questions they share: paired differences with intervals."""
        with sessions() as session:
            options = cache.batch_rows(session, limit=200)
            versions = q.model_versions(session)
            sides = {}
            for name, value in (("a", a), ("b", b)):
                if not value:
                    continue
                if value.startswith("v:"):
                    sides[name] = q.per_question(session, version=value[2:])
                elif is_id(value):
                    sides[name] = q.per_question(session, batch_id=value)
                else:
                    raise HTTPException(422, f"{name}: give a batch id or v:MODEL_VERSION")
        shared, diffs, chart = 0, [], None
        if len(sides) == 2:
            shared, diffs = compare(sides["a"], sides["b"], q.COMPARED)
            chart = charts.diff_chart(diffs, METRIC_LABELS)
        return render(
            request, "compare.html", options=options, versions=versions, a=a or "", b=b or "", compared=len(sides) == 2,
            sizes={k: len(v) for k, v in sides.items()}, shared=shared, diffs=diffs, charts_json=embed({"diff": chart}),
        )

    @route("get", "/login", response_class=HTMLResponse)
    def login_form(request: Request, next_page: Annotated[str | None, Query(alias="next")] = None) -> Response:
        if not auth.enabled:
            return RedirectResponse(safe_next(next_page), status_code=303)
        return render(request, "login.html", next_page=safe_next(next_page), error=None)

    @route("post", "/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        """Checks the token from the form; sets the session cookie (the form's values are never echoed)."""
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        target = safe_next((form.get("next") or [None])[0])
        if not auth.enabled:
            return RedirectResponse(target, status_code=303)
        if not auth.token_matches((form.get("token") or [""])[0]):
            return render(request, "login.html", status_code=401, next_page=target, error="Wrong token.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, auth.cookie_value, max_age=SESSION_DAYS * 86400, httponly=True, samesite="strict",
            secure=request.url.scheme == "https", path="/dashboard",
        )
        return response

    @route("post", "/logout")
    def logout() -> Response:
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response
