"""Model pages: versions, upload (validated like the CLI), activate, roll back, remove."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from sqlalchemy import select

from litegate.db.models import Model

from .auth import context_of
from .dashboard import manager_status


@get("/models")
async def models_page(request: Request[Any, Any, Any]) -> Response[Any]:
    from .views import render

    ctx = context_of(request)
    async with ctx.sessionmaker() as session:
        models = list(await session.scalars(select(Model).order_by(Model.name)))
    return render(
        request, "models.html", title="Models", active="models", models=models,
        status=manager_status(ctx.models),
        values={"name": "", "version": "", "activate": True}, errors={},
    )


ROUTE_HANDLERS = [models_page]
