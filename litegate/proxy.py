"""The OpenAI-compatible handler: ``/v1/models[/{id}]`` and every endpoint whose body
names the model (chat and text completions, embeddings, responses, moderations, image
generation, speech; ``OPENAI_BODY_PATHS``), forwarded to the chosen variant. The upload
endpoints (transcriptions, translations, image edits and variations) send a form: it is
rebuilt for the variant (:meth:`litegate.multipart.Form.encode`), so fallbacks and
shadows replay it too.

Streams are relayed chunk by chunk; a stream that breaks after its first chunk ends
with an SSE error event, never with a clean end that looks like a complete answer.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from litegate.asgi_types import Receive, Scope, Send
from litegate.errors import (
    BadRequest,
    LitegateError,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    WrongAPI,
)
from litegate.policies.bandit import Bandit, pick_variant
from litegate.policies.metrics import Metrics
from litegate.request import OPENAI_BODY_PATHS, RequestInfo, get_info, sticky_value
from litegate.responses import send_response
from litegate.snapshot import KeySpec, RouteSpec, VariantSpec
from litegate.upstreams.client import (
    UpstreamClient,
    UpstreamReadError,
    forward_headers,
    response_headers,
)
from litegate.upstreams.http1 import Response

if TYPE_CHECKING:
    from litegate.inference.manager import ModelManager

log = structlog.get_logger("litegate.proxy")
_encode = msgspec.json.encode
_JSON = [(b"content-type", b"application/json")]
MAX_FALLBACKS = 3
MAX_SHADOW_INFLIGHT = 64
MODELS_PREFIX = "/v1/models/"
MAX_UPSTREAM_ERROR_TEXT = 1000
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own bound per request


class _Usage(msgspec.Struct):
    total_tokens: int = 0
    prompt_tokens: int = 0
    input_tokens: int = 0
    """The Responses API's name for prompt tokens."""


class _Response(msgspec.Struct):
    usage: _Usage | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None
    response: _Response | None = None
    """Responses API stream events carry the usage in ``response.usage``."""


_decode_usage = msgspec.json.Decoder(_WithUsage).decode


def usage_tokens(payload: bytes) -> tuple[int, int]:
    """(total, prompt) tokens from an OpenAI response body or stream event, (0, 0) if absent."""
    if b'"usage"' not in payload:
        return 0, 0
    try:
        body = _decode_usage(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0, 0
    usage = body.usage or (body.response.usage if body.response else None)
    return (usage.total_tokens, usage.prompt_tokens or usage.input_tokens) if usage else (0, 0)


async def send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_response(send, status, _encode(payload), [*_JSON, *(headers or [])])


class OpenAIProxy:
    def __init__(
        self, *, client: UpstreamClient, metrics: Metrics, models: Callable[[], ModelManager],
        bandit: Bandit | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.bandit = bandit
        """A fallback route's variant is chosen, and its outcome recorded, through the
        same bandit path as A/B routing's (an adaptive fallback learns from fallbacks)."""
        self.models = models
        """The ONNX model manager, created (and onnxruntime imported) on first use."""
        self._shadows: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/v1/models" and method == "GET":
            await self._list_models(scope, send)
            return
        if path.startswith(MODELS_PREFIX) and method == "GET":
            await self._retrieve_model(scope, send, path[len(MODELS_PREFIX):])
            return
        if path not in OPENAI_BODY_PATHS:
            raise NotFound(f"Unknown endpoint {method} {path}", code="unknown_url")
        if method != "POST":
            raise BadRequest(f"{path} accepts POST only", code="method_not_allowed")
        info = _info(scope)
        route = info.route
        if route is None:
            raise NotFound(f"The model '{info.route_name}' does not exist", code="model_not_found")
        variant = info.variant
        assert variant is not None  # chosen by the A/B routing middleware
        shadow = route.shadow
        if shadow is not None and shadow is not variant and not info.stream:
            self._mirror(scope, info, shadow, path)
        hops = 0
        while True:
            started = time.perf_counter()
            try:
                await self._dispatch(scope, receive, send, info, route, variant, path)
                if hops:
                    self._fallback_outcome(info, route, variant, info.status, started)
                return
            except LitegateError as exc:
                if hops:  # the first hop's outcome is A/B routing's to record
                    self._fallback_outcome(info, route, variant, info.status or exc.status_code,
                                           started)
                if not isinstance(exc, (UpstreamError, UpstreamTimeout, ServiceUnavailable)):
                    raise
                fallback = info.snapshot.routes.get(route.fallback) if route.fallback else None
                if fallback is None or hops >= MAX_FALLBACKS or info.status:
                    raise
                hops += 1
                log.warning("fallback", route=route.name, to=fallback.name, error=exc.detail)
                route = fallback
                variant = pick_variant(self.bandit, route, sticky_value(scope, info, route))
                info.variant = variant
                # The answer comes from the fallback's variant: say so in the headers.
                info.extra_headers[:] = [h for h in info.extra_headers if h[0] != b"x-litegate-variant"]
                info.extra_headers.append((b"x-litegate-variant", variant.name.encode()))
                info.extra_headers.append((b"x-litegate-fallback", route.name.encode()))

    def _fallback_outcome(
        self, info: RequestInfo, route: RouteSpec, variant: VariantSpec, status: int,
        started: float,
    ) -> None:
        if self.bandit is not None:
            self.bandit.outcome(route.name, variant.name, status, time.perf_counter() - started,
                                failed=info.stream_error)

    def _mirror(self, scope: Scope, info: RequestInfo, variant: VariantSpec, path: str) -> None:
        """Send a copy to the shadow variant; its answer is ignored, and when too many
        mirrors are in flight new ones are dropped rather than slowing real traffic."""
        if variant.upstream.kind != "openai" or len(self._shadows) >= MAX_SHADOW_INFLIGHT:
            return
        assert info.route_name is not None
        data, headers = _upstream_request(scope, info, variant)
        task = asyncio.create_task(self._shadow(variant, path, data, headers, info.route_name))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self, variant: VariantSpec, path: str, data: bytes, headers: dict[str, str], route: str
    ) -> None:
        status = "error"
        try:
            resp = await self.client.open(
                variant.upstream, "POST", path[3:], body=data, headers=headers, stream=False
            )
            await self.client.read(variant.upstream, resp)
            status = str(resp.status)
        except LitegateError as exc:
            status = str(exc.status_code)
        finally:
            self.metrics.shadow.labels(route, variant.name, status).inc()

    def _visible_routes(self, scope: Scope) -> tuple[Mapping[str, RouteSpec], KeySpec | None]:
        info = _info(scope)
        return info.snapshot.routes, info.key

    async def _list_models(self, scope: Scope, send: Send) -> None:
        routes, key = self._visible_routes(scope)
        data = [_model_object(name) for name in sorted(routes) if key is None or key.allows(name)]
        await send_json(send, 200, {"object": "list", "data": data})

    async def _retrieve_model(self, scope: Scope, send: Send, name: str) -> None:
        """``client.models.retrieve``: a route the key may use, else 404 (as OpenAI)."""
        routes, key = self._visible_routes(scope)
        if name not in routes or (key is not None and not key.allows(name)):
            raise NotFound(f"The model '{name}' does not exist", code="model_not_found")
        await send_json(send, 200, _model_object(name))

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        route: RouteSpec,
        variant: VariantSpec,
        path: str,
    ) -> None:
        if variant.upstream.kind == "onnx":
            if path != "/v1/embeddings":
                raise BadRequest(f"route {route.name!r} serves a local model: only /v1/embeddings")
            await self._local_embeddings(send, info, route, variant)
            return
        if variant.upstream.kind != "openai":
            raise WrongAPI(route.name, variant.upstream.kind, "/v2 inference")
        data, headers = _upstream_request(scope, info, variant)
        upstream = variant.upstream
        t0 = time.perf_counter()
        resp = await self.client.open(
            upstream, "POST", path[3:], body=data, headers=headers, stream=info.stream
        )
        is_sse = (resp.header("content-type") or "").startswith("text/event-stream")
        if not (info.stream and resp.status == 200 and is_sse):
            body = await self.client.read(upstream, resp)
            info.upstream_s += time.perf_counter() - t0
            if resp.status == 200:
                info.tokens, info.prompt_tokens = usage_tokens(body)
            elif resp.status >= 400 and not _is_openai_error(body):
                # A plain-text or foreign error body: the client still gets the OpenAI
                # shape (the openai client maps the status), with the upstream's words.
                await send_json(send, resp.status, _upstream_error(upstream.name, resp.status, body))
                return
            await send_response(send, resp.status, body, response_headers(resp))
            return
        info.upstream_s += time.perf_counter() - t0
        # A form's files are no prompt: only its text fields count towards the estimate.
        prompt_bytes = info.form.text_bytes if info.form is not None else len(data)
        await self._relay_stream(receive, send, info, resp, prompt_bytes)

    async def _relay_stream(
        self,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        resp: Response,
        request_bytes: int,
    ) -> None:
        disconnected = False
        relay = asyncio.current_task()
        assert relay is not None

        async def watch_disconnect() -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    # Stop the relay by cancelling it, never by closing ``resp`` under a
                    # pending read (with aiohttp that leaked ~7 KB a disconnect through
                    # a shared exception's growing traceback; cancelling is the one
                    # path out of the read either way).
                    relay.cancel()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        events = 0
        reported = reported_prompt = 0
        try:
            try:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": response_headers(resp)}
                )
                async for chunk in resp.iter_chunks():
                    events += chunk.count(b"data:")
                    if b'"usage"' in chunk:
                        reported, reported_prompt = max((reported, reported_prompt),
                                                        _stream_usage(chunk))
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamReadError as exc:
                if not disconnected:
                    info.stream_error = True
                    kind = "timeout" if isinstance(exc, TimeoutError) else "read"
                    self.metrics.upstream_errors.labels(info.variant.upstream.name, kind).inc()  # type: ignore[union-attr]
                    log.warning("stream_interrupted", error=str(exc) or type(exc).__name__)
                    event = {
                        "error": {
                            "message": "upstream stream interrupted",
                            "type": "upstream_error",
                            "code": "stream_interrupted",
                        }
                    }
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + _encode(event) + b"\n\n",
                            "more_body": True,
                        }
                    )
        except asyncio.CancelledError:
            # Our watcher's cancel ends the relay quietly; anyone else's propagates.
            if not disconnected or relay.uncancel():
                raise
        finally:
            watcher.cancel()
            if disconnected:
                resp.close()  # the upstream stops generating for nobody
            else:
                resp.release()
            # Streams are counted too: the upstream's usage when it sends one, else an
            # estimate (one token per event plus ~4 bytes per prompt token).
            if reported:
                info.tokens, info.prompt_tokens = reported, reported_prompt
            else:
                info.prompt_tokens = request_bytes // 4
                info.tokens = max(events - 1, 0) + info.prompt_tokens
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _local_embeddings(
        self, send: Send, info: RequestInfo, route: RouteSpec, variant: VariantSpec
    ) -> None:
        assert info.json is not None
        inputs = _embedding_inputs(info.json.get("input"))
        fmt = info.json.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'")
        dimensions = info.json.get("dimensions")
        if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
            raise BadRequest("'dimensions' must be a positive integer", code="invalid_dimensions")
        t0 = time.perf_counter()
        vectors, prompt_tokens = await self.models().embed(variant.model, inputs)
        info.upstream_s += time.perf_counter() - t0
        if dimensions is not None and vectors and len(vectors[0]) != dimensions:
            raise BadRequest(
                f"model {route.name!r} produces {len(vectors[0])}-dimensional embeddings and "
                f"cannot honour dimensions={dimensions}", code="invalid_dimensions")
        if fmt == "base64":
            import numpy as np

            data = [
                {"object": "embedding", "index": i,
                 "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()}
                for i, v in enumerate(vectors)
            ]
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                for i, v in enumerate(vectors)
            ]
        info.tokens = info.prompt_tokens = prompt_tokens
        await send_json(
            send,
            200,
            {
                "object": "list",
                "data": data,
                "model": route.name,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            },
        )


def _info(scope: Scope) -> RequestInfo:
    info = get_info(scope)
    if info is None:
        raise RuntimeError("OpenAIProxy runs behind the request-context middleware")
    return info


def _upstream_request(
    scope: Scope, info: RequestInfo, variant: VariantSpec
) -> tuple[bytes, dict[str, str]]:
    """The body and headers that ask ``variant`` for this request, naming its model."""
    headers = forward_headers(scope["headers"], variant.upstream, info.request_id)
    if info.form is not None:
        data, headers["content-type"] = info.form.encode({"model": variant.model})
        return data, headers
    assert info.json is not None
    payload = dict(info.json)
    payload["model"] = variant.model
    return _encode(payload), headers


def _embedding_inputs(raw: Any) -> list[str] | list[list[int]]:
    """OpenAI's ``input``: a string, strings, a token-id list, or token-id lists."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and 0 < len(raw) <= MAX_EMBEDDING_INPUTS:
        if all(isinstance(t, str) for t in raw):
            return raw
        if all(type(t) is int for t in raw):
            return [raw]
        if all(isinstance(row, list) and row and all(type(t) is int for t in row) for row in raw):
            return raw
    raise BadRequest(
        f"'input' must be a string, or 1 to {MAX_EMBEDDING_INPUTS} strings or non-empty "
        "token-id lists", code="invalid_input")


def _is_openai_error(body: bytes) -> bool:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str)


def _upstream_error(upstream: str, status: int, body: bytes) -> dict[str, Any]:
    text = body[:MAX_UPSTREAM_ERROR_TEXT].decode("utf-8", "replace").strip()
    return {"error": {"message": f"upstream {upstream!r} answered {status}: {text}",
                      "type": "upstream_error", "code": f"upstream_{status}"}}


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "litegate"}


def _stream_usage(chunk: bytes) -> tuple[int, int]:
    """The largest (total, prompt) usage reported in a chunk's events."""
    best = (0, 0)
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:") and b'"usage"' in line:
            best = max(best, usage_tokens(line[5:].strip()))
    return best
