"""The HTTP API (FastAPI): submit jobs and batches, read progress and results, health and metrics.

`create_app` loads on first use, so the client (`cubeqa.client`, which reads `cubeqa.api.schemas`) does not import
the app, the dashboard and the task layer with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cubeqa.api.main import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cubeqa.api.main import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
