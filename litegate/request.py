"""Per-request state, carried in ``scope["litegate"]`` (never on shared objects)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from litegate.asgi_types import Message, Receive, Scope
from litegate.errors import BadRequest, PayloadTooLarge
from litegate.jsonbody import parse_json
from litegate.multipart import Form, parse_form

if TYPE_CHECKING:
    from litegate.snapshot import KeySpec, RouteSpec, Snapshot, VariantSpec


SCOPE_KEY = "litegate"
OPENAI_FORM_PATHS = frozenset({
    "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits",
    "/v1/images/variations",
})
"""The OpenAI upload endpoints: a ``multipart/form-data`` body whose ``model`` field names
the route."""
OPENAI_BODY_PATHS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
    "/v1/moderations", "/v1/images/generations", "/v1/audio/speech",
}) | OPENAI_FORM_PATHS
"""The OpenAI endpoints whose body names the ``model`` (the route): a JSON body, or a form
for :data:`OPENAI_FORM_PATHS`; all proxied."""


class RequestInfo:
    __slots__ = (
        "request_id",
        "started",
        "snapshot",
        "key",
        "route_name",
        "route",
        "variant",
        "cache",
        "upstream_s",
        "body",
        "json",
        "form",
        "stream",
        "status",
        "tokens",
        "prompt_tokens",
        "stream_error",
        "extra_headers",
    )

    def __init__(self, request_id: str, started: float, snapshot: Snapshot) -> None:
        self.request_id = request_id
        self.started = started
        self.snapshot = snapshot
        self.key: KeySpec | None = None
        self.route_name: str | None = None
        self.route: RouteSpec | None = None
        self.variant: VariantSpec | None = None
        self.cache: str | None = None
        self.upstream_s = 0.0
        self.body: bytes | None = None
        self.json: dict[str, Any] | None = None
        self.form: Form | None = None
        """The parsed form of an upload endpoint (``json`` stays ``None``: not cached)."""
        self.stream = False
        self.status = 0
        self.tokens = 0
        self.prompt_tokens = 0
        self.stream_error = False
        self.extra_headers: list[tuple[bytes, bytes]] = []


# The request being served by the current task; read by the logging processor
# ``add_request_context`` so every log line carries request id, key, route and variant.
current_request: ContextVar[RequestInfo | None] = ContextVar("litegate_request", default=None)


def get_info(scope: Scope) -> RequestInfo | None:
    return scope.get(SCOPE_KEY)


def configured_name(info: RequestInfo) -> str | None:
    """The request's route (or local model) name when the configuration knows it, else
    ``None``: metric labels, stats series and limit keys never take a client's text."""
    name = info.route_name
    if name is None or info.route is not None or name in info.snapshot.models:
        return name
    return None


def header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None


def sticky_value(scope: Scope, info: RequestInfo, route: RouteSpec) -> bytes | None:
    """:meth:`RouteSpec.sticky_value` for an HTTP request."""
    value = header(scope, route.sticky_header) if route.sticky_header is not None else None
    return route.sticky_value(info.key.id if info.key is not None else None, value)


def replay_receive(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """Read the whole request body, refusing more than ``max_bytes`` (413)."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            if int(length) > max_bytes:
                raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def resolve_route(
    scope: Scope, receive: Receive, info: RequestInfo, max_bytes: int
) -> Receive:
    """Find which route a request is for, reading the body when it names it; called once
    per request, by the route-resolution middleware.

    Returns the ``receive`` that the inner app must use (the body replayed).
    """
    path: str = scope["path"]
    if scope["method"] == "POST" and path in OPENAI_BODY_PATHS:
        body = await read_body(scope, receive, max_bytes)
        info.body = body
        if path in OPENAI_FORM_PATHS:
            form = parse_form(body, header(scope, b"content-type"))
            model: Any = form.text("model")
            info.form = form
            info.stream = (form.text("stream") or "").lower() == "true"
        else:
            data = parse_json(body)
            if not isinstance(data, dict):
                raise BadRequest("the JSON body must be an object", code="invalid_json")
            model = data.get("model")
            info.json = data
            info.stream = data.get("stream") is True
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required and must be a string", code="missing_model")
        info.route_name = model
        # An unknown model is answered 404 by the handler, after auth and the key's own
        # limits: a key's limits cover every request it makes, whatever the route.
        info.route = info.snapshot.routes.get(model)
        return replay_receive(body, receive)
    if path.startswith("/v2/models/"):
        rest = path[len("/v2/models/"):]
        info.route_name = rest.split("/", 1)[0] or None
        if info.route_name is not None:
            # A route of that name puts the request through A/B selection (V2Router);
            # otherwise the name is a local model's.
            info.route = info.snapshot.routes.get(info.route_name)
    return receive
