"""Typed errors. Every error litegate answers is one of these, rendered in one place.

``/v1`` (OpenAI-compatible) responses use ``{"error": {"message", "type", "code"}}`` so
the official ``openai`` client raises the matching exception class; ``/v2`` (Open
Inference Protocol) responses use ``{"error": "<message>"}`` as KServe/Triton do.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from litegate.asgi_types import Send
from litegate.responses import send_response


class LitegateError(Exception):
    status_code: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        self.detail = detail or self.__class__.__doc__ or "error"
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code
        super().__init__(self.detail)


class BadRequest(LitegateError):
    """Bad request."""

    status_code = 400
    type = "invalid_request_error"


class WrongAPI(BadRequest):
    """A route asked for through the API its upstream kind does not speak."""

    def __init__(self, route: str | None, kind: str, use: str) -> None:
        super().__init__(f"route {route!r} targets a {kind!r} upstream; use the {use} API for it")


class Unauthorized(LitegateError):
    """Missing or invalid API key."""

    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(LitegateError):
    """This API key may not use this route."""

    status_code = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(LitegateError):
    """Not found."""

    status_code = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(LitegateError):
    """The endpoint exists but does not take this method (send ``Allow`` in ``headers``)."""

    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(LitegateError):
    """Request body too large."""

    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(LitegateError):
    """Rate limit exceeded."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """This API key's spend budget for the period is used up."""

    type = "insufficient_quota"  # what OpenAI answers when a quota is spent
    code = "budget_exceeded"


class UpstreamError(LitegateError):
    """The upstream failed."""

    status_code = 502
    type = "upstream_error"
    code = "bad_gateway"


class ServiceUnavailable(LitegateError):
    """Service temporarily unavailable."""

    status_code = 503
    type = "service_unavailable"
    code = "unavailable"


class UpstreamTimeout(LitegateError):
    """The upstream did not answer in time."""

    status_code = 504
    type = "timeout_error"
    code = "upstream_timeout"


_encoder = msgspec.json.Encoder()


def error_body(exc: LitegateError, *, style: str = "openai") -> bytes:
    if style == "v2":
        return _encoder.encode({"error": exc.detail})
    return _encoder.encode({"error": {"message": exc.detail, "type": exc.type, "code": exc.code}})


def error_style(path: str) -> str:
    return "v2" if path.startswith("/v2") else "openai"


async def send_error(
    send: Send,
    exc: LitegateError,
    *,
    path: str = "",
    extra_headers: Mapping[str, str] | None = None,
) -> None:
    """The only place an error response is built."""
    body = error_body(exc, style=error_style(path))
    headers = [(b"content-type", b"application/json")]
    for name, value in {**exc.headers, **(extra_headers or {})}.items():
        headers.append((name.lower().encode(), str(value).encode()))
    await send_response(send, exc.status_code, body, headers)


class Conflict(LitegateError):
    """The resource was changed by someone else; reload and try again."""

    status_code = 409
    type = "conflict_error"
    code = "conflict"
