"""Files the pages load, all served by the app from installed packages (no CDN: the dashboard and /docs work
offline): our CSS and JS, plotly.js from the `plotly` package, Swagger UI and ReDoc from `fastapi-offline`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

HERE = Path(__file__).resolve().parent
DOCS_PREFIX = "/static/docs"


def package_dir(name: str) -> Path:
    """The directory of an installed package, found without importing it (plotly's import is slow)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name} is not installed; reinstall cubeqa")
    return Path(spec.origin).parent


def dashboard_files() -> dict[str, Path]:
    """Served name -> file under /dashboard/static; only these names are served."""
    own = {path.name: path for path in (HERE / "static").iterdir() if path.suffix in (".css", ".js", ".svg")}
    return {**own, "plotly.min.js": package_dir("plotly") / "package_data" / "plotly.min.js"}


def docs_files() -> dict[str, Path]:
    """Served name -> file under /static/docs: Swagger UI and ReDoc as the `fastapi-offline` package ships them."""
    docs = package_dir("fastapi_offline") / "static"
    names = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    return {name: docs / name for name in names}


def asset_response(files: dict[str, Path], name: str) -> FileResponse:
    """The named file of `files`, cacheable for a day; 404 for any other name."""
    path = files.get(name)
    if path is None:
        raise HTTPException(404, f"no asset {name!r}")
    # Names are fixed per release: a day of caching spares a reload of 4.6 MB of plotly.js.
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


def offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts from this app (create it with docs_url=None, redoc_url=None)."""
    files = docs_files()

    @app.get(DOCS_PREFIX + "/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        return asset_response(files, name)

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{DOCS_PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_PREFIX}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            redoc_js_url=f"{DOCS_PREFIX}/redoc.standalone.js", redoc_favicon_url=f"{DOCS_PREFIX}/favicon.png",
            with_google_fonts=False,
        )
