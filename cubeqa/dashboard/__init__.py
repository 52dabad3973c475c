"""The quality dashboard: server-rendered pages over the SQL store, charts by plotly.js served from the app."""

from cubeqa.dashboard.assets import offline_docs
from cubeqa.dashboard.cache import FinishedBatches
from cubeqa.dashboard.pages import batch_view
from cubeqa.dashboard.routes import router

__all__ = ["FinishedBatches", "batch_view", "offline_docs", "router"]
