"""Routes on ``/v2``: A/B between local models, and forwarding to remote Open Inference
Protocol v2 servers (Triton, KServe, or another litegate).

``/v2/models/<route>/...`` where ``<route>`` is a configured route is sent to the chosen
variant: a local ONNX model (the path is rewritten to that model) or a ``kind: v2``
upstream. Names that are not routes go straight to the local models.

Only the documented per-model surface is forwarded (metadata, ready, infer, stats,
config, optionally under ``versions/<n>``), and the upstream path is rebuilt from the
parts parsed here: client text never reaches the upstream URL, so ``..`` or encoded
slashes cannot escape to model control (``/v2/repository/...``), which stays local and
admin-only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.errors import BadRequest, NotFound, UpstreamError, WrongAPI
from litegate.request import get_info, read_body
from litegate.responses import send_response
from litegate.upstreams.client import (
    UpstreamClient,
    UpstreamReadError,
    forward_headers,
    response_headers,
)

PREFIX = "/v2/models/"
# action -> the method it answers; "" is the model's metadata.
_ACTIONS = {"": "GET", "ready": "GET", "stats": "GET", "config": "GET", "infer": "POST"}
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A parsed per-model v2 request: ``/v2/models/<name>[/versions/<n>][/<action>]``."""

    version: str | None
    action: str

    def path_for(self, model: str) -> str:
        path = PREFIX + model
        if self.version is not None:
            path += "/versions/" + self.version
        return path + ("/" + self.action if self.action else "")


def parse_model_call(tail: str, method: str) -> ModelCall:
    """Validate what follows ``/v2/models/<name>``; 404 for anything off the surface."""
    parts = tail.split("/") if tail else []
    version = None
    if len(parts) >= 2 and parts[0] == "versions":
        if not _VERSION.fullmatch(parts[1]):
            raise BadRequest("model version must be a positive integer", code="invalid_version")
        version, parts = parts[1], parts[2:]
    if len(parts) > 1 or (parts and parts[0] not in _ACTIONS) or parts == [""]:
        raise NotFound("unknown v2 model endpoint", code="unknown_url")
    action = parts[0] if parts else ""
    if method != _ACTIONS[action] and not (method == "HEAD" and _ACTIONS[action] == "GET"):
        raise BadRequest(f"this v2 endpoint accepts {_ACTIONS[action]} only",
                         code="method_not_allowed")
    return ModelCall(version, action)


class V2Router:
    def __init__(self, local: ASGIApp, *, client: UpstreamClient, max_body_bytes: int) -> None:
        self.local = local
        self.client = client
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope)
        variant = info.variant if info is not None else None
        path: str = scope["path"]
        if info is None or variant is None or not path.startswith(PREFIX):
            await self.local(scope, receive, send)
            return
        _, _, tail = path[len(PREFIX):].partition("/")
        call = parse_model_call(tail, scope["method"])
        target = call.path_for(variant.model)
        if variant.upstream.kind == "v2":
            await self._forward(scope, receive, send, target)
            return
        if variant.upstream.kind != "onnx":
            raise WrongAPI(info.route_name, variant.upstream.kind, "/v1")
        await self.local({**scope, "path": target, "raw_path": target.encode()}, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, target: str) -> None:
        """Send the request on and stream the answer back as it arrives: nothing of the
        answer is buffered, however large the output tensors are."""
        info = get_info(scope)
        assert info is not None and info.variant is not None
        upstream = info.variant.upstream
        body = info.body if info.body is not None else await read_body(scope, receive, self.max_body_bytes)
        headers = forward_headers(scope["headers"], upstream, info.request_id)
        started = time.perf_counter()
        resp = await self.client.open(
            upstream, scope["method"], target, body=body or None, headers=headers, stream=True
        )
        try:
            info.upstream_s += time.perf_counter() - started
            if resp.content_length == 0:
                await send_response(send, resp.status, b"", response_headers(resp))
                return
            out_headers = response_headers(resp)
            if resp.content_length is not None and resp.status not in (204, 304):
                out_headers.append((b"content-length", str(resp.content_length).encode()))
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": out_headers})
            try:
                async for chunk in resp.iter_chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamReadError as exc:
                # Headers are gone: the short body tells the client the answer is cut.
                raise UpstreamError(f"upstream {upstream.name!r} failed mid-response") from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            resp.release()
