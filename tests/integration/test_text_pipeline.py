"""Text in, vectors out on v2: the demo MiniLM model through the real gateway with the
official clients — ``tritonclient.http`` (binary extension and JSON), ``tritonclient.grpc``
and ``openai`` — every vector against a serial reference computed with the same model
outside litegate; discovery through metadata and config; bad input as 400 /
INVALID_ARGUMENT; concurrent clients each getting exactly their own vectors; the overlap
switch giving the same vectors both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from litegate.demo import DEMO_MODEL, DEMO_OPTIONS, demo_model_path, setup_demo_model
from litegate.inference.manager import ModelManager
from litegate.settings import Settings
from tests.fixtures.inference_env import model_spec, settings, snapshot
from tests.helpers.cli import create_key
from tests.helpers.embeddings import reference_embeddings
from tests.helpers.servers import free_port, wait_ready

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "litegate turns text into vectors",
         "Hi",
         "Ünïcödé text, emoji 🚀 and punctuation!?"]
DIM = 384


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return reference_embeddings(TEXTS)[0]


@pytest.fixture
def gateway(home, make_gateway):
    asyncio.run(setup_demo_model(Settings.load(home=home)))
    key = create_key(home)
    port = free_port()
    server = make_gateway(grpc_port=port)
    wait_ready(server.url)
    return server, port, key


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _text(client_module, texts: list[str], *, binary: bool = True):
    inp = client_module.InferInput("text", [len(texts)], "BYTES")
    data = np.array([t.encode() for t in texts], dtype=object)
    if client_module is httpclient:
        inp.set_data_from_numpy(data, binary_data=binary)
    else:
        inp.set_data_from_numpy(data)
    return inp


def test_metadata_and_config_advertise_text_in_vectors_out(gateway) -> None:
    server, port, key = gateway
    http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    meta = http.get_model_metadata(DEMO_MODEL, headers=_auth(key))
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]}]
    config = http.get_model_config(DEMO_MODEL, headers=_auth(key))
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert config["output"][0]["data_type"] == "TYPE_FP32"
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    gmeta = grpc.get_model_metadata(DEMO_MODEL, headers=_auth(key))
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.outputs] == [
        ("embedding", "FP32", [-1, DIM])]
    gconfig = grpc.get_model_config(DEMO_MODEL, headers=_auth(key)).config
    assert [(t.name, list(t.dims)) for t in gconfig.input] == [("text", [-1])]


def test_bytes_in_vectors_out_through_every_client(gateway, reference) -> None:
    server, port, key = gateway
    http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    for binary_in in (True, False):
        for binary_out in (True, False):
            result = http.infer(DEMO_MODEL, [_text(httpclient, TEXTS, binary=binary_in)],
                                headers=_auth(key), outputs=[
                                    httpclient.InferRequestedOutput("embedding",
                                                                    binary_data=binary_out)])
            got = result.as_numpy("embedding")
            assert got.dtype == np.float32 and got.shape == (len(TEXTS), DIM)
            np.testing.assert_allclose(got, reference, atol=1e-5)
    # tritonclient's default: no outputs named, all of them in binary
    got = http.infer(DEMO_MODEL, [_text(httpclient, TEXTS[:1])], headers=_auth(key))
    np.testing.assert_allclose(got.as_numpy("embedding"), reference[:1], atol=1e-5)

    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    result = grpc.infer(DEMO_MODEL, [_text(grpcclient, TEXTS)], headers=_auth(key))
    np.testing.assert_allclose(result.as_numpy("embedding"), reference, atol=1e-5)

    oai = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    resp = oai.embeddings.create(model=DEMO_MODEL, input=TEXTS, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in resp.data], reference, atol=1e-5)

    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    line = next(m for m in metrics.splitlines()
                if m.startswith('litegate_model_requests_total{model="minilm",version="1"}'))
    assert float(line.split()[-1]) >= 7  # every surface counted as a model request


def test_bad_text_input_is_a_clear_400_and_invalid_argument(gateway) -> None:
    server, port, key = gateway
    url = server.url + f"/v2/models/{DEMO_MODEL}/infer"

    def post(inputs: list[dict]) -> httpx.Response:
        return httpx.post(url, json={"inputs": inputs}, headers=_auth(key), timeout=30)

    cases = [
        ([{"name": "text", "datatype": "INT32", "shape": [1], "data": [1]}],
         "datatype INT32 does not match the model's BYTES"),
        ([{"name": "text", "datatype": "BYTES", "shape": [2049], "data": ["a"] * 2049}],
         "holds 2049 texts; this model takes at most 2048"),
        ([{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x" * 40000]}],
         "text 0 has 40000 characters; this model takes at most 32768"),
        ([{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}],
         "shape [1, 1] does not match the model's [-1]"),
        ([{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
         "unexpected input 'txt'"),
    ]
    for inputs, message in cases:
        r = post(inputs)
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]
    r = httpx.post(url, json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                          "data": ["a"]}],
                              "outputs": [{"name": "last_hidden_state"}]},
                   headers=_auth(key), timeout=30)
    assert r.status_code == 400 and "unknown output 'last_hidden_state'" in r.json()["error"]

    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    wrong = grpcclient.InferInput("text", [1], "INT32")
    wrong.set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException) as info:
        grpc.infer(DEMO_MODEL, [wrong], headers=_auth(key))
    assert str(info.value.status()) == "StatusCode.INVALID_ARGUMENT"
    assert "datatype INT32 does not match the model's BYTES" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        grpc.infer(DEMO_MODEL, [_text(grpcclient, ["y" * 40000])], headers=_auth(key))
    assert str(info.value.status()) == "StatusCode.INVALID_ARGUMENT"
    assert "40000 characters" in info.value.message()
    with pytest.raises(InferenceServerException) as info:  # keys as on every v2 call
        grpc.infer(DEMO_MODEL, [_text(grpcclient, ["z"])])
    assert str(info.value.status()) == "StatusCode.UNAUTHENTICATED"
    http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="401|API key"):
        http.infer(DEMO_MODEL, [_text(httpclient, ["z"])])


def _client_texts(i: int) -> list[str]:
    return [f"client {i} asks question {j} about topic {i * 31 + j}" for j in range(i % 3 + 1)]


def test_concurrent_clients_each_get_exactly_their_own_vectors(gateway) -> None:
    server, _, key = gateway
    clients = 48
    requests = [_client_texts(i) for i in range(clients)]
    flat = [t for r in requests for t in r]
    ref, _ = reference_embeddings(flat)  # serial: one text per session.run
    offsets = np.cumsum([0] + [len(r) for r in requests])

    async def main() -> list[np.ndarray]:
        client = aiohttpclient.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            async def one(texts: list[str]) -> np.ndarray:
                inp = aiohttpclient.InferInput("text", [len(texts)], "BYTES")
                inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
                result = await client.infer(DEMO_MODEL, [inp], headers=_auth(key))
                return result.as_numpy("embedding")

            return await asyncio.gather(*(one(r) for r in requests))
        finally:
            await client.close()

    before = _samples(server)
    results = asyncio.run(main())
    after = _samples(server)
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, ref[offsets[i]:offsets[i + 1]], atol=1e-5)
    runs = after["executions"] - before["executions"]
    assert after["requests"] - before["requests"] == clients
    assert runs < clients  # requests really shared session runs


def _samples(server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    out = {}
    for name in ("requests", "executions"):
        line = next((m for m in text.splitlines() if m.startswith(
            f'litegate_model_{name}_total{{model="minilm",version="1"}}')), None)
        out[name] = float(line.split()[-1]) if line else 0.0
    return out


async def test_overlap_on_and_off_give_the_same_vectors(tmp_path: Path) -> None:
    requests = [_client_texts(i) for i in range(24)]
    flat = [t for r in requests for t in r]
    ref, _ = reference_embeddings(flat)
    got: dict[bool, list[np.ndarray]] = {}
    for overlap in (True, False):
        manager = ModelManager(settings(tmp_path / str(overlap), text_pipeline_overlap=overlap),
                               CollectorRegistry())
        await manager.start(snapshot(model_spec(
            DEMO_MODEL, {"1": demo_model_path()}, max_batch_size=32, max_queue_delay_ms=2.0,
            options=DEMO_OPTIONS)))
        results = await asyncio.gather(*(manager.infer(
            DEMO_MODEL, {"text": np.array(r, dtype=object)}) for r in requests))
        got[overlap] = [r.outputs["embedding"] for r in results]
        one = [(await manager.embed(DEMO_MODEL, [t]))[0][0] for t in flat[:3]]
        got[overlap].append(np.array(one, dtype=np.float32))
        assert manager._loaded[(DEMO_MODEL, "1")].pipeline.overlap is overlap
        await manager.stop()
    for on, off in zip(got[True], got[False]):
        np.testing.assert_allclose(on, off, atol=1e-6)
    np.testing.assert_array_equal(got[True][-1], got[False][-1])  # same runs: bit for bit
    np.testing.assert_allclose(np.concatenate(got[True][:-1]), ref, atol=1e-5)
