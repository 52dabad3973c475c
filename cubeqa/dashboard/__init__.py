"""The quality dashboard: server-rendered pages over the SQL store, charts by plotly.js served from the app."""

from cubeqa.dashboard.assets import offline_docs
from cubeqa.dashboard.routes import add_dashboard

__all__ = ["add_dashboard", "offline_docs"]
