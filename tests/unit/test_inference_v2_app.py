"""V2App as plain ASGI in the request context, as the gateway mounts it: routing,
methods, body sources, admin guard; it raises typed errors and the context renders them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from litegate.errors import NotFound
from litegate.inference.manager import ModelManager
from litegate.inference.v2_server import V2App
from litegate.request import get_info
from litegate.snapshot import KeySpec
from tests.fixtures.inference_env import model_spec, settings, snapshot, with_context
from tests.fixtures.onnx_models import matmul_add_model, matmul_add_reference

USER = KeySpec(id=1, name="user", routes=None, is_admin=False, expires_at=None)
ADMIN = KeySpec(id=2, name="ops", routes=None, is_admin=True, expires_at=None)


def as_authenticated(app, *, key: KeySpec | None = None, body: bytes | None = None):
    """What the layers before the handler leave on the request: the authenticated key
    (auth) and, when it read it, the body (route resolution)."""

    async def layer(scope, receive, send):
        info = get_info(scope)
        info.key = key
        info.body = body
        await app(scope, receive, send)

    return layer


async def call(app, method: str, path: str, body: bytes = b"", *, headers=()):
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
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
async def served(tmp_path: Path):
    """A started manager and the snapshot it serves."""
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    snap = snapshot(model_spec("add", {"1": matmul_add_model(tmp_path / "a.onnx")}))
    await manager.start(snap)
    yield manager, snap
    await manager.stop()


def mounted(served, *, key: KeySpec | None = None, body: bytes | None = None):
    manager, snap = served
    return with_context(as_authenticated(V2App(lambda: manager), key=key, body=body), snap)


BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                               "data": [1, 2, 3, 4]}]}).encode()


async def test_infer_reads_body_from_receive_or_from_the_request_context(served) -> None:
    expected = matmul_add_reference(np.array([[1, 2, 3, 4]], np.float32)).ravel().tolist()
    status, headers, payload = await call(mounted(served), "POST", "/v2/models/add/infer", BODY)
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert json.loads(payload)["outputs"][0]["data"] == pytest.approx(expected)
    # The gateway already read the body: receive is never called.
    app = mounted(served, body=BODY)
    status, _, payload = await call(app, "POST", "/v2/models/add/infer", b"garbage")
    assert status == 200
    assert json.loads(payload)["outputs"][0]["data"] == pytest.approx(expected)


async def test_methods_unknown_paths_and_readiness(served) -> None:
    app = mounted(served)
    status, headers, payload = await call(app, "GET", "/v2/models/add/infer")
    assert status == 405 and headers[b"allow"] == b"POST"
    assert "use POST" in json.loads(payload)["error"]
    status, _, payload = await call(app, "GET", "/v2/nope")
    assert status == 404 and json.loads(payload) == {"error": "no such endpoint: /v2/nope"}
    assert (await call(app, "GET", "/v2/health/ready"))[0] == 200
    assert (await call(app, "GET", "/v2/models/add/ready"))[0] == 200
    assert (await call(app, "GET", "/v2/models/add/versions/7/ready"))[0] == 404


async def test_repository_control_requires_an_admin_key(served) -> None:
    manager, _ = served
    status, _, payload = await call(mounted(served), "POST", "/v2/repository/index")
    assert status == 403 and "admin" in json.loads(payload)["error"]
    user, admin = mounted(served, key=USER), mounted(served, key=ADMIN)
    assert (await call(user, "POST", "/v2/repository/models/add/load"))[0] == 403
    assert (await call(admin, "POST", "/v2/repository/models/add/load"))[0] == 200
    assert manager.is_loaded("add", "1")
    status, _, payload = await call(admin, "POST", "/v2/repository/index")
    assert json.loads(payload) == [{"name": "add", "version": "1", "state": "READY", "reason": ""}]
    assert (await call(admin, "POST", "/v2/repository/models/add/unload"))[0] == 200
    assert not manager.is_loaded("add", "1")


async def test_bad_header_length_is_400(served) -> None:
    status, _, payload = await call(mounted(served), "POST", "/v2/models/add/infer", BODY,
                                    headers=[(b"inference-header-content-length", b"abc")])
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(payload)["error"]


async def test_the_app_raises_and_never_renders_errors(served) -> None:
    manager, _ = served
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v2/nope", "headers": []}
    with pytest.raises(NotFound, match="no such endpoint"):
        await V2App(lambda: manager)(scope, None, send)
    assert sent == []  # the boundary outside renders it


async def test_an_unexpected_failure_is_a_500_without_details(served) -> None:
    def no_manager() -> ModelManager:
        raise RuntimeError("secret detail of the failure")

    with capture_logs() as logs:
        status, _, payload = await call(with_context(V2App(no_manager)), "GET",
                                        "/v2/health/ready")
    assert status == 500
    error = json.loads(payload)["error"]
    assert isinstance(error, str) and "secret" not in error and "Traceback" not in error
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["unhandled_error"]


async def test_a_manager_created_by_the_request_follows_the_request_snapshot(tmp_path) -> None:
    # The gateway creates its manager lazily: the first /v2 call may find one that has
    # never seen a snapshot. It serves the snapshot this request started with.
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    snap = snapshot(model_spec("add", {"1": matmul_add_model(tmp_path / "a.onnx")}))
    app = with_context(V2App(lambda: manager), snap)
    try:
        status, _, payload = await call(app, "GET", "/v2/models/stats")
        assert status == 200 and [s["name"] for s in json.loads(payload)["model_stats"]] == ["add"]
        assert manager.current_snapshot is snap
        status, _, payload = await call(app, "GET", "/v2/models/other")
        assert status == 404 and json.loads(payload) == {"error": "model 'other' not found"}
    finally:
        await manager.stop()
