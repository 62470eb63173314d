"""The admin HTTP API under ``<admin path>/api/``: JSON in and out, authenticated by admin
API tokens (``Authorization: Bearer lga-…``) only.

No cookie is read here (the console's session middleware is not on this router), so a
signed-in browser cannot be made to call the API: CSRF-free by design. ``read`` tokens
may only GET; ``write`` tokens may do everything. The token's row is read on every
request (:func:`litegate.services.admin_tokens.authenticate`), so a revocation holds at
the next request on every replica.

Every write goes through :mod:`litegate.services` in one transaction, exactly like the
console and the CLI, audited with the actor ``token:<name>``. Errors are JSON
``{"error": "...", "code": "..."}`` (validation adds ``"errors": [...]``), never a 500
with a traceback; JSON bodies are bounded by ``MAX_JSON_BYTES`` (413 beyond).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.enums import MediaType, ScopeType
from litestar.exceptions import HTTPException
from litestar.exceptions.responses import create_exception_response
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, ExceptionHandlersMap, Receive, Scope, Send
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from litegate.errors import (
    BadRequest,
    Forbidden,
    LitegateError,
    ServiceUnavailable,
    Unauthorized,
)
from litegate.jsonbody import parse_json
from litegate.services import admin_tokens
from litegate.services.schema import ValidationFailed

from .auth import SAFE_METHODS, SCOPE_CONTEXT, context_of
from .config import AdminContext

log = structlog.get_logger("litegate.admin.api")

MAX_JSON_BYTES = 1024 * 1024
"""Largest JSON body the API reads (a route with 100 variants is ~20 KB)."""
SCOPE_TOKEN = "litegate.admin.api_token"
NO_STORE = {"Cache-Control": "no-store"}
T = TypeVar("T")
ApiRequest = Request[Any, Any, Any]


_UNAUTHORIZED: dict[str, Any] = {"code": "invalid_admin_token",
                                 "headers": {"WWW-Authenticate": "Bearer"}}


class ApiContextMiddleware(ASGIMiddleware):
    """Puts the console's context (database, settings, gateway) in the scope's state."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, context: AdminContext) -> None:
        self.context = context

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["state"][SCOPE_CONTEXT] = self.context
        await next_app(scope, receive, send)


async def token_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The API's one permission check: a live token; ``write`` scope for anything but GET."""
    scheme, _, secret = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("an admin API token is required: Authorization: Bearer <token> "
                           "(create one with `litegate admin create-token`)", **_UNAUTHORIZED)
    try:
        async with context_of(connection).sessionmaker() as session, session.begin():
            token = await admin_tokens.authenticate(session, secret.strip())
            name, scope = (token.name, token.scope) if token is not None else ("", "")
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the admin API cannot read its tokens from the database; "
                                 "check the database (and run `litegate db upgrade`)") from exc
    if not name:
        raise Unauthorized("unknown, revoked or expired admin API token", **_UNAUTHORIZED)
    if scope != "write" and connection.scope.get("method", "GET") not in SAFE_METHODS:
        raise Forbidden(f"admin token {name!r} has the {scope} scope: it may only read (GET)")
    connection.scope["state"][SCOPE_TOKEN] = name


def actor(request: ApiRequest) -> str:
    return f"token:{request.scope['state'][SCOPE_TOKEN]}"


@asynccontextmanager
async def transaction(request: ApiRequest) -> AsyncIterator[AsyncSession]:
    async with context_of(request).sessionmaker() as session, session.begin():
        yield session


@asynccontextmanager
async def reading(request: ApiRequest) -> AsyncIterator[AsyncSession]:
    async with context_of(request).sessionmaker() as session:
        yield session


async def json_body(request: ApiRequest) -> dict[str, Any]:
    """The request's JSON object (400 if malformed or not an object; 413 if too large)."""
    data = parse_json(await request.body())
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
    return data


def convert(data: Any, kind: type[T]) -> T:
    """``data`` as the service layer's input type; a mismatch is a 400 naming the field."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise ValidationFailed([str(exc)]) from None


def expected_version(request: ApiRequest, data: dict[str, Any] | None = None) -> int | None:
    """The ``row_version`` the client read: the ``If-Match`` header (``"3"``, ``W/"3"`` or
    ``3``) or the body's ``row_version`` field (removed from ``data``). None: no check."""
    field = data.pop("row_version", None) if data is not None else None
    header = request.headers.get("if-match")
    if header is not None:
        text = header.strip().removeprefix("W/").strip('"')
        if not text.isdigit() or len(text) > 10:
            raise BadRequest('If-Match: expected the row_version read, e.g. "3"')
        return int(text)
    if field is None:
        return None
    if isinstance(field, bool) or not isinstance(field, int):
        raise ValidationFailed(["row_version: must be an integer"])
    return field


def ok(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(data, status_code=status_code, media_type=MediaType.JSON,
                    headers={**NO_STORE, **(headers or {})})


def etag(row_version: int) -> dict[str, str]:
    return {"ETag": f'"{row_version}"'}


def _error(status: int, message: str, code: str | None, **extra: Any) -> Response[Any]:
    return Response({"error": message, "code": code, **extra}, status_code=status,
                    media_type=MediaType.JSON, headers=NO_STORE)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large"}


def _on_litegate_error(_: ApiRequest, exc: LitegateError) -> Response[Any]:
    response = _error(exc.status_code, exc.detail, exc.code)
    response.headers.update(exc.headers)
    return response


def _on_validation(_: ApiRequest, exc: ValidationFailed) -> Response[Any]:
    return _error(400, "; ".join(exc.errors), "invalid_request", errors=exc.errors)


def _on_http_error(_: ApiRequest, exc: HTTPException) -> Response[Any]:
    detail = exc.detail
    if exc.status_code == 413:
        detail = (f"request body too large: the admin API reads at most {MAX_JSON_BYTES} bytes "
                  "of JSON (model uploads have their own bound)")
    extra = getattr(exc, "extra", None)
    if exc.status_code == 400 and isinstance(extra, list) and extra:
        # Litestar's own parameter checks: name the parameter and the rule.
        detail = "; ".join(f"{e.get('key', '?')}: {e.get('message', '')}" for e in extra
                           if isinstance(e, dict)) or detail
    return _error(exc.status_code, detail, _HTTP_CODES.get(exc.status_code))


def _on_stale(_: ApiRequest, exc: StaleDataError) -> Response[Any]:
    return _error(409, "changed by someone else at the same time; read it again and retry",
                  "conflict")


def _on_integrity(_: ApiRequest, exc: IntegrityError) -> Response[Any]:
    # Two writers creating the same name at once: the loser's unique constraint fires.
    return _error(409, "conflicts with an entry written at the same time; read and retry",
                  "conflict")


def _on_database(_: ApiRequest, exc: SQLAlchemyError) -> Response[Any]:
    log.warning("admin_api_database_error", error=str(exc))
    return _error(503, "the database is unavailable; retry", "unavailable")


def routing_error_handler(api_prefix: str) -> Callable[[ApiRequest, HTTPException], Response[Any]]:
    """An app-level handler for the 404s and 405s Litestar's router raises itself (a path
    that matches no handler, e.g. an encoded slash in a name): under ``api_prefix`` in
    the API's error shape, elsewhere Litestar's own answer. Router-level handlers never
    see these errors."""

    def handle(request: ApiRequest, exc: HTTPException) -> Response[Any]:
        path = request.scope["path"]
        if path != api_prefix and not path.startswith(api_prefix + "/"):
            return create_exception_response(request, exc)
        code = _HTTP_CODES.get(exc.status_code)
        if exc.status_code == 404:
            response = _error(404, f"no admin API endpoint {path[len(api_prefix):]!r}", code)
        else:
            response = _error(exc.status_code, f"{request.method} is not allowed here", code)
        response.headers.update(exc.headers or {})
        return response

    return handle


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    LitegateError: _on_litegate_error,
    ValidationFailed: _on_validation,
    HTTPException: _on_http_error,
    StaleDataError: _on_stale,
    IntegrityError: _on_integrity,
    SQLAlchemyError: _on_database,
}
