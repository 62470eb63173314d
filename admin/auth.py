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

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any

from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from sqlalchemy.exc import SQLAlchemyError

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.services import admin_sessions

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from .config import AdminContext

SCOPE_SESSION = "litegate.admin.session"
SCOPE_CONTEXT = "litegate.admin.context"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})



def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """``payload.signature``; ``loads`` rejects a bad signature or an expired session."""

    def __init__(self, secret: str | bytes, *, max_age_s: int) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hashlib.sha256(b"litegate-admin-session\x00" + raw).digest()
        self.max_age_s = max_age_s

    def _sign(self, payload: str) -> str:
        return _b64e(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, data: dict[str, Any]) -> str:
        payload = _b64e(json.dumps(data, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def loads(self, token: str, *, now: float | None = None) -> dict[str, Any] | None:
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            return None
        try:
            if not hmac.compare_digest(self._sign(payload), signature):
                return None
            data = json.loads(_b64d(payload))
        except (ValueError, UnicodeError):
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("iat")
        if not isinstance(issued, int | float):
            return None
        if (now if now is not None else time.time()) - issued > self.max_age_s:
            return None
        return data


def new_session(session_id: str | None = None) -> dict[str, Any]:
    """Cookie payload: a fresh CSRF token, and the server-side session id once signed in."""
    data: dict[str, Any] = {"csrf": secrets.token_urlsafe(24), "iat": int(time.time())}
    if session_id is not None:
        data["sid"] = session_id
    return data


@dataclass
class SessionState:
    """Per-request session; handlers change it and the middleware writes the cookie."""

    data: dict[str, Any]
    dirty: bool = False
    user: str | None = None
    """Set by the middleware from the live server-side session, never from the cookie."""
    user_id: int | None = None

    @property
    def session_id(self) -> str | None:
        sid = self.data.get("sid")
        return sid if isinstance(sid, str) and self.user is not None else None

    @property
    def csrf_token(self) -> str:
        return str(self.data.get("csrf", ""))

    def sign_in(self, session_id: str, user: str, user_id: int) -> None:
        # A fresh cookie (and CSRF token) on login: no session fixation.
        self.data, self.dirty = new_session(session_id), True
        self.user, self.user_id = user, user_id

    def sign_out(self) -> None:
        self.data, self.user, self.user_id, self.dirty = new_session(), None, None, True

    def flash(self, message: str, category: str = "ok") -> None:
        self.data.setdefault("flash", []).append([category, message])
        self.dirty = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        items = self.data.pop("flash", None)
        if items:
            self.dirty = True
            return [(str(c), str(m)) for c, m in items]
        return []


class AdminSessionMiddleware:
    """Loads the signed session into the scope and writes it back when changed."""

    def __init__(self, app: ASGIApp, *, context: AdminContext) -> None:
        self.app = app
        self.context = context
        self.cookie_name = context.cookie_name
        self.cookie_path = context.base_path or "/"
        self._cookie_key = context.cookie_name.encode("latin-1")
        self._static_prefix = f"{context.base_path}/static/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
        scope[SCOPE_SESSION] = state
        scope[SCOPE_CONTEXT] = self.context
        secure = scope.get("scheme") == "https"

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and state.dirty:
                headers = list(message.get("headers", ()))
                headers.append((b"set-cookie", self._cookie_header(state, secure).encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)

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
        except Exception:  # malformed cookie header from the client
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
    state = connection.scope.get(SCOPE_SESSION)  # type: ignore[call-overload]
    if state is None:  # the middleware is part of the router; this is a wiring bug
        raise RuntimeError("AdminSessionMiddleware is not installed")
    return state


def context_of(connection: ASGIConnection[Any, Any, Any, Any]) -> AdminContext:
    return connection.scope[SCOPE_CONTEXT]  # type: ignore[literal-required]


MAX_ROW_ID = 2**31 - 1
"""Ids are ``Integer`` columns (32-bit on PostgreSQL): larger values cannot exist."""


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
