"""What the pages decide: how many jobs, bars and throughput buckets they show, how a batch's figures become
charts and live numbers, and how a template becomes a response (its headers and the registry's metrics)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from cubeqa.api.deps import ServicesDep
from cubeqa.dashboard import charts
from cubeqa.dashboard.cache import FinishedBatches
from cubeqa.dashboard.charts import Chart
from cubeqa.render import confidence_text
from storage import metrics as registry
from storage.dashboard_queries import BatchRow
from storage.figures import BatchFigures, batch_figures
from storage.quality import QUALITY_FIGURES, quality_texts

HERE = Path(__file__).resolve().parent
PER_PAGE = 50  # batches or jobs per page
BARS = 30  # at most this many bars per histogram
BUCKETS = 40  # throughput buckets from submission to the last finished job
# Scripts and styles from this app only (nothing from a CDN); plotly.js sets inline styles on its SVG.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "frame-ancestors 'none'")


def when(moment: datetime | None) -> str:
    """A moment as the pages print it, in UTC."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "–"


def number(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A number to `digits` places (signed if asked); "–" for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def percent(share: float | None) -> str:
    """A share as a percentage to one place; "–" for none."""
    return "–" if share is None else f"{100 * share:.1f} %"


def confidence_or_dash(value: float | None) -> str:
    """A confidence as the CLI prints it (two places, never 1.00); "–" for none."""
    return "–" if value is None else confidence_text(value)


def embed(value: Any) -> str:
    """JSON safe inside a <script type="application/json"> element (no "</script>" can end it early)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(when=when, number=number, percent=percent, confidence=confidence_or_dash)
templates.env.globals.update(
    path_labels=charts.PATH_LABELS, no_answer=charts.NO_ANSWER,
    quality_figures=QUALITY_FIGURES, quality_texts=quality_texts,
)


@dataclass(frozen=True)
class BatchView:
    """A batch page's figures, its charts by name and its live numbers by `data-text` key."""

    figures: BatchFigures
    charts: dict[str, Chart | None]
    texts: dict[str, str]

    def json(self) -> dict[str, Any]:
        """What the page's script refreshes: the charts and the numbers beside them."""
        return {"charts": self.charts, "texts": self.texts}


def batch_view(session: Session, row: BatchRow) -> BatchView:
    """Every chart of the batch page, and the numbers shown beside them."""
    figures = batch_figures(session, row, bars=BARS, buckets=BUCKETS)
    drawn: dict[str, Chart | None] = {}
    texts: dict[str, str] = {}
    histograms = [m for m in registry.METRICS if m.name in figures.histograms]
    for place, metric in enumerate(histograms):
        hist = figures.histograms[metric.name]
        colour = charts.HISTOGRAM_COLOURS[place % len(charts.HISTOGRAM_COLOURS)]
        drawn[metric.name] = charts.histogram_chart(hist, f"{metric.label} ({metric.unit})", colour)
        texts[f"mean-{metric.name}"] = "–" if hist.mean is None else format(hist.mean, metric.fmt)
        texts[f"n-{metric.name}"] = str(hist.n)
    for name, share in figures.shares.items():
        texts[f"share-{name}"], texts[f"n-{name}"] = percent(share.share), str(share.n)
    # the quality tiles and the charts come from one read, so they agree while the batch runs
    texts |= {f"q-{key}": text for key, text in quality_texts(row.quality).items()}
    texts["snapshot-final"] = str(row.final)
    width = figures.throughput.width
    texts["throughput-width"] = "no job final yet" if width is None else f"{width:.2f} s a slice"
    drawn |= {
        "paths": charts.paths_chart(figures.paths), "stages": charts.stage_chart(figures.times),
        "throughput": charts.throughput_chart(figures.throughput),
    }
    return BatchView(figures, drawn, texts)


@dataclass(frozen=True)
class Pages:
    """Renders the dashboard's templates for one request."""

    request: Request
    auth_enabled: bool

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """The template as a response no other site can frame or script and no cache keeps."""
        metrics = {m.name: m for m in registry.METRICS}
        context = {"auth_enabled": self.auth_enabled, "metrics": metrics, **context}
        response = templates.TemplateResponse(self.request, template, context, status_code=status_code)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response


def get_pages(request: Request, services: ServicesDep) -> Pages:
    """The request's renderer; pages offer the logout button only when a token is configured."""
    return Pages(request, auth_enabled=services.token is not None)


def get_cache(request: Request) -> FinishedBatches[BatchView]:
    """The app's views of finished batches (create_app puts them in the app's state)."""
    cache: FinishedBatches[BatchView] = request.app.state.finished_batches
    return cache


PagesDep = Annotated[Pages, Depends(get_pages)]
CacheDep = Annotated[FinishedBatches[BatchView], Depends(get_cache)]
