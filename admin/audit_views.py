"""The audit log: every change by anyone (console, CLI, config apply), filtered and paged."""

from __future__ import annotations

from litestar import Response, get

from litegate.services.audit import audit_choices, search_audit

from .auth import context_of
from .pages import AdminRequest, paging, query_int, render

AUDIT_PAGE_SIZE = 50
MAX_CHOICES = 200
"""The filter drop-downs list at most this many values each."""


@get("/audit")
async def audit_page(request: AdminRequest) -> Response[str]:
    params = request.query_params
    filters = {
        name: str(params.get(name) or "") for name in ("actor", "entity_type", "action", "q")
    }
    page = query_int(request, "page", default=1)
    exact = {k: v for k, v in filters.items() if k != "q"}
    async with context_of(request).sessionmaker() as session:
        entries, total = await search_audit(
            session, filters=exact, text=filters["q"], offset=(page - 1) * AUDIT_PAGE_SIZE,
            limit=AUDIT_PAGE_SIZE,
        )
        choices = await audit_choices(session, limit=MAX_CHOICES)
    return render(
        request, "audit.html", title="Audit log", active="audit", entries=entries, total=total,
        filters=filters, actors=choices["actor"], types=choices["entity_type"],
        actions=choices["action"], **paging(page, total, AUDIT_PAGE_SIZE, **filters),
    )


ROUTE_HANDLERS = [audit_page]
