"""``POST /v1/aggregate``: fan one request out to several routes in parallel.

Each branch goes through the route's own limits, cache and A/B selection, has its own
timeout, and reports its own status; one failing branch never fails the others.

A fan-out is not itself a request (each branch is counted), but a body refused here
(malformed or invalid: 400; oversize: 413) has no branch: it is counted against the key's
own limits (``policies.admission.count_refused``, the rule route resolution applies to
the other endpoints), 429 once they are spent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import msgspec

from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.errors import BadRequest, LitegateError, error_body
from litegate.jsonbody import parse_json
from litegate.policies.admission import count_refused
from litegate.policies.limiting import Limiter
from litegate.proxy import send_json
from litegate.request import SCOPE_KEY, RequestInfo, get_info, read_body

MAX_BRANCHES = 16
MAX_TIMEOUT_S = 300.0


class AggregateRequest(msgspec.Struct, forbid_unknown_fields=True):
    routes: list[str]
    request: dict[str, Any]
    endpoint: Literal["chat/completions", "completions", "embeddings"] = "chat/completions"
    timeout_s: float = 30.0


class AggregateHandler:
    def __init__(
        self, *, branch_app: ASGIApp, max_body_bytes: int, limiter: Limiter | None = None
    ) -> None:
        self.branch_app = branch_app
        """The same route resolution, limits, cache, A/B and metrics as a direct request
        (``Gateway.build_stack(..., branch=True)``): each branch is a request for the
        key's limits and quotas, so a fan-out never multiplies what a key may do."""
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            raise BadRequest("/v1/aggregate accepts POST only", code="method_not_allowed")
        info = get_info(scope)
        if info is None or info.key is None:
            raise RuntimeError("AggregateHandler runs behind the context and auth middleware")
        try:
            req = await self._read_request(scope, receive, info)
        except LitegateError:
            # 429 instead once the key's limits are spent
            await count_refused(self.limiter, info.snapshot.version, info.key)
            raise
        started = time.perf_counter()
        results = await asyncio.gather(
            *(self._branch(scope, info, i, route, req) for i, route in enumerate(req.routes))
        )
        # The branches ran in parallel: their upstream time is the wall time they took.
        info.upstream_s = time.perf_counter() - started
        await send_json(send, 200, {"object": "aggregate", "results": results})

    async def _read_request(
        self, scope: Scope, receive: Receive, info: RequestInfo
    ) -> AggregateRequest:
        body = info.body if info.body is not None else await read_body(scope, receive, self.max_body_bytes)
        try:
            req = msgspec.convert(
                parse_json(body, what="aggregate request", code="invalid_request"), AggregateRequest
            )
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid aggregate request: {exc}", code="invalid_request") from None
        if not 1 <= len(req.routes) <= MAX_BRANCHES:
            raise BadRequest(f"'routes' must name 1 to {MAX_BRANCHES} routes")
        if len(set(req.routes)) != len(req.routes):
            raise BadRequest("'routes' must not repeat a route")
        if not 0 < req.timeout_s <= MAX_TIMEOUT_S:
            raise BadRequest(f"'timeout_s' must be in (0, {MAX_TIMEOUT_S:g}]")
        if req.request.get("stream") is True:
            raise BadRequest("streaming is not supported in aggregate requests")
        return req

    async def _branch(
        self, scope: Scope, parent: RequestInfo, index: int, route: str, req: AggregateRequest
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        sub = RequestInfo(f"{parent.request_id}-{index}", t0, parent.snapshot)
        sub.key = parent.key
        result: dict[str, Any] = {"route": route}
        payload = {**req.request, "model": route}
        body = msgspec.json.encode(payload)
        sub_scope = {
            **scope,
            "path": "/v1/" + req.endpoint,
            "raw_path": ("/v1/" + req.endpoint).encode(),
            "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"],
            SCOPE_KEY: sub,
        }
        status, chunks = 0, []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = sub.status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await asyncio.wait_for(self.branch_app(sub_scope, receive, capture), req.timeout_s)
            result["status"] = status
            raw = b"".join(chunks)
            try:
                result["body"] = parse_json(raw)  # bounded depth: it is re-encoded below
            except BadRequest:
                result["body"] = raw.decode("utf-8", "replace")
        except asyncio.TimeoutError:
            result["status"] = 504
            result["body"] = {"error": {"message": f"branch timed out after {req.timeout_s:g}s",
                                        "type": "timeout_error", "code": "branch_timeout"}}
        except LitegateError as exc:
            result["status"] = exc.status_code
            result["body"] = msgspec.json.decode(error_body(exc))
        result["variant"] = sub.variant.name if sub.variant else None
        result["cache"] = sub.cache
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        return result
