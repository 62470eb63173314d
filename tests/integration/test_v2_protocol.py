"""Open Inference Protocol v2 through the real ``tritonclient.http`` against uvicorn."""

from __future__ import annotations

import json
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from litegate.inference.manager import ModelManager
from tests.fixtures.inference_env import (
    LifespanApp,
    ServerThread,
    model_spec,
    settings,
    snapshot,
    v2_app,
)
from tests.fixtures.onnx_models import matmul_add_model, matmul_add_reference, multi_input_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2")
    snap = snapshot(
        model_spec("add", {"1": matmul_add_model(tmp / "a1.onnx"),
                           "2": matmul_add_model(tmp / "a2.onnx", offset=10.0)},
                   active="1", hot=True),
        model_spec("multi", {"1": multi_input_model(tmp / "multi.onnx")}),
    )
    manager = ModelManager(settings(tmp), CollectorRegistry())
    app = v2_app(manager, snap, allow_repository=lambda scope: True)
    with ServerThread(LifespanApp(app, manager, snap)) as srv:
        srv.manager = manager
        yield srv


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(url=server.url, network_timeout=30)
    yield c
    c.close()


def _wait_ready(client) -> None:
    import time

    deadline = time.monotonic() + 20
    while not client.is_server_ready():
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)


def test_health_and_server_metadata(client) -> None:
    assert client.is_server_live()
    _wait_ready(client)
    assert client.is_model_ready("add")
    meta = client.get_server_metadata()
    assert meta["name"] == "litegate"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_reports_signature_and_providers(client) -> None:
    _wait_ready(client)
    meta = client.get_model_metadata("add")
    assert meta["name"] == "add"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["parameters"]["providers"] == "CPUExecutionProvider"  # hot: loaded at start
    assert client.get_model_metadata("add", model_version="2")["parameters"]["version"] == "2"
    config = client.get_model_config("multi")
    assert [i["data_type"] for i in config["input"]] == ["TYPE_FP32", "TYPE_INT64"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client, binary: bool) -> None:
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("add", [inp], outputs=[out], request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("y"), matmul_add_reference(x), rtol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == "1"
    if binary:
        assert response["outputs"][0]["parameters"]["binary_data_size"] == 3 * 3 * 4
    else:
        assert "data" in response["outputs"][0]


def test_infer_default_outputs_are_binary_and_versions_are_addressable(client) -> None:
    x = np.ones((1, 4), np.float32)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)  # tritonclient's default: binary input, binary outputs
    result = client.infer("add", [inp], model_version="2")
    np.testing.assert_allclose(result.as_numpy("y"), matmul_add_reference(x, offset=10.0),
                               rtol=1e-5)


def test_multi_input_mixed_dtypes(client) -> None:
    a = np.array([[1.0, 2.0]], np.float32)
    b = np.array([[3, 4]], np.int64)
    ia = httpclient.InferInput("a", [1, 2], "FP32")
    ia.set_data_from_numpy(a, binary_data=False)
    ib = httpclient.InferInput("b", [1, 2], "INT64")
    ib.set_data_from_numpy(b, binary_data=True)
    result = client.infer("multi", [ia, ib])
    assert result.as_numpy("total").tolist() == [[4.0, 6.0]]
    assert result.as_numpy("twice").tolist() == [[6, 8]]


@pytest.mark.parametrize(
    ("name", "datatype", "array", "needle"),
    [
        ("x", "FP64", np.ones((1, 4), np.float64), "input 'x': datatype FP64"),
        ("x", "FP32", np.ones((1, 5), np.float32), "input 'x': shape [1, 5]"),
        ("z", "FP32", np.ones((1, 4), np.float32), "unexpected input 'z'"),
    ],
)
def test_bad_tensors_are_400_naming_the_input(client, name, datatype, array, needle) -> None:
    inp = httpclient.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", [inp])
    assert info.value.status() == "400"
    assert needle in info.value.message()


def _http(server, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = Request(f"http://{server.url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_unknown_model_and_version_are_404_json(server, client) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("ghost")
    assert info.value.status() == "404"
    status, headers, body = _http(server, "POST", "/v2/models/add/versions/9/infer",
                                  b'{"inputs": []}', {"content-type": "application/json"})
    assert status == 404
    assert json.loads(body) == {"error": "model 'add' has no version '9'"}


def test_element_count_and_malformed_body_are_400(server) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}
    status, _, body = _http(server, "POST", "/v2/models/add/infer", json.dumps(doc).encode())
    assert status == 400
    assert "input 'x': 3 elements" in json.loads(body)["error"]
    status, _, body = _http(server, "POST", "/v2/models/add/infer", b"{not json")
    assert status == 400 and "malformed JSON" in json.loads(body)["error"]
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    status, _, body = _http(server, "POST", "/v2/models/add/infer", header + b"\0" * 8,
                            {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "input 'x': 8 bytes" in json.loads(body)["error"]


def test_repository_index_load_unload(server, client) -> None:
    client.load_model("multi")
    index = {(m["name"], m["version"]): m["state"] for m in client.get_model_repository_index()}
    assert index[("multi", "1")] == "READY"
    assert index[("add", "2")] in {"READY", "UNAVAILABLE"}
    client.unload_model("multi")
    assert not server.manager.is_loaded("multi", "1")
