"""v2 tensor encoding edge cases through uvicorn and the real ``tritonclient.http``:
BYTES both ways, NaN/Inf, boolean flags, duplicate outputs, FP16 overflow, hostile
shapes and lengths, the response-size bound and the statistics extension."""

from __future__ import annotations

import json
import struct
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import numpy as np
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto
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
from tests.fixtures.onnx_models import (
    amplify_model,
    float_identity_model,
    matmul_add_model,
    multi_input_model,
    strings_model,
)

MAX_RESPONSE = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2t")
    snap = snapshot(
        model_spec("strings", {"1": strings_model(tmp / "s.onnx")}),
        model_spec("ident", {"1": float_identity_model(tmp / "i.onnx")}),
        model_spec("half", {"1": float_identity_model(tmp / "h.onnx", TensorProto.FLOAT16)}),
        model_spec("wide", {"1": amplify_model(tmp / "w.onnx")}),
        model_spec("add", {"1": matmul_add_model(tmp / "a.onnx")}),
        model_spec("multi", {"1": multi_input_model(tmp / "m.onnx")}),
    )
    st = settings(tmp, max_infer_response_bytes=MAX_RESPONSE)
    manager = ModelManager(st, CollectorRegistry())
    with ServerThread(LifespanApp(v2_app(manager, snap), manager, snap)) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(url=server.url, network_timeout=30)
    yield c
    c.close()


def _post(server, path: str, body: bytes, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    req = Request(f"http://{server.url}{path}", data=body, method="POST",
                  headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _infer_json(server, model: str, doc: dict) -> tuple[int, dict]:
    status, _, body = _post(server, f"/v2/models/{model}/infer", json.dumps(doc).encode())
    return status, json.loads(body)


WORDS = np.array(["héllo", "", "wörld with spaces", "x" * 300], dtype=object)


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_tensors_both_directions(client, binary: bool) -> None:
    # Before: BYTES inputs always answered 400 and binary string outputs carried
    # Python reprs of memory addresses ("0x7f70...").
    inp = httpclient.InferInput("s", [len(WORDS)], "BYTES")
    inp.set_data_from_numpy(WORDS, binary_data=binary)
    outs = [httpclient.InferRequestedOutput("same", binary_data=binary),
            httpclient.InferRequestedOutput("column", binary_data=binary)]
    result = client.infer("strings", [inp], outputs=outs)
    expected = [w.encode() for w in WORDS]
    assert [bytes(v) if not isinstance(v, str) else v.encode()
            for v in result.as_numpy("same").tolist()] == expected
    column = result.as_numpy("column")
    assert column.shape == (len(WORDS), 1)
    assert [v if isinstance(v, bytes) else v.encode() for v in column.reshape(-1).tolist()] \
        == expected


def test_binary_bytes_output_is_length_prefixed(server) -> None:
    raw = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in WORDS)
    header = json.dumps({
        "inputs": [{"name": "s", "datatype": "BYTES", "shape": [len(WORDS)],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "same", "parameters": {"binary_data": True}}],
    }).encode()
    status, headers, body = _post(server, "/v2/models/strings/infer", header + raw,
                                  {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, body
    size = int(headers["inference-header-content-length"])
    assert body[size:] == raw  # the same 4-byte little-endian length + bytes per element


@pytest.mark.parametrize("payload", [
    b"\x05\x00\x00\x00abc",             # element longer than its data
    b"\x02\x00",                         # truncated length prefix
    b"\x01\x00\x00\x00a" * 5,            # more elements than the shape
    b"\x01\x00\x00\x00\xff" * 4,         # not UTF-8
])
def test_malformed_bytes_are_400(server, payload: bytes) -> None:
    header = json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [4],
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    status, _, body = _post(server, "/v2/models/strings/infer", header + payload,
                            {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "input 's'" in json.loads(body)["error"]


def test_nan_and_infinity_follow_tritons_json_tokens(client) -> None:
    # Before: msgspec wrote null for all three, so +Inf/-Inf came back as NaN.
    x = np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)
    inp = httpclient.InferInput("x", [4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("ident", [inp],
                          outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    y = result.as_numpy("y")
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf and y[3] == 1.5


def test_string_false_flag_means_json_and_duplicate_outputs_are_refused(server) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}],
           "outputs": [{"name": "y", "parameters": {"binary_data": "false"}}]}
    status, body = _infer_json(server, "ident", doc)
    assert status == 200 and body["outputs"][0]["data"] == [1.0, 2.0]  # before: binary
    doc["outputs"] = [{"name": "y"}, {"name": "y"}]
    status, body = _infer_json(server, "ident", doc)
    assert status == 400 and "output 'y' is requested twice" in body["error"]  # before: 2x
    doc["outputs"] = [{"name": "y", "parameters": {"binary_data": "maybe"}}]
    status, body = _infer_json(server, "ident", doc)
    assert status == 400 and "binary_data must be true or false" in body["error"]


def test_fp16_overflow_is_reported_not_inf(server) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [2], "data": [1.0, 70000.0]}]}
    status, body = _infer_json(server, "half", doc)
    assert status == 400 and "70000.0 is out of the FP16 range" in body["error"]  # before: inf
    doc["inputs"][0]["data"] = [1.0, 65504.0]
    status, body = _infer_json(server, "half", doc)
    assert status == 200 and body["outputs"][0]["data"] == [1.0, 65504.0]


@pytest.mark.parametrize(("shape", "data", "binary", "needle"), [
    ([0, 2**63], [], None, "too large"),                 # before: 500 (numpy reshape)
    ([0, 2**40], [], None, "too large"),
    ([-1, 4], [1, 2, 3, 4], None, "non-negative integers"),
    ([2**31, 2**31, 2**31], [1], None, "too large"),
    ([1] * 40, [1], None, "too large"),
    ([2, 4], [1, 2, 3], None, "3 elements of data"),
    ([1, 4], [[1, 2], [3]], None, "not a FP32 tensor"),
    ([1, 4], None, 15, "expected 16"),                   # binary length mismatch
    ([1, 4], None, 10**12, "past the end of the body"),
    ([1, 4], None, True, "binary_data_size must be an integer"),
])
def test_hostile_shapes_and_lengths_are_400_naming_the_input(server, shape, data, binary,
                                                             needle) -> None:
    inp: dict = {"name": "x", "datatype": "FP32", "shape": shape}
    tail = b""
    if binary is None:
        inp["data"] = data
    else:
        inp["parameters"] = {"binary_data_size": binary}
        tail = b"\0" * 16
    header = json.dumps({"inputs": [inp]}).encode()
    status, _, body = _post(server, "/v2/models/add/infer", header + tail,
                            {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400, body
    error = json.loads(body)["error"]
    assert needle in error and "'x'" in error


@pytest.mark.parametrize(("data", "needle"), [
    ([1.5, 2], "INT64 data must be integers"),  # before: truncated to 1 silently
    ([2**63, 1], "not a INT64 tensor"),
    (["1", "2"], "INT64 data must be integers"),
])
def test_integer_data_is_not_truncated(server, data, needle) -> None:
    doc = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
                      {"name": "b", "datatype": "INT64", "shape": [1, 2], "data": data}]}
    status, body = _infer_json(server, "multi", doc)
    assert status == 400 and needle in body["error"] and "'b'" in body["error"]


def test_header_length_past_the_body_is_400(server) -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                   "data": [1, 2, 3, 4]}]}).encode()
    for value in (str(len(body) + 1), "-1", "nine"):
        status, _, raw = _post(server, "/v2/models/add/infer", body,
                               {"Inference-Header-Content-Length": value})
        assert status == 400 and "Inference-Header-Content-Length" in json.loads(raw)["error"]


def test_response_bound_refuses_json_amplification_and_suggests_binary(client) -> None:
    # 48 rows of 256 in, 48 x 4096 out: ~1.2 MB as JSON, 768 KiB binary; bound 1 MiB.
    x = np.ones((48, 256), np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("wide", [inp], outputs=[httpclient.InferRequestedOutput(
            "y", binary_data=False)])
    assert info.value.status() == "400"  # before: 200 and the whole JSON body built
    assert "binary outputs" in info.value.message()
    assert "smaller batch" in info.value.message()
    result = client.infer("wide", [inp])  # binary fits under the bound
    assert result.as_numpy("y").shape == (48, 4096)
    big = np.ones((80, 256), np.float32)  # 1.25 MiB even in binary: refused before encoding
    inp = httpclient.InferInput("x", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as info:
        client.infer("wide", [inp])
    assert info.value.status() == "400" and str(MAX_RESPONSE) in info.value.message()


def test_statistics_extension_through_tritonclient(client) -> None:
    x = np.ones((2, 4), np.float32)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(3):
        client.infer("add", [inp])
    bad = httpclient.InferInput("x", [2, 5], "FP32")
    bad.set_data_from_numpy(np.ones((2, 5), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("add", [bad])
    # Before: 404 ("statistics are exported at /metrics").
    stats = client.get_inference_statistics("add")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("add", "1")]
    one = stats[0]
    assert one["inference_stats"]["success"]["count"] == 3
    assert one["inference_stats"]["fail"]["count"] == 1
    assert one["inference_count"] == 6 and one["execution_count"] == 3
    for part in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert one["inference_stats"][part]["count"] == 3, part
        assert one["inference_stats"][part]["ns"] > 0, part
    assert one["batch_stats"] == [{"batch_size": 2, "compute_infer": {
        "count": 3, "ns": one["inference_stats"]["compute_infer"]["ns"]}}]
    assert client.get_inference_statistics("add", "1")["model_stats"] == stats
    names = {s["name"] for s in client.get_inference_statistics()["model_stats"]}
    assert {"add", "strings", "wide"} <= names
    assert "statistics" in client.get_server_metadata()["extensions"]
