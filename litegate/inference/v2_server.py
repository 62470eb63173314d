"""Open Inference Protocol v2 (KServe / Triton REST) as one pure-ASGI app.

Mounted by the gateway behind request context, auth, limits, cache and metrics; it
takes only a provider of the :class:`~litegate.inference.manager.ModelManager` (created
lazily by the gateway) and its body and response bounds. The body may already have been
read by the gateway (``RequestInfo.body``); otherwise it is read from ``receive``. Every
failure is raised as a typed :class:`LitegateError` (or propagates as it is): the
request-context middleware renders it, as ``{"error": "..."}`` on ``/v2`` paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from litegate.asgi_types import Receive, Scope, Send
from litegate.errors import BadRequest, Forbidden, LitegateError, MethodNotAllowed, NotFound
from litegate.inference.codec import HEADER_LENGTH, decode_request, encode_response
from litegate.inference.stats import VersionStats
from litegate.inference.text_pipeline import public_signature
from litegate.request import get_info, read_body
from litegate.responses import send_response

if TYPE_CHECKING:
    from litegate.inference.manager import ModelManager

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_HEADER_LENGTH = HEADER_LENGTH.encode()
_MODEL = re.compile(
    r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    r"(?:/(?P<action>ready|infer|config|stats))?/?$"
)
_REPO = re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/(?P<action>load|unload)/?$")
OFF_LOOP_ELEMENTS = 65536
"""Responses with more output elements than this are encoded on a worker thread."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
WATCH_AFTER_S = 0.25
"""An inference still waiting after this long starts watching for its client leaving."""


def is_admin(scope: Scope) -> bool:
    """The request's API key (set by the auth middleware) is an admin key."""
    info = get_info(scope)
    return info is not None and info.key is not None and info.key.is_admin


class V2App:
    """``/v2/...`` endpoints. Shared by all requests: no per-request state on ``self``."""

    def __init__(self, models: Callable[[], ModelManager], *,
                 max_body_bytes: int = DEFAULT_MAX_BYTES,
                 max_response_bytes: int = DEFAULT_MAX_BYTES,
                 server_name: str = "litegate",
                 allow_repository: Callable[[Scope], bool] = is_admin) -> None:
        self.models = models
        self.max_body_bytes = max_body_bytes or DEFAULT_MAX_BYTES
        self.max_response_bytes = max_response_bytes or DEFAULT_MAX_BYTES
        self.server_name = server_name
        self.allow_repository = allow_repository
        self._server_metadata = _encode({
            "name": server_name,
            "version": _version(),
            "extensions": ["binary_tensor_data", "model_repository", "model_configuration",
                           "statistics"],
        })

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if not path.startswith("/v2"):
            path = scope.get("root_path", "") + path
        await self._dispatch(scope, receive, send, path, scope["method"])

    def _manager(self, scope: Scope) -> ModelManager:
        """The manager, following the request's snapshot if it has none yet (it was
        created by this request: no model was configured when the gateway started)."""
        manager = self.models()
        if manager.current_snapshot is None:
            info = get_info(scope)
            if info is not None:
                manager.on_snapshot(info.snapshot)
        return manager

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, path: str,
                        method: str) -> None:
        if path in ("/v2", "/v2/"):
            _expect(method, "GET")
            return await _respond(send, 200, self._server_metadata)
        if path == "/v2/health/live":
            _expect(method, "GET")
            return await _respond(send, 200, b"")
        if path == "/v2/health/ready":
            _expect(method, "GET")
            ready = self._manager(scope).ready()
            return await _respond(send, 200 if ready else 503, b"")
        if path.rstrip("/") == "/v2/models/stats":
            _expect(method, "GET")
            return await _respond(send, 200, _encode(_stats(self._manager(scope), None, None)))
        match = _MODEL.match(path)
        if match:
            return await self._model(scope, receive, send, method, match["model"],
                                     match["version"], match["action"])
        if path.rstrip("/") == "/v2/repository/index":
            _expect(method, "POST")
            self._guard(scope)
            return await _respond(send, 200, _encode(_index(self._manager(scope))))
        match = _REPO.match(path)
        if match:
            _expect(method, "POST")
            self._guard(scope)
            manager = self._manager(scope)
            if match["action"] == "load":
                await manager.load(match["model"])
            else:
                await manager.unload(match["model"])
            return await _respond(send, 200, b"")
        raise NotFound(f"no such endpoint: {path}")

    def _guard(self, scope: Scope) -> None:
        if not self.allow_repository(scope):
            raise Forbidden("model repository control needs an admin API key")

    async def _model(self, scope: Scope, receive: Receive, send: Send, method: str,
                     model: str, version: str | None, action: str | None) -> None:
        manager = self._manager(scope)
        spec, resolved = manager.resolve(model, version)
        if action == "infer":
            _expect(method, "POST")
            return await self._infer(scope, receive, send, manager, model, resolved)
        _expect(method, "GET")
        if action == "ready":
            ready = manager.is_loaded(model, resolved) or not spec.hot
            return await _respond(send, 200 if ready else 503, b"")
        signature = public_signature(spec.options, spec.versions[resolved].signature or {})
        if action == "config":
            return await _respond(send, 200, _encode({
                "name": model,
                "platform": "onnxruntime_onnx",
                "backend": "onnxruntime",
                "max_batch_size": int(spec.max_batch_size or 0),
                "input": [_config_tensor(t) for t in signature.get("inputs", [])],
                "output": [_config_tensor(t) for t in signature.get("outputs", [])],
            }))
        if action == "stats":
            return await _respond(send, 200, _encode(
                _stats(manager, model, resolved if version is not None else None)))
        loaded = manager.loaded(model, resolved)
        return await _respond(send, 200, _encode({
            "name": model,
            "versions": list(spec.versions),
            "platform": "onnxruntime_onnx",
            "inputs": signature.get("inputs", []),
            "outputs": signature.get("outputs", []),
            "parameters": {
                "version": resolved,
                "active_version": spec.active_version,
                "loaded": loaded is not None,
                "providers": ",".join(loaded.providers) if loaded is not None else "",
                "max_batch_size": int(spec.max_batch_size or 0),
                "batching": int(spec.max_batch_size or 0) > 1,
            },
        }))

    async def _infer(self, scope: Scope, receive: Receive, send: Send, manager: ModelManager,
                     model: str, resolved: str) -> None:
        body = await _read_body(scope, receive, self.max_body_bytes)
        header_length = None
        for name, value in scope.get("headers", ()):
            if name.lower() == _HEADER_LENGTH:
                try:
                    header_length = int(value)
                except ValueError as exc:
                    raise BadRequest("Inference-Header-Content-Length must be an integer"
                                     ) from exc
        started = time.perf_counter()
        request = decode_request(body, header_length)
        decoded = time.perf_counter()
        result = await _unless_disconnected(receive, manager.infer(
            model, request.inputs, version=resolved,
            outputs=[o.name for o in request.outputs] or None))
        if result is None:
            return  # the client left; its run was stopped and nobody reads an answer
        encode_started = time.perf_counter()
        encode = functools.partial(
            encode_response, model=result.model, version=result.version, request_id=request.id,
            outputs=result.outputs, requested=request.outputs,
            binary_output=request.binary_output, max_bytes=self.max_response_bytes)
        if sum(a.size for a in result.outputs.values()) > OFF_LOOP_ELEMENTS:
            payload, headers = await asyncio.to_thread(encode)  # keep the loop responsive
        else:
            payload, headers = encode()
        stats = manager.version_stats((result.model, result.version))
        stats.compute_input.add(decoded - started)
        stats.compute_output.add(time.perf_counter() - encode_started)
        await _respond(send, 200, payload, headers)


def _stats(manager: ModelManager, model: str | None, version: str | None) -> dict[str, Any]:
    rows = []
    for name, spec in manager.snapshot.models.items():
        if model is not None and name != model:
            continue
        for v in spec.versions:
            if version is None or v == version:
                stats = manager.stats.get((name, v)) or VersionStats()
                rows.append(stats.to_dict(name, v))
    return {"model_stats": rows}


def _index(manager: ModelManager) -> list[dict[str, str]]:
    rows = []
    for name, spec in manager.snapshot.models.items():
        for v in spec.versions:
            rows.append({
                "name": name,
                "version": v,
                "state": "READY" if manager.is_loaded(name, v) else "UNAVAILABLE",
                "reason": "" if v == spec.active_version else "inactive version",
            })
    return rows


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litegate")
    except PackageNotFoundError:
        return "0"


def _config_tensor(t: Mapping[str, Any]) -> dict[str, Any]:
    datatype = str(t["datatype"])
    return {"name": t["name"], "data_type": "TYPE_" + ("STRING" if datatype == "BYTES" else datatype),
            "dims": t["shape"]}


def _expect(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed(f"use {allowed} for this endpoint", headers={"Allow": allowed})


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    info = get_info(scope)
    if info is not None and info.body is not None:
        return info.body  # already read (and bounded) by the gateway
    return await read_body(scope, receive, limit)  # 413 past the limit, never unbounded


async def _unless_disconnected(receive: Receive, work: Awaitable[T],
                               watch_after_s: float = WATCH_AFTER_S) -> T | None:
    """``await work``, cancelling it (None) if the client disconnects first.

    ``work`` runs in the request's own task; a watcher task, started only once the
    request has waited ``watch_after_s``, cancels that task when ``receive`` reports the
    client gone. Most inferences end well before that: they pay for a timer, not for a
    task and its cancellation (~10-20 µs of the loop, which shares the core with the
    batches)."""
    this = asyncio.current_task()
    assert this is not None
    loop = this.get_loop()
    left = False
    watcher: asyncio.Task[None] | None = None

    async def disconnected() -> None:
        nonlocal left
        with contextlib.suppress(Exception):
            for _ in range(2):  # a replayed body may come first
                if (await receive())["type"] == "http.disconnect":
                    left = True
                    this.cancel()
                    return
        await asyncio.Event().wait()  # this receive cannot tell: never fire

    def watch() -> None:
        nonlocal watcher
        watcher = loop.create_task(disconnected())

    timer = loop.call_later(watch_after_s, watch)
    try:
        return await work
    except asyncio.CancelledError:
        # Our watcher's cancel ends the request quietly; anyone else's propagates.
        if not left or this.uncancel():
            raise
        return None
    except LitegateError:
        if left:
            return None  # nobody reads the answer (e.g. the run was stopped for it)
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    if headers is None:
        headers = [(b"content-type", b"application/json")] if body else []
    await send_response(send, status, body, headers)
