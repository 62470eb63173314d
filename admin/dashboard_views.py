"""The dashboard page and the panel it refreshes (charts from the gateway's stats)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get

from . import dashboard
from .auth import context_of
from .pages import AdminRequest, render


def _dashboard_context(request: AdminRequest) -> dict[str, Any]:
    ctx = context_of(request)
    window = str(request.query_params.get("window") or "10m")
    return dashboard.build(ctx.stats, ctx.models, window=window)


@get("/", name="litegate_admin:dashboard")
async def dashboard_page(request: AdminRequest) -> Response[str]:
    return render(
        request, "dashboard.html", title="Dashboard", active="dashboard",
        **_dashboard_context(request),
    )


@get("/dashboard/panel")
async def dashboard_panel(request: AdminRequest) -> Response[str]:
    return render(request, "_dashboard_panel.html", **_dashboard_context(request))


ROUTE_HANDLERS = [dashboard_page, dashboard_panel]
