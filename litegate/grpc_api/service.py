"""The gRPC Open Inference Protocol service (Triton's ``inference.GRPCInferenceService``,
a superset of KServe's ``grpc_predict_v2.proto``) behind the same policies as ``/v2``.

No ASGI here: every call walks the policy objects directly, in the REST pipeline's
order — the API key from the ``authorization`` (``Bearer <key>``) or ``x-api-key``
metadata (against the immutable snapshot), the route and the key's scope, the limits
(``Limiter.checks`` + ``hit``, the very counters REST uses, so one quota covers both
surfaces), the variant (``Bandit.choose``: adaptive shares learn from gRPC calls too),
the handler, then metrics, the dashboard's stats, the key's last use and the access log.
``LitegateError``s become gRPC status codes in one place (``_abort``); a 429's
``Retry-After`` and ``X-RateLimit-*`` go to the trailing metadata.

Served: ServerLive, ServerReady, ServerMetadata (no key, like ``/v2/health/*`` and
``/v2``), ModelReady, ModelMetadata, ModelConfig, ModelInfer and ModelStatistics
(keyed). Local ONNX
models and routes whose variant is a local model or a ``kind: v2`` upstream; an
upstream is reached over its REST v2 surface (the configuration knows its HTTP base URL
only), its answer buffered up to ``max_upstream_body_bytes``. Everything else in the
service answers UNIMPLEMENTED (the generated servicer's default).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import msgspec
import structlog
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceServicer

from litegate.errors import (
    BadRequest,
    Forbidden,
    LitegateError,
    NotFound,
    UpstreamError,
    WrongAPI,
)
from litegate.grpc_api.tensors import (
    decode_inputs,
    encode_for_rest,
    encode_outputs,
    requested_outputs,
)
from litegate.inference.codec import HEADER_LENGTH, _numeric, _shape
from litegate.inference.dtypes import BYTES, V2_TO_NUMPY
from litegate.inference.text_pipeline import public_signature
from litegate.policies.admission import admit
from litegate.policies.api_keys import authenticate
from litegate.policies.bandit import Bandit, PendingFeedback
from litegate.policies.limiting import Limiter
from litegate.policies.metrics import Metrics
from litegate.policies.observe import AccessLog, Observer
from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.policies.variants import choose_variant
from litegate.snapshot import KeySpec, RouteSpec, SnapshotStore, VariantSpec
from litegate.upstreams.client import UpstreamClient
from litegate.upstreams.v2_forward import parse_model_call

if TYPE_CHECKING:
    from litegate.inference.manager import ModelManager

log = structlog.get_logger("litegate.grpc")

SERVICE = "/inference.GRPCInferenceService/"
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_IDS = itertools.count(1)
_decode_json = msgspec.json.Decoder().decode


class Call:
    """One call's facts (the gRPC counterpart of ``RequestInfo``); never shared."""

    __slots__ = ("key", "method", "name", "request_id", "route", "snapshot", "started",
                 "status", "upstream_s", "variant")

    def __init__(self, method: str, request_id: str, snapshot: Any) -> None:
        self.method = method
        self.request_id = request_id
        self.started = time.perf_counter()
        self.snapshot = snapshot
        self.key: KeySpec | None = None
        self.name: str | None = None
        """The route or local model name when the configuration knows it, else None:
        metric labels and limit keys never take a client's text."""
        self.route: RouteSpec | None = None
        self.variant: VariantSpec | None = None
        self.status = 200
        self.upstream_s = 0.0


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in context.invocation_metadata() or ():
        if isinstance(v, str):
            out.setdefault(k.lower(), v)
    return out


def extract_key(metadata: dict[str, str]) -> str | None:
    auth = metadata.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return metadata.get("x-api-key") or None


class InferenceService(GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Shared by every call: no per-call state on ``self``."""

    def __init__(
        self,
        *,
        snapshots: SnapshotStore,
        limiter: Limiter,
        spend: Spend | None,
        metrics: Metrics,
        stats: Stats,
        models: Callable[[], ModelManager],
        client: UpstreamClient,
        on_key_use: Callable[[int, float], None],
        max_response_bytes: int,
        access_log: bool = True,
        server_name: str = "litegate",
        bandit: Bandit | None = None,
        pending: PendingFeedback | None = None,
    ) -> None:
        from litegate.inference.v2_server import _version

        self.snapshots = snapshots
        self.limiter = limiter
        self.spend = spend
        self.metrics = metrics
        self.stats = stats
        self.models = models
        self.client = client
        self.on_key_use = on_key_use
        self.max_response_bytes = max_response_bytes
        self.bandit = bandit
        """A/B shares (adaptive ones learn from these calls too); None: the weights."""
        self.pending = pending
        """Where calls of ``feedback`` routes are remembered for ``/v1/feedback``, as
        ``ABRoutingMiddleware`` remembers HTTP requests (by the call's request id)."""
        self.observer = Observer(metrics=metrics, stats=stats, spend=spend)
        """The observe step HTTP's ``ObserveMiddleware`` uses: the same fields, counted
        the same way (a gRPC call carries no tokens, so it records no spend)."""
        self.access_log = AccessLog() if access_log else None
        self.server_metadata = pb.ServerMetadataResponse(
            name=server_name, version=_version(),
            extensions=["model_configuration", "statistics"])

    # ------------------------------------------------------------ public health
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        manager = self._manager(None)
        return pb.ServerReadyResponse(ready=manager is None or manager.ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.server_metadata

    # ------------------------------------------------------------ keyed calls
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve("ModelReady", request.name, request.version, context,
                                 self._ready, request)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve("ModelMetadata", request.name, request.version, context,
                                 self._model_metadata, request)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve("ModelInfer", request.model_name, request.model_version,
                                 context, self._infer, request)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve("ModelConfig", request.name, request.version, context,
                                 self._config, request)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve("ModelStatistics", request.name, request.version, context,
                                 self._statistics, request)

    # ------------------------------------------------------------ the policies
    async def _serve(self, method: str, name: str, version: str,
                     context: grpc.aio.ServicerContext, handler: Any, request: Any) -> Any:
        metadata = _metadata(context)
        rid = metadata.get("x-request-id")
        call = Call(method, rid if rid and len(rid) <= 128 and rid.isprintable()
                    else f"grpc-{next(_IDS):08x}", self.snapshots.current)
        try:
            self._authenticate(call, metadata)
            # Every keyed call counts, as on REST; no name: the key's own limits only.
            await self._resolve_and_limit(call, name, metadata)
            return await handler(call, request, version)
        except LitegateError as exc:
            call.status = exc.status_code
            await self._abort(context, exc)
        except asyncio.CancelledError:
            call.status = 499  # the client went away
            raise
        except Exception:
            call.status = 500
            log.exception("unhandled_error", method=method, request_id=call.request_id)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error; see the gateway log for {call.request_id}")
        finally:
            await self._observe(call)

    def _authenticate(self, call: Call, metadata: dict[str, str]) -> None:
        now = time.time()
        call.key = authenticate(
            call.snapshot, extract_key(metadata), now,
            missing="Missing API key: send 'authorization: Bearer <key>' or 'x-api-key' metadata")
        self.on_key_use(call.key.id, now)

    async def _resolve_and_limit(self, call: Call, name: str,
                                 metadata: dict[str, str]) -> None:
        snapshot = call.snapshot
        route = snapshot.routes.get(name) if name else None
        call.route = route
        call.name = name if route is not None or name in snapshot.models else None
        key = call.key
        assert key is not None
        if call.name is not None and not key.allows(call.name):
            raise Forbidden(f"This API key may not use '{call.name}'")
        # Unknown names count against the key's own limits only, then NOT_FOUND.
        await admit(self.limiter, self.spend, snapshot.version, key, call.name, route)
        if route is not None:
            value = (metadata.get(route.sticky_header.decode("latin-1"))
                     if route.sticky_header is not None else None)
            sticky = route.sticky_value(key.id, value.encode() if value is not None else None)
            if self.bandit is None:
                call.variant = choose_variant(route, sticky)
                return
            call.variant = self.bandit.choose(route, sticky)
            adaptive = self.bandit.adaptive(route.name)
            if adaptive is not None and adaptive.metric == "feedback" and self.pending is not None:
                self.pending.remember(call.request_id, route.name, call.variant.name, key.id)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: LitegateError) -> None:
        code = _STATUS.get(exc.status_code, grpc.StatusCode.INTERNAL)
        trailers = tuple((k.lower(), str(v)) for k, v in exc.headers.items()
                         if k.lower() != "www-authenticate")
        await context.abort(code, exc.detail, trailers)

    async def _observe(self, call: Call) -> None:
        elapsed = time.perf_counter() - call.started
        if self.bandit is not None and call.route is not None and call.variant is not None:
            self.bandit.outcome(call.route.name, call.variant.name, call.status, elapsed)
        pending = self.observer.finish(call.name, call.variant, call.status, elapsed,
                                       call.upstream_s, None, call.key, 0, 0)
        if pending is not None:
            await asyncio.shield(pending)
        if self.access_log is not None:
            self.access_log("GRPC", SERVICE + call.method, call.status, call.name,
                            call.variant, call.key, None, elapsed, call.upstream_s, 0,
                            call.request_id)

    # ------------------------------------------------------------ targets
    def _manager(self, call: Call | None) -> ModelManager | None:
        snapshot = call.snapshot if call is not None else self.snapshots.current
        if call is None and not snapshot.models:
            return None
        manager = self.models()
        if manager.current_snapshot is None:
            manager.on_snapshot(snapshot)
        return manager

    def _target(self, call: Call, name: str) -> tuple[str, VariantSpec | None]:
        """(model name, the v2 upstream variant or None for a local model)."""
        variant = call.variant
        if variant is None:
            return name, None
        if variant.upstream.kind == "v2":
            return variant.model, variant
        if variant.upstream.kind != "onnx":
            raise WrongAPI(call.name, variant.upstream.kind, "/v1")
        return variant.model, None

    def _local(self, call: Call) -> ModelManager:
        manager = self._manager(call)
        assert manager is not None
        return manager

    async def _ready(self, call: Call, request: Any, version: str) -> Any:
        model, remote = self._target(call, request.name)
        if remote is not None:
            status, _, _ = await self._upstream(call, remote, "GET", model, version, "ready")
            return pb.ModelReadyResponse(ready=status == 200)
        manager = self._local(call)
        spec, resolved = manager.resolve(model, version or None)
        return pb.ModelReadyResponse(ready=manager.is_loaded(model, resolved) or not spec.hot)

    async def _model_metadata(self, call: Call, request: Any, version: str) -> Any:
        model, remote = self._target(call, request.name)
        if remote is not None:
            _, body, _ = await self._upstream(call, remote, "GET", model, version, "")
            doc = _json_object(body, remote)
            response = pb.ModelMetadataResponse(
                name=str(doc.get("name", model)), platform=str(doc.get("platform", "")),
                versions=[str(v) for v in doc.get("versions") or ()])
            _tensor_metadata(response.inputs, doc.get("inputs"))
            _tensor_metadata(response.outputs, doc.get("outputs"))
            return response
        manager = self._local(call)
        spec, resolved = manager.resolve(model, version or None)
        signature = public_signature(spec.options, spec.versions[resolved].signature or {})
        response = pb.ModelMetadataResponse(name=model, versions=list(spec.versions),
                                            platform="onnxruntime_onnx")
        _tensor_metadata(response.inputs, signature.get("inputs"))
        _tensor_metadata(response.outputs, signature.get("outputs"))
        return response

    async def _infer(self, call: Call, request: Any, version: str) -> Any:
        model, remote = self._target(call, request.model_name)
        inputs = decode_inputs(request)
        outputs = requested_outputs(request)
        if remote is not None:
            return await self._infer_remote(call, remote, model, version, request.id,
                                            inputs, outputs)
        manager = self._local(call)
        _, resolved = manager.resolve(model, version or None)
        result = await manager.infer(model, inputs, version=resolved, outputs=outputs or None)
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.version,
                                         id=request.id)
        if sum(a.size for a in result.outputs.values()) > 65536:
            await asyncio.to_thread(encode_outputs, response, result.outputs, outputs,
                                    self.max_response_bytes)
        else:
            encode_outputs(response, result.outputs, outputs, self.max_response_bytes)
        return response

    async def _config(self, call: Call, request: Any, version: str) -> Any:
        """The model configuration, as REST ``/v2/models/<m>/config`` answers it."""
        model, remote = self._target(call, request.name)
        if remote is not None:
            _, body, _ = await self._upstream(call, remote, "GET", model, version, "config")
            try:
                config = json_format.ParseDict(_json_object(body, remote), mc.ModelConfig(),
                                               ignore_unknown_fields=True)
            except json_format.ParseError as exc:
                raise UpstreamError(f"upstream {remote.upstream.name!r} answered a model "
                                    "configuration that is not Triton's") from exc
            return pb.ModelConfigResponse(config=config)
        manager = self._local(call)
        spec, resolved = manager.resolve(model, version or None)
        signature = public_signature(spec.options, spec.versions[resolved].signature or {})
        config = mc.ModelConfig(name=model, platform="onnxruntime_onnx", backend="onnxruntime",
                                max_batch_size=int(spec.max_batch_size or 0))
        for t in signature.get("inputs", ()):
            config.input.add(name=t["name"], data_type=_config_type(t["datatype"]),
                             dims=t["shape"])
        for t in signature.get("outputs", ()):
            config.output.add(name=t["name"], data_type=_config_type(t["datatype"]),
                              dims=t["shape"])
        return pb.ModelConfigResponse(config=config)

    async def _statistics(self, call: Call, request: Any, version: str) -> Any:
        from litegate.inference.v2_server import _stats

        if request.name:
            model, remote = self._target(call, request.name)
            if remote is not None:
                raise BadRequest("statistics of a remote v2 upstream: ask it over REST")
            manager = self._local(call)
            _, resolved = manager.resolve(model, version or None)
            doc = _stats(manager, model, resolved if version else None)
        else:
            manager = self._local(call)
            doc = _stats(manager, None, None)
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # ------------------------------------------------------------ kind: v2 upstreams
    async def _upstream(self, call: Call, variant: VariantSpec, method: str, model: str,
                        version: str, action: str, body: bytes | None = None,
                        headers: dict[str, str] | None = None) -> tuple[int, bytes, int | None]:
        """One REST v2 call to the upstream; the path is rebuilt from parsed parts."""
        tail = (f"versions/{version}/" if version else "") + action
        path = parse_model_call(tail.rstrip("/"), method).path_for(model)
        upstream = variant.upstream
        sent = {"x-request-id": call.request_id, "accept-encoding": "identity",
                **(headers or {})}
        if upstream.api_key:
            sent["authorization"] = f"Bearer {upstream.api_key}"
        started = time.perf_counter()
        try:
            resp = await self.client.open(upstream, method, path, body=body, headers=sent,
                                          stream=False)
            data = await self.client.read(upstream, resp)
        finally:
            call.upstream_s += time.perf_counter() - started
        if resp.status >= 400 and not (action == "ready" and resp.status == 503):
            detail = _error_detail(data) or f"upstream {upstream.name!r} answered {resp.status}"
            if resp.status == 404:
                raise NotFound(detail)
            if resp.status < 500:
                raise BadRequest(detail)
            raise UpstreamError(f"upstream {upstream.name!r}: {detail}")
        length = resp.header(HEADER_LENGTH)
        return resp.status, data, int(length) if length and length.isdigit() else None

    async def _infer_remote(self, call: Call, variant: VariantSpec, model: str, version: str,
                            request_id: str, inputs: Any, outputs: list[str]) -> Any:
        body, header_length = encode_for_rest(inputs, outputs, request_id or call.request_id)
        _, data, length = await self._upstream(
            call, variant, "POST", model, version, "infer", body,
            {"content-type": "application/octet-stream",
             HEADER_LENGTH: str(header_length)})
        return _rest_answer(data, length, variant, request_id)


def _config_type(datatype: str) -> int:
    return int(mc.DataType.Value("TYPE_" + ("STRING" if datatype == BYTES else datatype)))


def _error_detail(data: bytes) -> str | None:
    try:
        doc = _decode_json(data)
    except msgspec.DecodeError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error)[:500] if error else None


def _json_object(data: bytes, variant: VariantSpec) -> dict[str, Any]:
    try:
        doc = _decode_json(data)
    except msgspec.DecodeError as exc:
        raise UpstreamError(f"upstream {variant.upstream.name!r} answered invalid JSON") from exc
    if not isinstance(doc, dict):
        raise UpstreamError(f"upstream {variant.upstream.name!r} answered a non-object")
    return doc


def _tensor_metadata(target: Any, tensors: Any) -> None:
    for t in tensors or ():
        if isinstance(t, dict):
            target.add(name=str(t.get("name", "")), datatype=str(t.get("datatype", "")),
                       shape=[int(d) for d in t.get("shape") or ()])


def _rest_answer(data: bytes, header_length: int | None, variant: VariantSpec,
                 request_id: str) -> Any:
    """A REST v2 infer answer (JSON, or JSON header + binary outputs) -> ModelInferResponse."""
    if header_length is not None and header_length <= len(data):
        doc, rest = _json_object(data[:header_length], variant), data[header_length:]
    else:
        doc, rest = _json_object(data, variant), b""
    response = pb.ModelInferResponse(model_name=str(doc.get("model_name", "")),
                                     model_version=str(doc.get("model_version", "")),
                                     id=request_id)
    offset = 0
    for out in doc.get("outputs") or ():
        name, datatype = str(out.get("name", "")), str(out.get("datatype", ""))
        if datatype not in V2_TO_NUMPY:
            raise UpstreamError(f"upstream {variant.upstream.name!r}: bad output datatype")
        try:
            shape = _shape(out.get("shape"), name)
        except BadRequest as exc:
            raise UpstreamError(f"upstream {variant.upstream.name!r}: {exc.detail}") from exc
        size = (out.get("parameters") or {}).get("binary_data_size")
        if isinstance(size, int):
            if offset + size > len(rest):
                raise UpstreamError(f"upstream {variant.upstream.name!r}: truncated output")
            raw = rest[offset:offset + size]
            offset += size
        elif datatype == BYTES:
            items = [str(v).encode() for v in _flat(out.get("data"))]
            raw = b"".join(struct.pack("<I", len(v)) + v for v in items)
        else:
            try:
                raw = _numeric(out.get("data"), V2_TO_NUMPY[datatype], datatype,
                               name).tobytes()
            except BadRequest as exc:  # the upstream's answer is wrong, not the client
                raise UpstreamError(f"upstream {variant.upstream.name!r}: output "
                                    f"{exc.detail}") from exc
        response.outputs.add(name=name, datatype=datatype, shape=list(shape))
        response.raw_output_contents.append(raw)
    return response


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item))
    return out
