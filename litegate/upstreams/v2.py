"""Routes on ``/v2``: A/B between local models, and forwarding to remote Open Inference
Protocol v2 servers (Triton, KServe, or another litegate).

``/v2/models/<route>/...`` where ``<route>`` is a configured route is sent to the chosen
variant: a local ONNX model (the path is rewritten to that model) or a ``kind: v2``
upstream (the request is forwarded as is, binary tensors included). Names that are not
routes go straight to the local models.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from litegate.context import ASGIApp, Receive, Scope, Send, get_info, read_body
from litegate.errors import LitegateError, send_error
from litegate.responses import send_response
from litegate.upstreams.client import forward_headers, response_headers

if TYPE_CHECKING:
    from litegate.gateway import Gateway

PREFIX = "/v2/models/"


class V2Router:
    def __init__(self, gateway: Gateway, local: ASGIApp) -> None:
        self.gateway = gateway
        self.local = local
        self.client = gateway.http
        self.max_body = gateway.settings.max_infer_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope)
        variant = info.variant if info is not None else None
        path: str = scope["path"]
        if variant is None or not path.startswith(PREFIX):
            await self.local(scope, receive, send)
            return
        name, _, tail = path[len(PREFIX):].partition("/")
        tail = "/" + tail if tail else ""
        target = PREFIX + variant.model + tail
        if variant.upstream.kind == "v2":
            try:
                await self._forward(scope, receive, send, target)
            except LitegateError as exc:  # rendered in the v2 shape, {"error": "..."}
                if info is not None and info.status:
                    raise
                await send_error(send, exc, path=path)
            return
        if variant.upstream.kind != "onnx":
            await send_error(
                send,
                LitegateError(f"route {name!r} targets a {variant.upstream.kind!r} upstream; "
                              "use the /v1 API for it"),
                path=path,
            )
            return
        await self.local({**scope, "path": target, "raw_path": target.encode()}, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, target: str) -> None:
        info = get_info(scope)
        assert info is not None and info.variant is not None
        upstream = info.variant.upstream
        body = info.body if info.body is not None else await read_body(scope, receive, self.max_body)
        query = scope.get("query_string", b"")
        url_path = target + ("?" + query.decode("latin-1") if query else "")
        headers = forward_headers(scope["headers"], upstream, info.request_id)
        started = time.perf_counter()
        resp = await self.client.open(
            upstream, scope["method"], url_path, body=body or None, headers=headers, stream=False
        )
        payload = await self.client.read(upstream, resp)
        info.upstream_s += time.perf_counter() - started
        await send_response(send, resp.status, payload, response_headers(resp))
