"""Admin sessions, CSRF and the one access guard.

The cookie is signed (HMAC-SHA256 over a compact JSON payload) and carries the
issue time, the CSRF token, short flash messages and, once signed in, a session
id. A signed-in session is only valid while its row in ``admin_sessions`` exists
(:mod:`litegate.services.admin_sessions`): logout, a password change or
``litegate admin end-sessions`` delete rows, and the cookie stops working on the
next request on every replica. Anonymous visitors get a cookie with a CSRF token
only (no row), so the login form is CSRF-protected without filling the table.

Litestar's ``ServerSideSessionConfig`` was not used: its stores are opaque
key-value blobs (memory, file, Redis), so "end every session of this user" would
need a second index, and it creates a stored session for every anonymous visitor.
Its ``CSRFConfig`` (a double-submit cookie) is not used either: the token here
lives in the signed session, so it changes at login and covers the login form.

The cookie is ``HttpOnly``, ``SameSite=Lax``, scoped to the admin path, and
``Secure`` when the request came over HTTPS. :class:`AdminSessionMiddleware` is
mounted on the admin router only: the ``/v1``/``/v2`` hot path never pays for it.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.exc import SQLAlchemyError

from litegate.db.models import MAX_ROW_ID
from litegate.services import admin_sessions

from .config import AdminContext
from .session import SessionState, new_session

SCOPE_SESSION = "litegate.admin.session"
SCOPE_CONTEXT = "litegate.admin.context"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AdminSessionMiddleware(ASGIMiddleware):
    """Loads the signed session into the scope's state and writes it back when changed.

    Built once per router and shared by every request: no per-request state on ``self``.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.cookie_name = context.cookie_name
        self.cookie_path = context.base_path or "/"
        self._cookie_key = context.cookie_name.encode("latin-1")
        self._static_prefix = f"{context.base_path}/static/"

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        data = None
        for name, value in scope.get("headers", ()):
            if name == b"cookie" and self._cookie_key in value:
                data = self._read_cookie(value.decode("latin-1"))
                if data is not None:
                    break
        user = None
        sid = data.get("sid") if data is not None else None
        if isinstance(sid, str) and not scope["path"].startswith(self._static_prefix):
            user = await self._live_user(sid)
            if user is None:  # ended (logout, password change, end-sessions) or expired
                data = None
        state = SessionState(data=data or new_session(), dirty=data is None)
        if user is not None:
            state.user_id, state.user = user
        scope["state"][SCOPE_SESSION] = state
        scope["state"][SCOPE_CONTEXT] = self.context
        secure = scope.get("scheme") == "https"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and state.dirty:
                cookie = self._cookie_header(state, secure).encode("latin-1")
                headers = [*message.get("headers", ()), (b"set-cookie", cookie)]
                message = {**message, "headers": headers}
            await send(message)

        await next_app(scope, receive, send_wrapper)

    async def _live_user(self, session_id: str) -> tuple[int, str] | None:
        try:
            async with self.context.sessionmaker() as session:
                return await admin_sessions.user_of(session, session_id)
        except SQLAlchemyError as exc:  # a clear 503, not a 500 with a traceback
            raise ServiceUnavailableException(
                "the console cannot read its sessions from the database; "
                "check the database (and run `litegate db upgrade`)"
            ) from exc

    def _read_cookie(self, header: str) -> dict[str, Any] | None:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except Exception:  # noqa: BLE001 - any malformed cookie header from the client
            return None
        morsel = cookie.get(self.cookie_name)
        if morsel is None:
            return None
        return self.context.signer.loads(morsel.value)

    def _cookie_header(self, state: SessionState, secure: bool) -> str:
        parts = [
            f"{self.cookie_name}={self.context.signer.dumps(state.data)}",
            f"Path={self.cookie_path}",
            f"Max-Age={self.context.signer.max_age_s}",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if secure or self.context.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)


class AdminAuthRequired(NotAuthorizedException):
    """Raised by the guard for an anonymous request; rendered as redirect or 401."""


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> SessionState:
    state = connection.scope["state"].get(SCOPE_SESSION)
    if not isinstance(state, SessionState):  # the middleware is part of the router: a wiring bug
        raise RuntimeError("AdminSessionMiddleware is not installed")
    return state


def context_of(connection: ASGIConnection[Any, Any, Any, Any]) -> AdminContext:
    context = connection.scope["state"].get(SCOPE_CONTEXT)
    if not isinstance(context, AdminContext):
        raise RuntimeError("AdminSessionMiddleware is not installed")
    return context


async def ids_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Path ids outside the column's range are unknown rows (404), never a driver error."""
    for name, value in connection.path_params.items():
        if name.endswith("_id") and isinstance(value, int) and not 1 <= value <= MAX_ROW_ID:
            raise NotFoundException(f"no {name[:-3]} with id {value}")


async def admin_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The one permission check: a logged-in user everywhere, CSRF on every write.

    Handlers marked ``opt={"public": True}`` (login, static files) skip the login
    requirement but not the CSRF check.
    """
    state = session_of(connection)
    if not handler.opt.get("public") and state.user is None:
        raise AdminAuthRequired("login required")
    method = connection.scope.get("method", "GET")
    if method in SAFE_METHODS:
        return
    token = connection.headers.get(CSRF_HEADER)
    if not token:
        content_type = connection.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await connection.form()  # type: ignore[attr-defined]
            token = form.get(CSRF_FIELD)
    expected = state.csrf_token
    if not token or not expected or not hmac.compare_digest(str(token), expected):
        raise PermissionDeniedException("CSRF token missing or invalid; reload the page and retry")
