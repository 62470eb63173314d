"""V2App as plain ASGI: routing, methods, body sources, admin guard, error rendering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from litegate.inference.manager import ModelManager
from litegate.inference.v2_server import V2App
from tests.fixtures.inference_env import fake_gateway, model_spec, settings, snapshot
from tests.fixtures.onnx_models import matmul_add_model, matmul_add_reference


async def call(app, method: str, path: str, body: bytes = b"", *, ctx=None, headers=()):
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    if ctx is not None:
        scope["litegate"] = ctx
    chunks = [{"type": "http.request", "body": body[:5], "more_body": True},
              {"type": "http.request", "body": body[5:], "more_body": False}]
    sent = []

    async def receive():
        if chunks:
            return chunks.pop(0)
        await asyncio.Event().wait()  # ASGI: after the body, wait until the client leaves

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), payload


@pytest.fixture
async def app(tmp_path: Path):
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    await manager.start(snapshot(model_spec("add", {"1": matmul_add_model(tmp_path / "a.onnx")})))
    yield V2App(fake_gateway(manager))
    await manager.stop()


BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                               "data": [1, 2, 3, 4]}]}).encode()


async def test_infer_reads_body_from_receive_or_from_the_request_context(app) -> None:
    expected = matmul_add_reference(np.array([[1, 2, 3, 4]], np.float32)).ravel().tolist()
    status, headers, payload = await call(app, "POST", "/v2/models/add/infer", BODY)
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert json.loads(payload)["outputs"][0]["data"] == pytest.approx(expected)
    ctx = SimpleNamespace(body=BODY)  # the gateway already read it: receive is never called
    status, _, payload = await call(app, "POST", "/v2/models/add/infer", b"garbage", ctx=ctx)
    assert status == 200
    assert json.loads(payload)["outputs"][0]["data"] == pytest.approx(expected)


async def test_methods_unknown_paths_and_readiness(app) -> None:
    status, headers, payload = await call(app, "GET", "/v2/models/add/infer")
    assert status == 405 and headers[b"allow"] == b"POST"
    assert "use POST" in json.loads(payload)["error"]
    status, _, payload = await call(app, "GET", "/v2/nope")
    assert status == 404 and json.loads(payload) == {"error": "no such endpoint: /v2/nope"}
    assert (await call(app, "GET", "/v2/health/ready"))[0] == 200
    assert (await call(app, "GET", "/v2/models/add/ready"))[0] == 200
    assert (await call(app, "GET", "/v2/models/add/versions/7/ready"))[0] == 404


async def test_repository_control_requires_an_admin_key(app) -> None:
    status, _, payload = await call(app, "POST", "/v2/repository/index")
    assert status == 403 and "admin" in json.loads(payload)["error"]
    user = SimpleNamespace(key=SimpleNamespace(is_admin=False), body=b"")
    assert (await call(app, "POST", "/v2/repository/models/add/load", ctx=user))[0] == 403
    admin = SimpleNamespace(key=SimpleNamespace(is_admin=True), body=b"")
    assert (await call(app, "POST", "/v2/repository/models/add/load", ctx=admin))[0] == 200
    assert app.gateway.models.is_loaded("add", "1")
    status, _, payload = await call(app, "POST", "/v2/repository/index", ctx=admin)
    assert json.loads(payload) == [{"name": "add", "version": "1", "state": "READY", "reason": ""}]
    assert (await call(app, "POST", "/v2/repository/models/add/unload", ctx=admin))[0] == 200
    assert not app.gateway.models.is_loaded("add", "1")


async def test_bad_header_length_is_400(app) -> None:
    status, _, payload = await call(app, "POST", "/v2/models/add/infer", BODY,
                                    headers=[(b"inference-header-content-length", b"abc")])
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(payload)["error"]
