"""What every console page shares: rendering, redirects, the acting user, paging, and
the two ways a write ends (a form re-rendered with its errors, or a flash and a redirect).

Every write goes through :mod:`litegate.services` in one transaction (audit entry +
config version bump), exactly like the CLI, so running gateways pick it up within a
second. The rules live there; a page only turns their typed errors into form errors.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException, ValidationException
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from litegate.db.models import Base
from litegate.errors import Conflict, LitegateError
from litegate.services import admin_sessions
from litegate.services.schema import ValidationFailed

from . import forms
from .auth import context_of, session_of

AdminRequest = Request[Any, Any, Any]
T = TypeVar("T")
Row = TypeVar("Row", bound=Base)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NAV = (
    ("dashboard", "", "Dashboard"),
    ("usage", "/usage", "Usage"),
    ("routes", "/routes", "Routes"),
    ("upstreams", "/upstreams", "Upstreams"),
    ("quotas", "/quotas", "Quotas"),
    ("keys", "/keys", "API keys"),
    ("models", "/models", "Models"),
    ("audit", "/audit", "Audit log"),
)


def render(
    request: AdminRequest,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response[str]:
    ctx = context_of(request)
    state = session_of(request)
    html = ctx.env.get_template(f"litegate_admin/{template}").render(
        base=ctx.base_path,
        user=state.user,
        csrf_token=state.csrf_token,
        flashes=state.pop_flashes(),
        nav=NAV,
        active=context.pop("active", ""),
        title=context.pop("title", "litegate"),
        **context,
    )
    return Response(
        html,
        status_code=status_code,
        media_type=MediaType.HTML,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


async def row_or_404(session: AsyncSession, entity: type[Row], row_id: int, what: str) -> Row:
    """The row a path id names; an unknown id is Litestar's 404 page."""
    row = await session.get(entity, row_id)
    if row is None:
        raise NotFoundException(f"{what} {row_id} not found")
    return row


def redirect(request: AdminRequest, path: str) -> Redirect:
    return Redirect(path=context_of(request).url(path), status_code=303)


def actor(request: AdminRequest) -> str:
    return f"admin:{session_of(request).user}"


def client_ip(request: AdminRequest) -> str:
    return request.client.host if request.client else "unknown"


def query_int(request: AdminRequest, name: str, *, default: int, maximum: int = 10**9) -> int:
    """A positive whole-number query parameter; anything else is a 400 page, not a 500."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= maximum:
        raise ValidationException(f"{name} must be a whole number from 1 to {maximum}")
    return int(text)


def paging(page: int, total: int, size: int, **query: str) -> dict[str, Any]:
    """``pages`` and prev/next query strings; a page past the last one is a 400."""
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise ValidationException(f"page must be a whole number from 1 to {pages}")
    kept = {k: v for k, v in query.items() if v}
    return {
        "page": page, "pages": pages,
        "prev_query": urlencode({**kept, "page": page - 1}) if page > 1 else None,
        "next_query": urlencode({**kept, "page": page + 1}) if page < pages else None,
    }


def conflict_message(kind: str) -> str:
    return (
        f"This {kind} was changed by someone else after you opened it, so your save was "
        f"not applied. Reload the page to see the current values, then make your change again."
    )


async def save(
    request: AdminRequest,
    result: forms.FormResult[Any],
    write: Callable[[AsyncSession], Awaitable[T]],
    *,
    conflict_kind: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> tuple[T | None, int]:
    """Run ``write`` in one transaction: ``(value, 200)``, or ``(None, status)`` with the
    service's errors attached to ``result``'s fields.

    With ``conflict_kind``, a stale ``row_version`` is a 409 with an explanation;
    without, a conflict is one more form error (400).
    """
    try:
        async with context_of(request).sessionmaker() as session, session.begin():
            return await write(session), 200
    except ValidationFailed as exc:
        forms.map_errors(exc.errors, result, aliases=aliases)
    except (Conflict, StaleDataError) as exc:
        if conflict_kind is None and isinstance(exc, Conflict):
            result.add(forms.GENERAL, exc.detail)
        else:
            result.add(forms.GENERAL, conflict_message(conflict_kind or "entry"))
            return None, 409
    except LitegateError as exc:
        result.add(forms.GENERAL, exc.detail)
    return None, 400


async def act(
    request: AdminRequest, action: Callable[[AsyncSession], Awaitable[str]], back: str
) -> Redirect:
    """Run ``action`` in one transaction, flash its message (or the service's refusal)
    and go back to ``back``. Unknown ids (Litestar's 404) are not caught."""
    state = session_of(request)
    try:
        async with context_of(request).sessionmaker() as session, session.begin():
            message = await action(session)
    except LitegateError as exc:
        state.flash(exc.detail, "error")
    else:
        state.flash(message)
    return redirect(request, back)


async def keep_secret(request: AdminRequest, kind: str, name: str, secret: str) -> None:
    """Post-redirect-get for a new secret (an API key's, an admin token's): it waits in
    this session's sealed one-time server-side flash, so a reload of the next page neither
    shows it again nor re-creates it."""
    async with context_of(request).sessionmaker() as session, session.begin():
        await admin_sessions.set_flash(
            session, session_of(request).session_id or "",
            {kind: {"name": name, "secret": secret}},
        )


async def take_secret(request: AdminRequest, kind: str) -> tuple[str, str] | None:
    """The (name, secret) :func:`keep_secret` left for this page, once."""
    session_id = session_of(request).session_id
    if session_id is None:
        return None
    async with context_of(request).sessionmaker() as session, session.begin():
        flash = await admin_sessions.pop_flash(session, session_id)
    new = (flash or {}).get(kind)
    if not isinstance(new, dict):
        return None
    return str(new.get("name", "")), str(new.get("secret", ""))
