"""The dashboard: one self-contained HTML page (``dashboard -o``) or the same page live
(``serve``), drawn with Plotly from the ledger's exact figures."""

from __future__ import annotations

from ._data import PAYLOAD_SCHEMA, TOKEN_KINDS, Burn, BurnPoint, Dashboard, build_dashboard
from ._page import render_dashboard, write_dashboard
from ._server import DashboardServer, serve_dashboard

__all__ = [
    "PAYLOAD_SCHEMA",
    "TOKEN_KINDS",
    "Burn",
    "BurnPoint",
    "Dashboard",
    "DashboardServer",
    "build_dashboard",
    "render_dashboard",
    "serve_dashboard",
    "write_dashboard",
]
