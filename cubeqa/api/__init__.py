"""The HTTP API (FastAPI): submit jobs and batches, read progress and results, health and metrics."""

from cubeqa.api.main import create_app

__all__ = ["create_app"]
