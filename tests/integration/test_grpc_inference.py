"""gRPC Open Inference Protocol through the real ``tritonclient.grpc`` client, against
the standalone app with its lifespan (the gRPC server runs in the gateway's event loop):
metadata, FP32 and BYTES inference, the error codes, limits shared with REST, metrics,
and a route forwarding to a remote v2 server."""

from __future__ import annotations

import contextlib
import io
import socket
import urllib.request

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from tests.fixtures.onnx_models import matmul_add_model, matmul_add_reference, strings_model
from tests.helpers.cli import (
    apply_config,
    chat_config,
    create_key,
    one_line_error,
    run_cli,
    run_litegate,
)
from tests.helpers.servers import free_port, remote_litegate
from tests.helpers.windows import clear_of_minute_edge


def _grpc(port: int) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _fp32_input(x: np.ndarray, name: str = "x") -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _code(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


@pytest.fixture
def gateway(tmp_path, home, make_gateway):
    src = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(src), "--max-batch", "8", home=home)[0] == 0
    src = strings_model(tmp_path / "strings.onnx")
    assert run_cli("models", "add", "strings", str(src), home=home)[0] == 0
    apply_config(home, {"upstreams": [{"name": "local", "kind": "onnx"}],
                        "routes": [{"name": "words", "variants": [
                            {"upstream": "local", "model": "strings"}]}]})
    key = create_key(home)
    narrow = create_key(home, "narrow", "--routes", "words")
    port = free_port()
    server = make_gateway(grpc_port=port)
    return server, port, key, narrow


def test_metadata_and_fp32_infer(gateway) -> None:
    server, port, key, _ = gateway
    client = _grpc(port)
    assert client.is_server_live() and client.is_server_ready()  # public, like /v2/health
    assert client.get_server_metadata().name == "litegate"
    meta = client.get_model_metadata("add", headers=_auth(key))
    assert meta.name == "add" and list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("add", [_fp32_input(x)], headers=_auth(key),
                          outputs=[grpcclient.InferRequestedOutput("y")])
    np.testing.assert_allclose(result.as_numpy("y"), matmul_add_reference(x), rtol=1e-5)
    assert result.get_response().model_version == "1"
    assert client.is_model_ready("add", headers=_auth(key))
    config = client.get_model_config("add", headers=_auth(key)).config  # perf_analyzer asks
    assert (config.max_batch_size, config.input[0].name, list(config.input[0].dims)) == (8, "x", [-1, 4])
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    stats = client.get_inference_statistics("add", headers=_auth(key))
    assert stats.model_stats[0].inference_stats.success.count >= 1
    client.close()
    # Metrics and stats as on REST: configured names as labels.
    text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    assert 'litegate_requests_total{route="add",status="200",variant="-"}' in text


def test_bytes_infer_and_typed_contents(gateway) -> None:
    _, port, key, _ = gateway
    client = _grpc(port)
    words = np.array(["héllo".encode(), b"", b"gRPC"], dtype=np.object_)
    inp = grpcclient.InferInput("s", [3], "BYTES")
    inp.set_data_from_numpy(words)
    result = client.infer("strings", [inp], headers=_auth(key))
    assert result.as_numpy("same").tolist() == words.tolist()
    assert result.as_numpy("column").shape == (3, 1)
    client.close()
    # Typed contents (what KServe clients send), through the generated stub.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="add", inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="x", datatype="FP32", shape=[1, 4],
                contents=pb.InferTensorContents(fp32_contents=[1, 2, 3, 4]))])
        response = stub.ModelInfer(request, metadata=[("x-api-key", key)], timeout=10)
        y = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(1, 3)
        np.testing.assert_allclose(y, matmul_add_reference(np.array([[1, 2, 3, 4]], np.float32)),
                                   rtol=1e-5)
        words_request = pb.ModelInferRequest(model_name="strings", inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="s", datatype="BYTES", shape=[2],
                contents=pb.InferTensorContents(bytes_contents=[b"typed", "ü".encode()]))])
        words_answer = stub.ModelInfer(words_request, metadata=[("x-api-key", key)], timeout=10)
        assert [o.name for o in words_answer.outputs] == ["same", "column"]
        assert words_answer.raw_output_contents[0] == b"\x05\x00\x00\x00typed\x02\x00\x00\x00\xc3\xbc"
        request.inputs[0].contents.fp32_contents.append(5)  # five values for shape [1, 4]
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, metadata=[("x-api-key", key)], timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'x'" in info.value.details()


def test_error_codes(gateway) -> None:
    _, port, key, narrow = gateway
    client = _grpc(port)
    x = np.ones((1, 4), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", [_fp32_input(x)])
    assert _code(info) == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", [_fp32_input(x)], headers=_auth("lg-not-a-key"))
    assert _code(info) == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [_fp32_input(x)], headers=_auth(key))
    assert _code(info) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope", headers=_auth(key))
    assert _code(info) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:  # bad shape: the REST message
        client.infer("add", [_fp32_input(np.ones((1, 5), np.float32))], headers=_auth(key))
    assert _code(info) == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x': shape [1, 5] does not match" in info.value.message()
    bad = grpcclient.InferInput("x", [1, 4], "INT32")
    bad.set_data_from_numpy(np.ones((1, 4), np.int32))
    with pytest.raises(InferenceServerException) as info:  # bad dtype
        client.infer("add", [bad], headers=_auth(key))
    assert _code(info) == "StatusCode.INVALID_ARGUMENT"
    assert "datatype INT32 does not match the model's FP32" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", [_fp32_input(x)], headers=_auth(narrow))
    assert _code(info) == "StatusCode.PERMISSION_DENIED"
    client.close()


def test_bytes_framing_error_is_invalid_argument(gateway) -> None:
    _, port, key, _ = gateway
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(pb.ModelInferRequest(
                model_name="strings",
                inputs=[pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES",
                                                              shape=[1])],
                raw_input_contents=[b"\x09\x00\x00\x00abc"]),
                metadata=[("x-api-key", key)], timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "past the end" in info.value.details()


def test_limit_is_shared_between_rest_and_grpc(tmp_path, home, make_gateway) -> None:
    src = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(src), home=home)[0] == 0
    key = create_key(home, "limited", "--limit", "2/minute")
    port = free_port()
    server = make_gateway(grpc_port=port)
    clear_of_minute_edge()  # exact counts: not across a window boundary
    x = np.ones((1, 4), np.float32)
    rest = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    rest.infer("add", [inp], headers=_auth(key))  # 1: REST
    _grpc(port).infer("add", [_fp32_input(x)], headers=_auth(key))  # 2: gRPC
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # 3: refused, retry info
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="add"),
                               metadata=[("authorization", f"Bearer {key}")], timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(info.value.trailing_metadata())
        assert int(trailers["retry-after"]) >= 1
        assert trailers["x-ratelimit-limit"] == "2"
    with pytest.raises(InferenceServerException) as refused:  # and REST agrees
        rest.infer("add", [inp], headers=_auth(key))
    assert refused.value.status() == "429"
    text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    assert 'litegate_limit_rejections_total{route="add"} 2.0' in text


def test_route_to_remote_v2_server_and_upstream_down(tmp_path, home, make_gateway,
                                                       monkeypatch) -> None:
    with remote_litegate(tmp_path, offset=3.0) as (remote_url, remote_key):
        monkeypatch.setenv("LG_REMOTE_KEY", remote_key)
        apply_config(home, {
            "upstreams": [
                {"name": "triton", "kind": "v2", "base_url": remote_url,
                 "api_key_env": "LG_REMOTE_KEY"},
                {"name": "gone", "kind": "v2", "base_url": f"http://127.0.0.1:{free_port()}",
                 "timeout_s": 2}],
            "routes": [{"name": "remote-add", "variants": [{"upstream": "triton", "model": "add"}]},
                       {"name": "down", "variants": [{"upstream": "gone", "model": "add"}]}],
        })
        key = create_key(home)
        port = free_port()
        make_gateway(grpc_port=port)
        client = _grpc(port)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        result = client.infer("remote-add", [_fp32_input(x)], headers=_auth(key))
        np.testing.assert_allclose(result.as_numpy("y"), matmul_add_reference(x, offset=3.0),
                                   rtol=1e-5)
        meta = client.get_model_metadata("remote-add", headers=_auth(key))
        assert [t.name for t in meta.outputs] == ["y"]
        assert client.is_model_ready("remote-add", headers=_auth(key))
        remote_config = client.get_model_config("remote-add", headers=_auth(key)).config
        assert remote_config.output[0].data_type == model_config_pb2.TYPE_FP32
        with pytest.raises(InferenceServerException) as info:
            client.infer("down", [_fp32_input(x)], headers=_auth(key))
        assert _code(info) == "StatusCode.UNAVAILABLE"
        client.close()


def test_readme_grpc_example_against_litegate_serve(tmp_path, home) -> None:
    """The README's gRPC block, run as written against ``litegate serve --grpc-port``
    (uvloop, the real CLI); only the port and the key are substituted."""
    from tests.helpers.cli import serving
    from tests.helpers.readme import readme_blocks

    block = next(b for b in readme_blocks() if "tritonclient.grpc" in b.code)
    assert block.skip and "test_grpc_inference" in block.skip
    src = tmp_path / "mlp.onnx"
    assert run_cli("models", "example", "mlp", str(src), home=home)[0] == 0
    assert run_cli("models", "add", "mlp", str(src), home=home)[0] == 0
    key = create_key(home)
    grpc_port = free_port()
    with serving("--port", str(free_port()), "--grpc-port", str(grpc_port), home=home) as served:
        assert f"gRPC inference (tritonclient.grpc): 127.0.0.1:{grpc_port}" in served.stdout
        code = block.code.replace("127.0.0.1:8001", f"127.0.0.1:{grpc_port}")
        code = code.replace("lg-...", key)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):  # in this interpreter, as the README test does
            exec(compile(code, "<README gRPC block>", "exec"), {"__name__": "__readme__"})  # noqa: S102 (the README is the code under test)
        assert out.getvalue().strip() == "(2, 16)"


def test_message_bounds(tmp_path, home, make_gateway) -> None:
    """A request past max_infer_body_bytes is refused by gRPC itself; an answer past
    max_infer_response_bytes is INVALID_ARGUMENT with the REST message."""
    src = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(src), home=home)[0] == 0
    key = create_key(home)
    port = free_port()
    make_gateway(grpc_port=port, max_infer_body_bytes=8192, max_infer_response_bytes=64)
    client = _grpc(port)
    ok = client.infer("add", [_fp32_input(np.ones((4, 4), np.float32))], headers=_auth(key))
    assert ok.as_numpy("y").shape == (4, 3)  # 48 bytes of output
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", [_fp32_input(np.ones((8, 4), np.float32))], headers=_auth(key))
    assert _code(info) == "StatusCode.INVALID_ARGUMENT"
    assert "max_infer_response_bytes" in info.value.message()
    with pytest.raises(InferenceServerException) as info:  # 16 KiB of tensor > 8 KiB
        client.infer("add", [_fp32_input(np.ones((1024, 4), np.float32))], headers=_auth(key))
    assert _code(info) == "StatusCode.RESOURCE_EXHAUSTED"
    client.close()


def test_busy_grpc_port_is_one_line(home) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_litegate("serve", "--port", str(free_port()), "--grpc-port", str(port),
                              home=home)
    line = one_line_error(result.returncode, result.stderr)
    assert line == (f"error: gRPC port {port} on 127.0.0.1 is already in use: stop the other "
                    "process or choose another with --grpc-port N (LITEGATE_GRPC_PORT)")


def test_a_spent_budget_stops_grpc_calls_too(tmp_path, home, fake_upstream, make_gateway) -> None:
    """The budget is spent on REST chat; the same key's gRPC calls are refused after it."""
    src = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(src), home=home)[0] == 0
    doc = chat_config(fake_upstream.base_url)
    # $1000 per 1M tokens each way: the fake's 12 tokens cost $0.012 a request.
    doc["routes"][0]["variants"][0]["price"] = {"input_per_1m": 1000, "output_per_1m": 1000}
    assert apply_config(home, doc, tmp_path, "--merge")[0] == 0
    key = create_key(home, "capped", "--budget", "0.01", "--budget-period", "30d")
    port = free_port()
    server = make_gateway(grpc_port=port)
    client = _grpc(port)
    x = np.ones((1, 4), np.float32)
    client.infer("add", [_fp32_input(x)], headers=_auth(key))
    r = httpx.post(server.url + "/v1/chat/completions", headers=_auth(key),
                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", [_fp32_input(x)], headers=_auth(key))
    assert _code(info) == "StatusCode.RESOURCE_EXHAUSTED" and "budget" in str(info.value).lower()
    client.close()


def test_grpc_access_line_has_the_http_fields_and_its_request_id(gateway) -> None:
    """The gRPC access line comes from the same observe step as HTTP's
    (``policies.observe.AccessLog``), and carries its call's request id: it used to have
    none (HTTP's is added from the request context, which a gRPC call does not set)."""
    from structlog.testing import capture_logs

    from litegate.log_config import configure_logging

    configure_logging("json", "info")  # the in-process CLI set warning level
    _, port, key, _ = gateway
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with capture_logs() as logs:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="add"),
                               metadata=[("x-api-key", key), ("x-request-id", "grpc-req-1")],
                               timeout=10)
            # An answer is sent after its line is written (an abort's status is not).
            stub.ModelReady(pb.ModelReadyRequest(name="add"), metadata=[("x-api-key", key)],
                            timeout=10)
    ok, unnamed = [e for e in logs if e["event"] == "request"]
    assert ok["request_id"] == "grpc-req-1"
    assert {k: ok[k] for k in ("method", "path", "status", "route", "variant", "cache",
                                "tokens")} == {
        "method": "GRPC", "path": "/inference.GRPCInferenceService/ModelMetadata",
        "status": 200, "route": "add", "variant": None, "cache": None, "tokens": None}
    assert ok["key_id"] is not None and ok["latency_ms"] >= ok["upstream_ms"] >= 0
    assert unnamed["path"] == "/inference.GRPCInferenceService/ModelReady"
    assert unnamed["request_id"].startswith("grpc-")  # the call's generated id
    assert key not in repr(logs)
