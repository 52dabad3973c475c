"""The quality dashboard: server-rendered pages over the SQL store, charts by plotly.js served from the app."""

from cubeqa.dashboard.assets import offline_docs
from cubeqa.dashboard.routes import dashboard_router

__all__ = ["dashboard_router", "offline_docs"]
